//! Host-side bindings generated from `wit/realm.wit`. Kept in one private
//! module so the rest of the crate sees plain Rust types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "realm-logic",
    // Borrowed argument types: the host passes `&str`/`&[u8]` views of its
    // own event record instead of cloning it for every call.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub(crate) use self::realmhost::realm::types::LogLevel;
