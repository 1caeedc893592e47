//! `capstan server` (one node with embedded defaults, a control-plane-only server, or one of
//! several servers sharing a store cluster, with leader election) and `capstan agent` (a node
//! that joins the servers).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// How pod traffic reaches other nodes: `host-gw` (routes via each node's address; the
    /// nodes must share a segment) or `vxlan` (encapsulated towards each node's address).
    /// Switching modes removes the other mode's routes or device.
    #[arg(long, value_enum, default_value = "host-gw")]
    network_mode: NetworkMode,
    /// Name of the VXLAN device (`--network-mode vxlan`).
    #[arg(long, default_value = net::vxlan::DEFAULT_VXLAN_DEVICE)]
    vxlan_device: String,
    /// VXLAN network identifier, the same on every node (`--network-mode vxlan`).
    #[arg(long, default_value_t = net::vxlan::DEFAULT_VNI, value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    vxlan_vni: u32,
    /// VXLAN UDP port, the same on every node (`--network-mode vxlan`).
    #[arg(long, default_value_t = net::vxlan::DEFAULT_VXLAN_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    vxlan_port: u16,
    /// The cluster DNS domain: Services are `<svc>.<ns>.svc.<domain>`.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Servers the node's DNS forwards names outside the cluster domain to, as IP or IP:PORT,
    /// comma-separated (default: the nameservers of --resolv-conf).
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    dns_upstream: Vec<SocketAddr>,
    /// The node's resolver file: the default upstreams, and what pods with dnsPolicy
    /// `Default` (or host-network pods) get.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
}

/// How pod traffic reaches other nodes (`--network-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// Routes to each node's pod subnet via its address.
    HostGw,
    /// A VXLAN device with an entry per node.
    Vxlan,
}

/// `IP` (port 53) or `IP:PORT`.
fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
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
    /// Cluster DNS settings; upstreams default to the resolver file's nameservers.
    fn dns_settings(&self) -> anyhow::Result<actors::agent::dns::DnsSettings> {
        // Fail at start-up on a bad domain, not on the first Service.
        net::dns::RecordSet::empty(&self.cluster_domain).context("--cluster-domain")?;
        let upstreams = if !self.dns_upstream.is_empty() {
            self.dns_upstream.clone()
        } else if self.pod_network == PodNetworkMode::None {
            Vec::new()
        } else {
            match net::dns::server::upstreams_from_resolv_conf(&self.resolv_conf) {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster DNS will not forward names outside the cluster domain");
                    Vec::new()
                }
            }
        };
        Ok(actors::agent::dns::DnsSettings {
            cluster_domain: self
                .cluster_domain
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            upstreams,
            host_resolv_conf: self.resolv_conf.clone(),
            host_hosts: PathBuf::from("/etc/hosts"),
        })
    }

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
                mode: match self.network_mode {
                    NetworkMode::HostGw => actors::agent::network::InterNodeMode::HostGw,
                    NetworkMode::Vxlan => actors::agent::network::InterNodeMode::Vxlan,
                },
                vxlan: net::VxlanConfig {
                    device: self.vxlan_device.clone(),
                    vni: self.vxlan_vni,
                    port: self.vxlan_port,
                },
            }
        });
        let dns = self.dns_settings()?;
        Ok(actors::server::NodeSettings {
            dns,
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
    /// This server's name: its store member in --initial-cluster and its identity in the
    /// leader election (default: the node name).
    #[arg(long)]
    name: Option<String>,
    /// The store members of all control-plane servers as name=peer-url pairs
    /// (n1=http://10.0.0.1:2380,n2=...). Without it the server embeds a one-member store.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Where this server's store peer service listens (default: its URL in --initial-cluster).
    #[arg(long, requires = "initial_cluster")]
    listen_peer_url: Option<String>,
    /// `new` forms a cluster from --initial-cluster; `existing` waits to be added to a running
    /// cluster.
    #[arg(long, default_value = "new", value_parser = ["new", "existing"], requires = "initial_cluster")]
    initial_cluster_state: String,
    /// How long the leader's lease lasts unrenewed; a standby server takes over after it
    /// expires (e.g. 15s, 3s, 1500ms).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops its controllers (default:
    /// 2/3 of the lease duration; must be shorter than it).
    #[arg(long, value_parser = parse_duration)]
    leader_elect_renew_deadline: Option<Duration>,
    /// How often the lease is read and renewed (default: 2/15 of the lease duration).
    #[arg(long, value_parser = parse_duration)]
    leader_elect_retry_period: Option<Duration>,
}

impl ServerArgs {
    /// The store settings these flags describe.
    fn store(&self, name: &str) -> anyhow::Result<actors::server::StoreSettings> {
        let Some(spec) = self.initial_cluster.clone() else {
            return Ok(actors::server::StoreSettings::Single);
        };
        let members = raftstore::parse_initial_cluster(&spec).context("--initial-cluster")?;
        let listed = members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.peer_url.clone());
        let listen_peer_url = match (&self.listen_peer_url, listed) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url,
            (None, None) => anyhow::bail!(
                "--name {name} is not listed in --initial-cluster {spec}; give --name (or \
                 --node-name) as listed there"
            ),
        };
        let state = if self.initial_cluster_state == "existing" {
            raftstore::InitialClusterState::Existing
        } else {
            raftstore::InitialClusterState::New
        };
        Ok(actors::server::StoreSettings::Cluster {
            name: name.to_string(),
            listen_peer_url,
            initial_cluster: spec,
            state,
        })
    }

    /// The leader-election timing these flags describe.
    fn election(&self) -> anyhow::Result<actors::election::ElectionConfig> {
        actors::election::ElectionConfig::new(
            self.leader_elect_lease_duration,
            self.leader_elect_renew_deadline,
            self.leader_elect_retry_period,
        )
        .context("--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period")
    }
}

/// Parses `15s`, `1500ms`, `2m`, `1h` or `2.5s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: needs a unit: ms, s, m or h (e.g. 15s)"))?;
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{s:?}: {e}"))
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
        // netlink-packet-route warns on every newer-kernel attribute it does not know;
        // hickory logs every DNS query at info.
        .or_else(|_| {
            tracing_subscriber::EnvFilter::try_new(format!(
                "{filter},netlink_packet_route=error,hickory_server=warn,hickory_resolver=warn,hickory_net=warn"
            ))
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
    let election = a.election()?;
    let identity = a
        .name
        .clone()
        .or_else(|| a.node.node_name.clone())
        .unwrap_or_else(default_node_name);
    let store = a.store(&identity)?;
    let node = a.node.settings()?;
    let cfg = actors::server::ServerConfig {
        node,
        store,
        identity,
        election,
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

/// Runs a node agent that joins `server` (one URL, or several separated by commas to fail over
/// between), in the foreground until SIGINT or SIGTERM.
pub async fn run_agent(server: &str, a: AgentArgs) -> anyhow::Result<()> {
    init_logs(&a.node.log)?;
    let server_urls: Vec<String> = server
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    actors::failover::parse_server_urls(server).context("--server")?;
    let cfg = actors::server::AgentConfig {
        node: a.node.settings()?,
        server_urls,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_kubernetes_style_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["15", "s", "15x", "1.2.3s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dns_upstreams_are_an_ip_or_ip_and_port() {
        assert_eq!(
            parse_upstream("192.0.2.1"),
            Ok("192.0.2.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("192.0.2.1:5353"),
            Ok("192.0.2.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("2001:db8::1"),
            Ok("[2001:db8::1]:53".parse().unwrap())
        );
        let err = parse_upstream("dns.example").unwrap_err();
        assert!(err.contains("dns.example"), "{err}");
    }
}
