//! The `capstan` binary: server, CLI and the per-container shim, in one executable.
//!
//! The shim must start before any thread exists (libcontainer forks), so `main` hands
//! `capstan shim ...` to the runtime before building the tokio runtime or parsing the CLI.

mod cli;

/// jemalloc (as TiKV uses) instead of glibc's allocator: the store's write path allocates per
/// key and per entry, and glibc's malloc/free took about 13% of a three-member cluster's CPU
/// under puts (`perf` on `raftstore-bench`). mimalloc was as fast but, committing its arenas
/// eagerly on Linux, held 55 MiB per idle member against jemalloc's 13 MiB.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "shim") {
        std::process::exit(runtime::shim_main(args[2..].to_vec()));
    }
    std::process::exit(cli::main());
}
