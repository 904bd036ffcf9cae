//! Host-side bindings generated from `wit/realm.wit`. Kept in one private
//! module so the rest of the crate sees plain Rust types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "realm-logic",
    // Borrowed argument types: the host passes `&str`/`&[u8]` views of its
    // own event record instead of cloning it for every call.
    ownership: Borrowing { duplicate_if_necessary: true },
    // A state operation past a realm's limit stops the call: the host
    // function returns an error, which traps the guest.
    imports: {
        "realmhost:realm/state": trappable,
    },
});

pub(crate) use self::realmhost::realm::types::{Bound, LogLevel, ScanPage};
