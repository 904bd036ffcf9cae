//! What a plugin may import, and how those imports are served.
//!
//! Rust's std links a few WASI interfaces into every `wasm32-wasip2`
//! component (streams, stdio, environment, exit) even when the plugin never
//! uses them, so they must be satisfiable. They are served with **no
//! capabilities**: the environment and argument lists are empty, stdout and
//! stderr go to the host's log (see `stdio`), and every other stream call
//! traps. Anything else — clocks, randomness, files,
//! sockets, HTTP — is refused when the component is loaded, naming the
//! import, because a plugin that can observe the world cannot be replayed.

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, bail};

use super::RuntimeError;
use super::bindings::Contract;
use super::host_ctx::HostCtx;

/// Interfaces a plugin may import (version suffix ignored).
const ALLOWED: &[&str] = &[
    "realmhost:realm/state",
    "realmhost:realm/host",
    "realmhost:realm/types",
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:io/poll",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

fn unversioned(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// Refuse a component built against a version of the `realmhost:realm`
/// package this host does not serve ([`super::CONTRACT_VERSIONS`]), naming
/// the version it was built for. The version is read from the package's
/// interfaces it imports, and returned; a component that imports none of
/// them is recognised by its exports (0.1 exported `restore`), and its
/// version (`None`) is then told by which world's exports it matches.
pub(crate) fn check_contract(
    engine: &Engine,
    component: &Component,
) -> Result<Option<Contract>, RuntimeError> {
    let ty = component.component_type();
    let wrong = |found: String| RuntimeError::ContractVersion {
        found,
        required: super::CONTRACT_VERSION,
    };
    let mut found = None;
    for (name, _) in ty.imports(engine) {
        let Some(rest) = name.strip_prefix("realmhost:realm/") else {
            continue;
        };
        let version = rest.split_once('@').map(|(_, v)| v);
        let contract = match version {
            Some("0.3.0") => Contract::V3,
            Some("0.2.0") => Contract::V2,
            other => {
                return Err(wrong(format!(
                    "realmhost:realm@{}",
                    other.unwrap_or("(unversioned)")
                )));
            }
        };
        if found.is_some_and(|f| f != contract) {
            return Err(wrong(format!(
                "a mix of realmhost:realm versions ({name} among them)"
            )));
        }
        found = Some(contract);
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    if exports.contains(&"restore") && !exports.contains(&"migrate") {
        return Err(wrong("realmhost:realm@0.1.0".to_owned()));
    }
    Ok(found)
}

/// Refuse a component that imports anything outside [`ALLOWED`].
pub(crate) fn check_imports(engine: &Engine, component: &Component) -> Result<(), RuntimeError> {
    let ty = component.component_type();
    let forbidden: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !ALLOWED.contains(&unversioned(name)))
        .map(str::to_owned)
        .collect();
    match forbidden.first() {
        None => Ok(()),
        Some(first) => Err(RuntimeError::ForbiddenImport {
            import: first.clone(),
            all: forbidden,
        }),
    }
}

/// Every WASI version the component imports (`0.2.6`, …).
///
/// The WASI functions are defined per component under exactly these
/// versions: `Linker::define_unknown_imports_as_traps` creates an entry under
/// the imported name, which would shadow a definition made under another
/// (semver-compatible) version.
pub(crate) fn wasi_versions(engine: &Engine, component: &Component) -> Vec<String> {
    let mut out: Vec<String> = component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            name.strip_prefix("wasi:")?
                .split_once('@')
                .map(|(_, v)| v.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Define, under WASI `version`, the capability-free WASI functions that have
/// an obvious empty answer, and stdout/stderr (see `stdio`). The rest of the
/// allowed interfaces are stubbed per component with traps (see
/// `Linker::define_unknown_imports_as_traps`).
pub(crate) fn add_wasi(linker: &mut Linker<HostCtx>, version: &str) -> wasmtime::Result<()> {
    super::stdio::add_to_linker(linker, version)?;
    let mut env = linker.instance(&format!("wasi:cli/environment@{version}"))?;
    env.func_wrap("get-environment", |_, (): ()| {
        Ok((Vec::<(String, String)>::new(),))
    })?;
    env.func_wrap("get-arguments", |_, (): ()| Ok((Vec::<String>::new(),)))?;
    env.func_wrap("initial-cwd", |_, (): ()| Ok((None::<String>,)))?;
    let mut exit = linker.instance(&format!("wasi:cli/exit@{version}"))?;
    exit.func_wrap(
        "exit",
        |mut store, (_status,): (Result<(), ()>,)| -> wasmtime::Result<()> {
            store.data_mut().exited = true;
            bail!("plugin called exit")
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ignored() {
        assert_eq!(unversioned("wasi:cli/exit@0.2.3"), "wasi:cli/exit");
        assert_eq!(
            unversioned("wasi:clocks/wall-clock"),
            "wasi:clocks/wall-clock"
        );
        assert!(!ALLOWED.contains(&unversioned("wasi:clocks/wall-clock@0.2.0")));
        assert!(!ALLOWED.contains(&unversioned("wasi:random/random@0.2.0")));
        assert!(!ALLOWED.contains(&unversioned("wasi:filesystem/types@0.2.0")));
        assert!(!ALLOWED.contains(&unversioned("wasi:sockets/tcp@0.2.0")));
    }
}
