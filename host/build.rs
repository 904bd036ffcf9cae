//! Embeds the guest SDK's sources and the WIT contract for
//! `realmhost new plugin` (see `src/cli/new.rs`): every file under
//! `guest-sdk/src` and `wit`, found by walking the directories, so a file
//! added to the SDK is vendored without anyone updating a list.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let mut table = String::from("&[\n");
    for (dir, vendored) in [("guest-sdk/src", "realmhost-guest/src"), ("wit", "wit")] {
        let base = root.join(dir);
        // Cargo re-runs the script when anything under a watched directory
        // changes, files added or removed included.
        println!("cargo:rerun-if-changed={}", base.display());
        let mut files = Vec::new();
        walk(&base, &mut files);
        for f in files {
            let rel = f.strip_prefix(&base).expect("under base");
            let rel = rel.to_str().expect("UTF-8 path").replace('\\', "/");
            writeln!(
                table,
                "    ({:?}, include_str!({:?})),",
                format!("{vendored}/{rel}"),
                f.display().to_string()
            )
            .expect("write to string");
        }
    }
    table.push(']');
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("sdk_files.rs");
    std::fs::write(&out, table).expect("write sdk_files.rs");
}
