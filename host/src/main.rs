//! The `realmhost` binary: a thin shell over [`realmhost::cli`].

fn main() -> std::process::ExitCode {
    realmhost::cli::main()
}
