//! `capstan server` (one node with embedded defaults, or a control-plane-only server) and
//! `capstan agent` (a node that joins a server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// Flags every process that runs a node agent shares.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Data directory (store, images, containers).
    #[arg(long, default_value = "./capstan-data")]
    data_dir: PathBuf,
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
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
    /// Pod network: `bridge` (a bridge with this node's pod subnet, a veth and an IP per pod,
    /// routes to the other nodes) or `none` (pods get loopback only).
    #[arg(long, value_enum, default_value = "bridge")]
    pod_network: PodNetworkMode,
    /// Name of the node's pod bridge.
    #[arg(long, default_value = "capstan0")]
    bridge: String,
    /// MTU of pod interfaces.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// The cluster's pod CIDR; each node gets a /24 of it, traffic leaving it is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: net::Ipv4Net,
    /// The nftables table the Service proxy owns.
    #[arg(long, default_value = "capstan")]
    proxy_table: String,
}

/// How pods are networked on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PodNetworkMode {
    /// Bridge, veth and an IP per pod; host-gw routes between nodes.
    Bridge,
    /// Loopback only.
    None,
}

impl NodeArgs {
    /// The node settings these flags describe (creates the data directory).
    fn settings(self) -> anyhow::Result<actors::server::NodeSettings> {
        let data_dir = data_dir(&self.data_dir)?;
        let pod_network = (self.pod_network == PodNetworkMode::Bridge).then(|| {
            actors::agent::network::PodNetworkConfig {
                bridge: self.bridge.clone(),
                mtu: self.mtu,
                state_dir: data_dir.join("network"),
                cluster_cidr: self.cluster_cidr,
                proxy_table: self.proxy_table.clone(),
            }
        });
        Ok(actors::server::NodeSettings {
            data_dir,
            node_name: self.node_name.unwrap_or_else(default_node_name),
            host_ip: self.host_ip,
            shim_exe: shim_exe()?,
            netns_dir: self.netns_dir,
            enable_debug_service: self.enable_debug_service,
            pod_network,
        })
    }
}

/// Flags of `capstan server`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// gRPC listen address (API, logs, debug).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Run no node agent here: a control-plane-only server.
    #[arg(long)]
    disable_agent: bool,
    /// Seconds without a heartbeat before a node is marked `Ready=Unknown`.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: i64,
    /// Seconds a node may stay not-ready before its pods are evicted.
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: i64,
    /// The Service CIDR ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: net::Ipv4Net,
}

/// Flags of `capstan agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Listen address of this node's service (logs).
    #[arg(long, default_value = "127.0.0.1:10250")]
    listen: SocketAddr,
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

fn init_logs(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // netlink-packet-route warns on every newer-kernel attribute it does not know.
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!("{filter},netlink_packet_route=error"))
        })
        .context("--log")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--data-dir {}: cannot create it", dir.display()))?;
    std::fs::canonicalize(dir).with_context(|| format!("--data-dir {}", dir.display()))
}

fn shim_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the capstan executable for the shim")
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

/// Runs the server in the foreground until SIGINT or SIGTERM.
pub async fn run(a: ServerArgs) -> anyhow::Result<()> {
    init_logs(&a.node.log)?;
    let cluster_cidr = net::ClusterCidr::new(a.node.cluster_cidr, 24)
        .map_err(|e| anyhow::anyhow!("--cluster-cidr {}: {e}", a.node.cluster_cidr))?;
    let cfg = actors::server::ServerConfig {
        node: a.node.settings()?,
        listen: a.listen,
        cluster_cidr,
        service_cidr: a.service_cidr,
        node_lifecycle: actors::controllers::decide_node::LifecycleConfig {
            monitor_grace: chrono::Duration::seconds(a.node_monitor_grace_period),
            eviction_timeout: chrono::Duration::seconds(a.pod_eviction_timeout),
        },
    };
    let node = if a.disable_agent {
        "none".to_string()
    } else {
        cfg.node.node_name.clone()
    };
    actors::server::run(
        cfg,
        !a.disable_agent,
        move |addr| eprintln!("capstan server ready: node {node}, API on http://{addr}"),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Runs a node agent that joins `server`, in the foreground until SIGINT or SIGTERM.
pub async fn run_agent(server: &str, a: AgentArgs) -> anyhow::Result<()> {
    init_logs(&a.node.log)?;
    let cfg = actors::server::AgentConfig {
        node: a.node.settings()?,
        server_url: server.to_string(),
        listen: a.listen,
    };
    let node = cfg.node.node_name.clone();
    actors::server::run_agent(
        cfg,
        move |addr| eprintln!("capstan agent ready: node {node}, node service on http://{addr}"),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}
