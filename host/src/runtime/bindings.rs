//! Host-side bindings generated from `wit/realm.wit`. Kept in one private
//! module so the rest of the crate sees plain Rust types.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "realm-logic",
});

pub(crate) use realmhost::realm::types::LogLevel;
