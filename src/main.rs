//! The `capstan` binary: server, CLI and the per-container shim, in one executable.
//!
//! The shim must start before any thread exists (libcontainer forks), so `main` hands
//! `capstan shim ...` to the runtime before building the tokio runtime or parsing the CLI.

mod cli;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "shim") {
        std::process::exit(runtime::shim_main(args[2..].to_vec()));
    }
    std::process::exit(cli::main());
}
