//! `raftstore-bench`: raftstore against etcd on one machine, in one run.
//!
//! Starts a three-member raftstore (this binary re-executed in a hidden `member` mode, one
//! process per member) and then a three-member etcd (the etcd server binary), each on
//! 127.0.0.1 with temporary data directories, drives both with the same etcd v3 client code and
//! prints one side-by-side table with the ratios and issue 3's targets:
//!
//! ```sh
//! cargo run --release -p raftstore --bin raftstore-bench            # full run, a few minutes
//! cargo run --release -p raftstore --bin raftstore-bench -- --quick # smoke run
//! ```
//!
//! Everything it starts is killed by pid and every directory removed when it ends, fails or is
//! interrupted with Ctrl-C.

mod args;
mod client;
mod cluster;
mod error;
mod member;
mod procs;
mod report;
mod stats;
mod workload;

use std::path::Path;
use std::process::ExitCode;

use args::{Mode, Only, RunArgs};
use cluster::{BenchCluster, System};
use error::{BenchError, Result};
use workload::{Figures, Plan};

/// jemalloc, as in the `capstan` binary, so the members measured allocate as `capstan store` does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mode = match args::parse(std::env::args().skip(1)) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("raftstore-bench: {e}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("raftstore-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match mode {
        Mode::Help => {
            print!("{}", args::USAGE);
            Ok(())
        }
        Mode::Member(member) => runtime.block_on(member::run(member)),
        Mode::Run(run) => runtime.block_on(interruptible(run_bench(run))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftstore-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` until it ends or Ctrl-C/SIGTERM arrives; either way its clusters are dropped
/// (processes killed, directories removed) before this returns.
async fn interruptible(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(BenchError::io("SIGTERM handler"))?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
        _ = term.recv() => Err(BenchError::Interrupted),
    }
}

async fn run_bench(run: RunArgs) -> Result<()> {
    let plan = Plan {
        puts_only: run.puts_only,
        ..Plan::new(run.quick)
    };
    let etcd_version = etcd_version(&run.etcd)?;
    let exe = std::env::current_exe().map_err(BenchError::io("finding this executable"))?;
    let ours = match run.only {
        Only::Both | Only::Raftstore => {
            Some(measure(System::Raftstore { exe }, &run, &plan).await?)
        }
        Only::Etcd => None,
    };
    let theirs = match run.only {
        Only::Both | Only::Etcd => Some(
            measure(
                System::Etcd {
                    exe: run.etcd.clone(),
                },
                &run,
                &plan,
            )
            .await?,
        ),
        Only::Raftstore => None,
    };
    print!(
        "{}",
        report::render(ours.as_ref(), theirs.as_ref(), &etcd_version, plan.phase)
    );
    Ok(())
}

async fn measure(system: System, run: &RunArgs, plan: &Plan) -> Result<Figures> {
    let name = system.name();
    eprintln!("{name}: starting 3 members");
    let mut cluster = BenchCluster::start(system, &run.data_root).await?;
    eprintln!("{name}: data and logs in {}", cluster.root().display());
    let say = |step: &str| eprintln!("{name}: {step}");
    let figures = workload::measure(&mut cluster, plan, &say).await?;
    drop(cluster);
    Ok(figures)
}

/// `3.4.23` from `etcd --version`.
fn etcd_version(etcd: &Path) -> Result<String> {
    let out = std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .map_err(BenchError::io(format!(
            "running {} --version (install Debian's etcd-server)",
            etcd.display()
        )))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| {
            BenchError::Unexpected(format!("{} --version printed {text:?}", etcd.display()))
        })
}
