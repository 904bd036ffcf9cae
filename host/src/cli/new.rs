//! `realmhost new plugin NAME`: write a standalone plugin crate.
//!
//! The crate written into `--dir` (default `./<crate>`) builds to a component
//! with one command, `cargo build --target wasm32-wasip2 --release`, and the
//! component loads into a node as it is:
//!
//! | file | what |
//! |---|---|
//! | `Cargo.toml` | explicit fields, no workspace inheritance; a `[workspace]` table of its own, so it builds the same wherever the directory is put (even inside another workspace's directory); a release profile for small components |
//! | `rust-toolchain.toml` | this repository's: the same pinned toolchain plus the `wasm32-wasip2` target |
//! | `src/lib.rs` | a small keyed-state realm (`Realm` with `Item` and `Map`, JSON events, a `query`, `export_realm!`) and its native unit tests |
//! | `README.md` | test, build, load, append, query, shadow, swap, rollback; the rule for evolving events |
//! | `Cargo.lock` | seeded with this repository's lock file: the dependency versions realmhost is tested with |
//! | `vendor/realmhost-guest/` | the guest SDK (see below) |
//! | `vendor/wit/realm.wit` | the WIT contract the SDK is generated from |
//! | `.gitignore` | `/target` |
//!
//! NAME is the realm type (1..=64 bytes of `[a-z0-9_-]`, the rule the host
//! applies). The crate is called `NAME-plugin` (`plugin-NAME` when NAME does
//! not start with a letter or `_`, which cargo requires of a package name),
//! and its component is `target/wasm32-wasip2/release/<crate with _ for ->.wasm`.
//! An existing non-empty directory is refused unless `--force`, which
//! overwrites the files listed above and leaves any others alone.
//!
//! ## How the SDK gets there: a vendored copy embedded in the binary
//!
//! `realmhost-guest` is not published on a registry, and a plugin author's
//! machine may have no checkout of this repository, so neither a registry nor
//! a `path` dependency on the repository works. A `git` dependency would tie
//! every build to the network and to a repository address. Instead the
//! `realmhost` binary carries the SDK: every file of `guest-sdk/src/` and of
//! `wit/` is embedded with `include_str!` (the list is [`SDK_FILES`]), and
//! `new plugin` writes them to `vendor/realmhost-guest/src/` and
//! `vendor/wit/`. The SDK's `wit_bindgen::generate!({ path: "../wit" })`
//! resolves from `vendor/realmhost-guest` to `vendor/wit`, exactly as it
//! resolves from `guest-sdk` to `wit` here, so the SDK's sources are copied
//! unchanged and the SDK crate of this repository builds as before.
//!
//! The vendored `Cargo.toml` is not copied: it is rendered from
//! `guest-sdk/Cargo.toml` with every `workspace = true` entry replaced by the
//! workspace's value (package fields, dependency versions and features,
//! lints), both manifests being embedded too. The generated crate's own
//! `serde` and `serde_json` dependencies come from the workspace table the
//! same way. So the copy is the SDK of the binary that wrote it, with the
//! dependency versions the workspace is tested with; nothing can drift by
//! hand. The one thing kept by hand is the file list, and a unit test
//! compares it with the contents of `guest-sdk/src/` and `wit/`.
//!
//! Upgrading a plugin to a newer SDK is replacing its `vendor/` directory
//! with the one a newer `realmhost new plugin` writes (the generated README
//! says so).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use clap::Subcommand;

/// Longest realm type, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// The one command that builds the component.
pub const BUILD_COMMAND: &str = "cargo build --target wasm32-wasip2 --release";

/// Embed a file of the repository as `(path in vendor/, contents)`.
macro_rules! embed {
    ($vendored:literal, $repo:literal) => {
        ($vendored, include_str!(concat!("../../../", $repo)))
    };
}

/// Every file of `guest-sdk/src/` and `wit/`, as `(path under vendor/, contents)`.
/// Kept in sync with the directories by the unit test `sdk_files_match_the_repository`.
pub const SDK_FILES: &[(&str, &str)] = &[
    embed!(
        "realmhost-guest/src/__private.rs",
        "guest-sdk/src/__private.rs"
    ),
    embed!("realmhost-guest/src/batch.rs", "guest-sdk/src/batch.rs"),
    embed!("realmhost-guest/src/entry.rs", "guest-sdk/src/entry.rs"),
    embed!("realmhost-guest/src/error.rs", "guest-sdk/src/error.rs"),
    embed!("realmhost-guest/src/lib.rs", "guest-sdk/src/lib.rs"),
    embed!(
        "realmhost-guest/src/state/memory.rs",
        "guest-sdk/src/state/memory.rs"
    ),
    embed!(
        "realmhost-guest/src/state/mod.rs",
        "guest-sdk/src/state/mod.rs"
    ),
    embed!(
        "realmhost-guest/src/state/page.rs",
        "guest-sdk/src/state/page.rs"
    ),
    embed!(
        "realmhost-guest/src/storage/key.rs",
        "guest-sdk/src/storage/key.rs"
    ),
    embed!(
        "realmhost-guest/src/storage/mod.rs",
        "guest-sdk/src/storage/mod.rs"
    ),
    embed!("realmhost-guest/src/whole.rs", "guest-sdk/src/whole.rs"),
    embed!("wit/realm.wit", "wit/realm.wit"),
];

const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");
const SDK_MANIFEST: &str = include_str!("../../../guest-sdk/Cargo.toml");
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");
const TOOLCHAIN: &str = include_str!("../../../rust-toolchain.toml");

const LIB_TEMPLATE: &str = include_str!("new/lib.rs.tmpl");
const MANIFEST_TEMPLATE: &str = include_str!("new/Cargo.toml.tmpl");
const README_TEMPLATE: &str = include_str!("new/README.md.tmpl");
const GITIGNORE: &str = include_str!("new/gitignore.tmpl");

/// Why a plugin crate could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// NAME is not a realm type.
    #[error(
        "invalid plugin name {name:?}: {reason} (a realm type is 1..={MAX_NAME_LEN} bytes of [a-z0-9_-])"
    )]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target directory has files in it and `--force` was not given.
    #[error("{} exists and is not empty; pass --force to write into it anyway", .0.display())]
    NotEmpty(PathBuf),
    /// The target path exists and is not a directory.
    #[error("{} exists and is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// Reading or writing the file system failed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The manifests embedded in the binary do not describe a standalone SDK
    /// (a bug of this binary, caught by its unit tests).
    #[error("cannot render the SDK's manifest: {0}")]
    Manifest(String),
}

/// Check that `name` is a realm type: 1..=64 bytes of `[a-z0-9_-]`.
pub fn validate_name(name: &str) -> Result<(), NewError> {
    let invalid = |reason: String| NewError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("it is {} bytes long", name.len())));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        return Err(invalid(format!("{c:?} is not allowed")));
    }
    Ok(())
}

/// The package name of the plugin crate for realm type `name`: `NAME-plugin`,
/// or `plugin-NAME` when NAME does not start with a letter or `_` (cargo
/// requires that of a package name).
pub fn crate_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        format!("{name}-plugin")
    } else {
        format!("plugin-{name}")
    }
}

/// A plugin crate that was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaffold {
    /// The crate's directory.
    pub dir: PathBuf,
    /// The realm type.
    pub realm_type: String,
    /// The package name.
    pub crate_name: String,
    /// Every file written, relative to `dir`, in the order written.
    pub files: Vec<PathBuf>,
}

impl Scaffold {
    /// The component [`BUILD_COMMAND`] produces, relative to [`Scaffold::dir`]
    /// (with the default target directory).
    pub fn wasm_path(&self) -> PathBuf {
        wasm_path(&self.crate_name)
    }

    /// What was written and the commands to run next, for the terminal.
    pub fn report(&self) -> String {
        let mut out = format!(
            "Wrote the `{}` plugin crate ({}) into {}:\n",
            self.realm_type,
            self.crate_name,
            self.dir.display()
        );
        let sdk = self
            .files
            .iter()
            .filter(|f| f.starts_with("vendor"))
            .count();
        for f in self.files.iter().filter(|f| !f.starts_with("vendor")) {
            out.push_str(&format!("  {}\n", f.display()));
        }
        out.push_str(&format!(
            "  vendor/ (the guest SDK of realmhost {} and its WIT contract, {sdk} files)\n",
            env!("CARGO_PKG_VERSION")
        ));
        let wasm = self.wasm_path();
        let t = &self.realm_type;
        out.push_str(&format!(
            "\nNext:\n\
             \x20 cd {dir}\n\
             \x20 cargo test                                    # the unit tests, natively\n\
             \x20 {BUILD_COMMAND}  # the component\n\
             \x20 realmhost plugin load {wasm} --activate\n\
             \x20 realmhost realm append realm-1 --type {t} --event '{{\"add\":{{\"key\":\"apples\",\"amount\":3}}}}'\n\
             \x20 realmhost realm query realm-1 '{{\"get\":\"apples\"}}'\n\
             \nREADME.md goes on from there: new versions, shadow, swap, rollback.\n",
            dir = self.dir.display(),
            wasm = wasm.display(),
        ));
        out
    }
}

fn wasm_path(crate_name: &str) -> PathBuf {
    Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// The files of the plugin crate for realm type `name`, as `(relative path,
/// contents)`, without touching the file system.
pub fn plugin_files(name: &str) -> Result<Vec<(PathBuf, Cow<'static, str>)>, NewError> {
    validate_name(name)?;
    let manifests = Manifests::parse()?;
    let krate = crate_name(name);
    let lib_name = krate.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("__REALM_TYPE__", name)
            .replace("__CRATE_NAME__", &krate)
            .replace("__LIB_NAME__", &lib_name)
            .replace("__HOST_VERSION__", env!("CARGO_PKG_VERSION"))
            .replace("__RUST_VERSION__", &manifests.rust_version)
            .replace("__REPOSITORY__", &manifests.repository)
    };
    let mut deps = String::new();
    for dep in ["serde", "serde_json"] {
        let spec = manifests.workspace_dep(dep)?;
        deps.push_str(&format!("{dep} = {}\n", render(&toml::Value::Table(spec))));
    }
    let mut files: Vec<(PathBuf, Cow<'static, str>)> = vec![
        (
            "Cargo.toml".into(),
            fill(MANIFEST_TEMPLATE)
                .replace("__DEPENDENCIES__\n", &deps)
                .into(),
        ),
        ("rust-toolchain.toml".into(), TOOLCHAIN.into()),
        (".gitignore".into(), GITIGNORE.into()),
        ("README.md".into(), fill(README_TEMPLATE).into()),
        ("src/lib.rs".into(), fill(LIB_TEMPLATE).into()),
        ("Cargo.lock".into(), WORKSPACE_LOCK.into()),
        (
            "vendor/realmhost-guest/Cargo.toml".into(),
            manifests.sdk_manifest()?.into(),
        ),
    ];
    for (path, contents) in SDK_FILES {
        files.push((Path::new("vendor").join(path), Cow::Borrowed(*contents)));
    }
    Ok(files)
}

/// Write the plugin crate for realm type `name` into `dir`.
///
/// `dir` may be missing or empty; an existing non-empty directory is refused
/// unless `force`, which overwrites the crate's files and leaves others alone.
pub fn new_plugin(name: &str, dir: &Path, force: bool) -> Result<Scaffold, NewError> {
    let files = plugin_files(name)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NewError::Io { path, source }
    };
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(NewError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
            if entries.next().is_some() && !force {
                return Err(NewError::NotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dir)(e)),
    }
    let mut written = Vec::with_capacity(files.len());
    for (rel, contents) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, contents.as_bytes()).map_err(io(&path))?;
        written.push(rel);
    }
    Ok(Scaffold {
        dir: dir.to_path_buf(),
        realm_type: name.to_owned(),
        crate_name: crate_name(name),
        files: written,
    })
}

/// `realmhost new …`
#[derive(Debug, Subcommand)]
pub enum NewCmd {
    /// Write a standalone plugin crate for a new realm type: it builds to a component with
    /// `cargo build --target wasm32-wasip2 --release` and loads into a node as it is.
    Plugin {
        /// The realm type (1..=64 bytes of [a-z0-9_-]); the crate is called NAME-plugin.
        name: String,
        /// Directory to write the crate into (default: ./<crate name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write into an existing non-empty directory, overwriting the crate's files.
        #[arg(long)]
        force: bool,
    },
}

/// Run a `new` command.
pub fn run(cmd: NewCmd) -> anyhow::Result<()> {
    match cmd {
        NewCmd::Plugin { name, dir, force } => {
            validate_name(&name)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(crate_name(&name)));
            let scaffold = new_plugin(&name, &dir, force)?;
            print!("{}", scaffold.report());
            Ok(())
        }
    }
}

/// The workspace's and the SDK's manifests, parsed.
struct Manifests {
    workspace: toml::Table,
    sdk: toml::Table,
    rust_version: String,
    repository: String,
}

impl Manifests {
    fn parse() -> Result<Self, NewError> {
        let parse = |what: &str, text: &str| {
            text.parse::<toml::Table>()
                .map_err(|e| NewError::Manifest(format!("{what}: {e}")))
        };
        let workspace = parse("Cargo.toml", WORKSPACE_MANIFEST)?;
        let sdk = parse("guest-sdk/Cargo.toml", SDK_MANIFEST)?;
        let mut m = Self {
            workspace,
            sdk,
            rust_version: String::new(),
            repository: String::new(),
        };
        let string = |v: toml::Value| v.as_str().map(str::to_owned);
        m.rust_version = m
            .workspace_package("rust-version")
            .and_then(string)
            .ok_or_else(|| NewError::Manifest("no workspace.package.rust-version".into()))?;
        m.repository = m
            .workspace_package("repository")
            .and_then(string)
            .unwrap_or_default();
        Ok(m)
    }

    fn workspace_table(&self, key: &str) -> Option<&toml::Table> {
        self.workspace.get("workspace")?.get(key)?.as_table()
    }

    fn workspace_package(&self, key: &str) -> Option<toml::Value> {
        self.workspace_table("package")?.get(key).cloned()
    }

    /// `[workspace.dependencies]` entry `name` as a table, from a registry.
    fn workspace_dep(&self, name: &str) -> Result<toml::Table, NewError> {
        let spec = self
            .workspace_table("dependencies")
            .and_then(|d| d.get(name))
            .ok_or_else(|| NewError::Manifest(format!("no workspace dependency {name:?}")))?;
        let table = match spec {
            toml::Value::String(version) => {
                let mut t = toml::Table::new();
                t.insert("version".into(), version.clone().into());
                t
            }
            toml::Value::Table(t) => t.clone(),
            _ => return Err(NewError::Manifest(format!("dependency {name:?}: bad spec"))),
        };
        check_registry_dep(name, &table)?;
        Ok(table)
    }

    /// The SDK's manifest with every `workspace = true` resolved.
    fn sdk_manifest(&self) -> Result<String, NewError> {
        let bad = |m: String| NewError::Manifest(format!("guest-sdk/Cargo.toml: {m}"));
        let package = self
            .sdk
            .get("package")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| bad("no [package]".into()))?;
        let mut out = format!(
            "# The realmhost guest SDK, vendored by `realmhost new plugin` (realmhost {}).\n\
             # Do not edit: replace vendor/ with a newer copy to upgrade (see README.md).\n\n\
             [package]\n",
            env!("CARGO_PKG_VERSION")
        );
        let mut fields: Vec<(&String, &toml::Value)> = package.iter().collect();
        fields.sort_by_key(|(k, _)| *k != "name");
        for (key, value) in fields {
            let value = if is_workspace_ref(value) {
                self.workspace_package(key)
                    .ok_or_else(|| bad(format!("package.{key}: not in [workspace.package]")))?
            } else {
                value.clone()
            };
            out.push_str(&format!("{} = {}\n", render_key(key), render(&value)));
        }
        if !package.contains_key("publish") {
            out.push_str("publish = false\n");
        }
        out.push_str("\n[dependencies]\n");
        let deps = self
            .sdk
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .ok_or_else(|| bad("no [dependencies]".into()))?;
        for (name, spec) in deps {
            let resolved = match spec {
                toml::Value::Table(t) if is_workspace_ref(spec) => {
                    let mut base = self.workspace_dep(name)?;
                    for (k, v) in t {
                        match (k.as_str(), v) {
                            ("workspace", _) => {}
                            ("features", toml::Value::Array(extra)) => {
                                let features = base
                                    .entry("features")
                                    .or_insert_with(|| toml::Value::Array(Vec::new()));
                                if let toml::Value::Array(f) = features {
                                    for x in extra {
                                        if !f.contains(x) {
                                            f.push(x.clone());
                                        }
                                    }
                                }
                            }
                            _ => {
                                base.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    base
                }
                toml::Value::String(version) => {
                    let mut t = toml::Table::new();
                    t.insert("version".into(), version.clone().into());
                    t
                }
                toml::Value::Table(t) => {
                    check_registry_dep(name, t)?;
                    t.clone()
                }
                _ => return Err(bad(format!("dependency {name:?}: bad spec"))),
            };
            out.push_str(&format!(
                "{} = {}\n",
                render_key(name),
                render(&toml::Value::Table(resolved))
            ));
        }
        if let Some(lints) = self.sdk.get("lints") {
            let lints = if is_workspace_ref(lints) {
                self.workspace_table("lints")
                    .ok_or_else(|| bad("lints: no [workspace.lints]".into()))?
            } else {
                lints
                    .as_table()
                    .ok_or_else(|| bad("lints: not a table".into()))?
            };
            for (tool, table) in lints {
                out.push_str(&format!("\n[lints.{}]\n", render_key(tool)));
                let table = table
                    .as_table()
                    .ok_or_else(|| bad(format!("lints.{tool}: not a table")))?;
                for (lint, level) in table {
                    out.push_str(&format!("{} = {}\n", render_key(lint), render(level)));
                }
            }
        }
        Ok(out)
    }
}

fn is_workspace_ref(v: &toml::Value) -> bool {
    v.get("workspace").and_then(toml::Value::as_bool) == Some(true)
}

/// The vendored crates must build from a registry alone.
fn check_registry_dep(name: &str, spec: &toml::Table) -> Result<(), NewError> {
    match ["path", "git"].into_iter().find(|k| spec.contains_key(*k)) {
        Some(k) => Err(NewError::Manifest(format!(
            "dependency {name:?} is a {k} dependency; a vendored crate can only use registry ones"
        ))),
        None => Ok(()),
    }
}

/// A TOML key, bare when it can be.
fn render_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        key.to_owned()
    } else {
        render(&toml::Value::String(key.to_owned()))
    }
}

/// A TOML value on one line (tables inline, `version` first).
fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(t) => {
            let mut pairs: Vec<(&String, &toml::Value)> = t.iter().collect();
            pairs.sort_by_key(|(k, _)| *k != "version");
            let pairs: Vec<String> = pairs
                .into_iter()
                .map(|(k, v)| format!("{} = {}", render_key(k), render(v)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn files_under(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// The embedded SDK is every file of `guest-sdk/src/` and `wit/`, no more,
    /// no less (contents cannot drift: they are `include_str!`ed).
    #[test]
    fn sdk_files_match_the_repository() {
        let root = repo();
        let mut on_disk = BTreeSet::new();
        files_under(&root, &root.join("guest-sdk/src"), &mut on_disk);
        files_under(&root, &root.join("wit"), &mut on_disk);
        let embedded: BTreeSet<String> = SDK_FILES
            .iter()
            .map(|(vendored, _)| {
                vendored
                    .strip_prefix("realmhost-guest/")
                    .map_or_else(|| vendored.to_string(), |p| format!("guest-sdk/{p}"))
            })
            .collect();
        assert_eq!(
            embedded, on_disk,
            "SDK_FILES in host/src/cli/new.rs must list every file of guest-sdk/src and wit"
        );
        for (vendored, contents) in SDK_FILES {
            let repo_path = vendored
                .strip_prefix("realmhost-guest/")
                .map_or_else(|| vendored.to_string(), |p| format!("guest-sdk/{p}"));
            let on_disk = std::fs::read_to_string(root.join(&repo_path)).unwrap();
            assert_eq!(*contents, on_disk, "{repo_path}");
        }
    }

    /// The SDK finds the contract at `../wit` from its crate directory, which
    /// is where the vendored copy puts it.
    #[test]
    fn vendored_wit_path_matches_the_sdk() {
        let lib = SDK_FILES
            .iter()
            .find(|(p, _)| *p == "realmhost-guest/src/lib.rs")
            .unwrap()
            .1;
        assert!(lib.contains(r#"path: "../wit""#));
        assert!(SDK_FILES.iter().any(|(p, _)| *p == "wit/realm.wit"));
    }

    #[test]
    fn vendored_manifest_is_standalone_and_uses_the_workspace_versions() {
        let m = Manifests::parse().unwrap();
        let text = m.sdk_manifest().unwrap();
        assert!(!text.contains("workspace"), "{text}");
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["package"]["name"].as_str(), Some("realmhost-guest"));
        assert_eq!(
            parsed["package"]["version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        let sdk_deps = m.sdk["dependencies"].as_table().unwrap();
        let vendored = parsed["dependencies"].as_table().unwrap();
        assert_eq!(
            sdk_deps.keys().collect::<Vec<_>>(),
            vendored.keys().collect::<Vec<_>>()
        );
        for name in sdk_deps.keys() {
            let ws = m.workspace_dep(name).unwrap();
            assert_eq!(vendored[name]["version"], ws["version"], "{name}");
        }
        // serde_json gets the SDK's extra feature on top of the workspace's.
        let features = vendored["serde_json"]["features"].as_array().unwrap();
        assert!(features.contains(&"alloc".into()));
        assert!(
            parsed["lints"]["rust"]
                .get("unsafe_op_in_unsafe_fn")
                .is_some()
        );
    }

    #[test]
    fn generated_manifest_is_standalone() {
        let files = plugin_files("scores").unwrap();
        let manifest = &files
            .iter()
            .find(|(p, _)| p == Path::new("Cargo.toml"))
            .unwrap()
            .1;
        let parsed: toml::Table = manifest.parse().unwrap();
        assert_eq!(parsed["package"]["name"].as_str(), Some("scores-plugin"));
        assert_eq!(parsed["package"]["edition"].as_str(), Some("2024"));
        assert!(parsed.contains_key("workspace"));
        assert!(!manifest.contains("workspace = true"));
        assert!(!manifest.contains("__"), "{manifest}");
        let lib = &files
            .iter()
            .find(|(p, _)| p == Path::new("src/lib.rs"))
            .unwrap()
            .1;
        assert!(lib.contains(r#"const REALM_TYPE: &'static str = "scores";"#));
        for (path, contents) in &files {
            if !path.starts_with("vendor") && path != Path::new("Cargo.lock") {
                assert!(!contents.contains("__REALM_TYPE__"), "{}", path.display());
                assert!(!contents.contains("__CRATE_NAME__"), "{}", path.display());
                assert!(!contents.contains("__LIB_NAME__"), "{}", path.display());
            }
        }
    }

    #[test]
    fn names_are_realm_types() {
        for ok in ["a", "scores", "my-realm_2", "9lives", "-", &"x".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "Scores", "a b", "é", "a/b", "a.b", &"x".repeat(65)] {
            assert!(
                matches!(validate_name(bad), Err(NewError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(crate_name("scores"), "scores-plugin");
        assert_eq!(crate_name("_x"), "_x-plugin");
        assert_eq!(crate_name("9lives"), "plugin-9lives");
        assert_eq!(crate_name("-x"), "plugin--x");
        assert_eq!(
            wasm_path("plugin-9lives"),
            Path::new("target/wasm32-wasip2/release/plugin_9lives.wasm")
        );
    }

    #[test]
    fn refuses_a_non_empty_directory_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        assert!(matches!(
            new_plugin("scores", dir.path(), false),
            Err(NewError::NotEmpty(_))
        ));
        let s = new_plugin("scores", dir.path(), true).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
        assert!(dir.path().join("vendor/wit/realm.wit").is_file());
        assert!(
            dir.path()
                .join("vendor/realmhost-guest/src/state/page.rs")
                .is_file()
        );
        assert!(
            s.report()
                .contains("target/wasm32-wasip2/release/scores_plugin.wasm --activate")
        );
        // An empty directory and a missing one are fine.
        let empty = tempfile::tempdir().unwrap();
        new_plugin("scores", empty.path(), false).unwrap();
        new_plugin("scores", &empty.path().join("a/b"), false).unwrap();
        // A file is not a directory.
        let file = dir.path().join("keep.txt");
        assert!(matches!(
            new_plugin("scores", &file, true),
            Err(NewError::NotADirectory(_))
        ));
        assert!(matches!(
            new_plugin("Bad", empty.path(), true),
            Err(NewError::InvalidName { .. })
        ));
    }
}
