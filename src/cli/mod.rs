//! Command-line interface: argument parsing and dispatch. Every failure ends in a readable
//! `error: ...` line on stderr and exit code 1 (`exec` exits with its command's code).

mod apply;
mod debug;
mod exec;
mod format;
mod get;
mod image;
mod logs;
mod server;
mod store;
mod store_snapshot;
mod workloads;

use clap::{Parser, Subcommand};

/// Default API endpoint of a local server.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:6443";

#[derive(Parser, Debug)]
#[command(
    name = "capstan",
    version,
    about = "Capstan: a container orchestrator for your own machines"
)]
struct Cli {
    /// API server endpoint.
    #[arg(long, global = true, env = "CAPSTAN_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a server: raft store, API server, scheduler and a node agent (single node).
    Server(server::ServerArgs),
    /// Run a node agent that joins the server given by --server.
    Agent(server::AgentArgs),
    /// Run one member of a Raft store cluster in the foreground (`store snapshot`: backups).
    Store(store_snapshot::StoreCommand),
    /// Set the replicas of a Deployment, ReplicaSet or StatefulSet.
    Scale(workloads::ScaleArgs),
    /// Manage rollouts.
    #[command(subcommand)]
    Rollout(workloads::RolloutCommand),
    /// Create or update objects from manifest files (YAML or JSON, multi-document, directories).
    Apply(apply::ApplyArgs),
    /// Show objects.
    Get(get::GetArgs),
    /// Delete an object (pods: waits until its containers stopped).
    Delete(get::DeleteArgs),
    /// Print a container's log.
    Logs(logs::LogsArgs),
    /// Run a command in a running container: `capstan exec POD [-c NAME] -- CMD ARGS...`.
    Exec(exec::ExecArgs),
    /// Manage the node's local images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Debug helpers for chaos testing (needs `server --enable-debug-service`).
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Server(a) => server::run(a).await,
            Command::Agent(a) => server::run_agent(&cli.server, a).await,
            Command::Store(a) => store_snapshot::run(a).await,
            Command::Scale(a) => workloads::scale(&cli.server, a).await,
            Command::Rollout(c) => workloads::rollout(&cli.server, c).await,
            Command::Apply(a) => apply::run(&cli.server, a).await,
            Command::Get(a) => get::run(&cli.server, a).await,
            Command::Delete(a) => get::delete(&cli.server, a).await,
            Command::Logs(a) => logs::run(&cli.server, a).await,
            Command::Exec(a) => exec::run(&cli.server, a).await,
            Command::Image(c) => image::run(c).await,
            Command::Debug(c) => debug::run(&cli.server, c).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<exec::Exited>().is_some() => {
            e.downcast_ref::<exec::Exited>().map_or(1, |x| x.0)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Connects the API client, with a message that says what to check.
pub async fn connect(server: &str) -> anyhow::Result<api::client::Client> {
    api::client::Client::connect(server.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Capstan server at {server}: {e} (is `capstan server` running? set --server or CAPSTAN_SERVER)"))
}
