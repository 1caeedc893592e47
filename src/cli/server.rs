//! `capstan server`: one node with embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Flags of `capstan server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Data directory (store, images, containers).
    #[arg(long, default_value = "./capstan-data")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Node name (default: this machine's hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Address reported for this node.
    #[arg(long, default_value = "127.0.0.1")]
    host_ip: String,
    /// Where pod network namespaces are mounted.
    #[arg(long, default_value = "/run/capstan/netns")]
    netns_dir: PathBuf,
    /// Serve the debug service that can kill actors by name (for chaos tests only).
    #[arg(long)]
    enable_debug_service: bool,
    /// Seconds without a heartbeat before a node is marked `Ready=Unknown`.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: i64,
    /// Seconds a node may stay not-ready before its pods are evicted.
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: i64,
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

fn default_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.').to_string();
    if name.is_empty() {
        "node-1".into()
    } else {
        name
    }
}

/// Runs the server in the foreground until SIGINT or SIGTERM.
pub async fn run(a: ServerArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&a.log))
        .context("--log")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    std::fs::create_dir_all(&a.data_dir)
        .with_context(|| format!("--data-dir {}: cannot create it", a.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&a.data_dir)
        .with_context(|| format!("--data-dir {}", a.data_dir.display()))?;
    let cfg = actors::server::ServerConfig {
        data_dir,
        listen: a.listen,
        node_name: a.node_name.unwrap_or_else(default_node_name),
        host_ip: a.host_ip,
        shim_exe: std::env::current_exe()
            .context("cannot find the capstan executable for the shim")?,
        netns_dir: a.netns_dir,
        enable_debug_service: a.enable_debug_service,
        node_lifecycle: actors::controllers::decide_node::LifecycleConfig {
            monitor_grace: chrono::Duration::seconds(a.node_monitor_grace_period),
            eviction_timeout: chrono::Duration::seconds(a.pod_eviction_timeout),
        },
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    let node = cfg.node_name.clone();
    actors::server::run(
        cfg,
        move |addr| eprintln!("capstan server ready: node {node}, API on http://{addr}"),
        shutdown,
    )
    .await?;
    Ok(())
}
