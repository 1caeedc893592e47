//! `capstan store`: runs one member of a Raft store cluster in the foreground, with etcd's flags
//! (`--name`, `--initial-cluster`, `--initial-cluster-state`, `--listen-peer-urls`,
//! `--listen-client-urls`, `--advertise-client-urls`, ...) plus `--join` to add itself to a
//! running cluster, and optionally the etcd v3 client API (so `etcdctl` works against it). It
//! prints a line on stdout whenever the leader, term or membership this member sees changes,
//! and exits once it has been removed from the cluster.
//!
//! Owns only flag parsing and the foreground loop; all store logic lives in `raftstore`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use raftstore::{
    ClusterConfig, ClusterStatus, EtcdServer, EtcdServerConfig, InitialClusterState, Store,
};

/// Flags of `capstan store`.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// This member's name (shown by `etcdctl member list`); must appear in --initial-cluster
    /// unless the member joins with --join.
    #[arg(long, default_value = "default")]
    name: String,
    /// Data directory of this member's store.
    #[arg(long, default_value = "./capstan-store")]
    data_dir: PathBuf,
    /// Where the Raft peer service listens (http://host:port).
    #[arg(
        long,
        alias = "listen-peer-urls",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_url: String,
    /// The peer URL the other members reach this member at, if not the listen URL (e.g. when
    /// listening on 0.0.0.0). The member's id is derived from it.
    #[arg(long, alias = "advertise-peer-url")]
    initial_advertise_peer_urls: Option<String>,
    /// All initial members as name=peer-url pairs: n1=http://h:2380,n2=...; each member's id is
    /// derived from its peer URL. Default: this member alone.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` forms a cluster from --initial-cluster (the lowest id initialises it); `existing`
    /// waits until a running cluster adds this member (`etcdctl member add`).
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Peer URL of any running member: on its first start this member asks that cluster to add
    /// it, catches up as a learner and is promoted to voter by the leader.
    #[arg(long, conflicts_with = "initial_cluster")]
    join: Option<String>,
    /// Where the etcd v3 client API listens (e.g. http://127.0.0.1:2379); none if not given.
    #[arg(long, alias = "listen-client-urls")]
    listen_client_url: Option<String>,
    /// The client URL this member publishes in the membership (`etcdctl member list`,
    /// `endpoint status --cluster`); default: --listen-client-url.
    #[arg(long, alias = "advertise-client-urls")]
    advertise_client_url: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

/// Whether `url` names a wildcard host, which clients cannot connect to.
fn is_wildcard(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or(url);
    host.starts_with("0.0.0.0") || host.starts_with("[::]")
}

impl StoreArgs {
    /// The cluster configuration these flags describe.
    fn config(&self) -> anyhow::Result<ClusterConfig> {
        let mut cfg = match &self.join {
            // --join implies an existing cluster, whatever --initial-cluster-state says.
            Some(url) => ClusterConfig::join(
                &self.name,
                self.data_dir.clone(),
                &self.listen_peer_url,
                url,
            )?,
            None => {
                let advertise = self
                    .initial_advertise_peer_urls
                    .as_deref()
                    .unwrap_or(&self.listen_peer_url);
                let spec = self
                    .initial_cluster
                    .clone()
                    .unwrap_or_else(|| format!("{}={advertise}", self.name));
                let mut cfg = ClusterConfig::new(
                    &self.name,
                    self.data_dir.clone(),
                    &self.listen_peer_url,
                    &spec,
                )?;
                if self.initial_cluster_state == "existing" {
                    cfg.initial_cluster_state = InitialClusterState::Existing;
                }
                cfg
            }
        };
        if let Some(url) = &self.initial_advertise_peer_urls {
            if url.contains(',') {
                anyhow::bail!(
                    "--initial-advertise-peer-urls {url}: a Capstan member has exactly one peer URL"
                );
            }
            cfg = cfg.with_advertise_peer_url(url)?;
        }
        if let Some(urls) = self.client_urls()? {
            cfg = cfg.with_client_urls(&urls)?;
        }
        Ok(cfg)
    }

    /// The client URLs to publish: --advertise-client-url, else --listen-client-url.
    fn client_urls(&self) -> anyhow::Result<Option<Vec<String>>> {
        let listen = self.listen_client_url.as_deref();
        let urls = match (self.advertise_client_url.as_deref(), listen) {
            (Some(adv), _) => adv,
            (None, Some(listen)) if is_wildcard(listen) => anyhow::bail!(
                "--listen-client-url {listen} is a wildcard address; give \
                 --advertise-client-url with an address clients can reach"
            ),
            (None, Some(listen)) => listen,
            (None, None) => return Ok(None),
        };
        Ok(Some(
            urls.split(',').map(|u| u.trim().to_string()).collect(),
        ))
    }
}

fn init_logs(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .context("--log")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

/// One stdout line per change, ids in hex as etcdctl shows them:
/// `member=8e9e05c52164694d leader=8e9e.. term=3 members=n1:8e9e..=http://..,n4:..=http://..(learner)`.
fn status_line(s: &ClusterStatus) -> String {
    let leader = s
        .leader
        .map_or_else(|| "none".to_string(), |l| format!("{l:x}"));
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            let role = if m.voter { "" } else { "(learner)" };
            let name = if m.name.is_empty() { "?" } else { &m.name };
            format!("{name}:{:x}={}{role}", m.id, m.peer_url)
        })
        .collect();
    let removed = if s.removed { " removed" } else { "" };
    format!(
        "member={:x} leader={leader} term={} members={}{removed}",
        s.node_id,
        s.term,
        members.join(",")
    )
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

/// Starts the etcd client API on `url` (`http://host:port`) for `store`.
async fn serve_client_api(store: &Store, url: &str) -> anyhow::Result<EtcdServer> {
    let addr = url
        .strip_prefix("http://")
        .with_context(|| format!("--listen-client-url {url}: only http:// URLs are supported"))?
        .trim_end_matches('/');
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--listen-client-url {url}"))?;
    // Names and client URLs come from the replicated membership.
    Ok(EtcdServer::start(
        store.clone(),
        EtcdServerConfig::default(),
        listener,
    )?)
}

/// Runs the member until SIGINT or SIGTERM (or until it is removed from the cluster),
/// printing leader/term/membership changes.
pub async fn run(
    a: StoreArgs,
    compaction: Option<raftstore::CompactionPolicy>,
) -> anyhow::Result<()> {
    init_logs(&a.log)?;
    let cfg = a.config()?;
    let store = Store::open_cluster(cfg.clone())
        .await
        .context("starting the store")?;
    // Runs until dropped at the end of this function (see `capstan store --auto-compaction-*`).
    let _compactor = compaction.map(|policy| store.start_auto_compaction(policy));
    let client_api = match &a.listen_client_url {
        Some(url) => match serve_client_api(&store, url).await {
            Ok(server) => Some(server),
            Err(e) => {
                store.shutdown().await.context("stopping the store")?;
                return Err(e);
            }
        },
        None => None,
    };
    let mut status = store.status_watch();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = status.changed() => match changed {
                Some(s) => {
                    println!("{}", status_line(&s));
                    if s.removed {
                        tracing::warn!(node = s.node_id, "this member was removed from the cluster; exiting");
                        break;
                    }
                }
                None => break,
            },
        }
    }
    if let Some(server) = client_api {
        server.stop().await;
    }
    store.shutdown().await.context("stopping the store")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<ClusterConfig> {
        let cli = Cli::try_parse_from(std::iter::once("store").chain(args.iter().copied()))?;
        cli.store.config()
    }

    const THREE: &str =
        "n1=http://127.0.0.1:2380,n2=http://127.0.0.2:2380,n3=http://127.0.0.3:2380";

    #[test]
    fn etcd_style_flags_give_a_member_of_a_new_cluster_with_a_derived_id() -> anyhow::Result<()> {
        let cfg = parse(&[
            "--name",
            "n2",
            "--listen-peer-urls",
            "http://0.0.0.0:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.2:2380",
            "--initial-cluster",
            THREE,
            "--listen-client-urls",
            "http://0.0.0.0:2379",
            "--advertise-client-urls",
            "http://127.0.0.2:2379",
        ])?;
        assert_eq!(cfg.node_id, raftstore::member_id("http://127.0.0.2:2380")?);
        assert_eq!(cfg.advertise_peer_url, "http://127.0.0.2:2380");
        assert_eq!(cfg.listen_peer_url, "http://0.0.0.0:2380");
        assert_eq!(cfg.client_urls, vec!["http://127.0.0.2:2379".to_string()]);
        assert_eq!(cfg.initial_cluster_state, InitialClusterState::New);
        assert_eq!(cfg.initial_cluster.len(), 3);
        Ok(())
    }

    #[test]
    fn a_member_added_with_etcdctl_starts_as_existing_under_the_same_id() -> anyhow::Result<()> {
        let four = format!("{THREE},n4=http://127.0.0.4:2380");
        let cfg = parse(&[
            "--name",
            "n4",
            "--listen-peer-url",
            "http://127.0.0.4:2380",
            "--initial-cluster",
            &four,
            "--initial-cluster-state",
            "existing",
        ])?;
        // The id `etcdctl member add n4 --peer-urls=http://127.0.0.4:2380` gave it.
        assert_eq!(cfg.node_id, raftstore::member_id("http://127.0.0.4:2380")?);
        assert_eq!(cfg.initial_cluster_state, InitialClusterState::Existing);
        Ok(())
    }

    #[test]
    fn join_needs_no_initial_cluster_and_derives_the_id_from_the_peer_url() -> anyhow::Result<()> {
        let cfg = parse(&[
            "--name",
            "n4",
            "--listen-peer-url",
            "http://127.0.0.4:2380",
            "--join",
            "http://127.0.0.1:2380",
            "--listen-client-url",
            "http://127.0.0.4:2379",
        ])?;
        assert_eq!(cfg.node_id, raftstore::member_id("http://127.0.0.4:2380")?);
        assert_eq!(cfg.join.as_deref(), Some("http://127.0.0.1:2380"));
        assert_eq!(cfg.client_urls, vec!["http://127.0.0.4:2379".to_string()]);
        Ok(())
    }

    #[test]
    fn contradictory_or_unusable_flags_are_refused_with_the_flag_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["--name", "n9", "--initial-cluster", THREE], "not listed"),
            (
                &[
                    "--name",
                    "n1",
                    "--initial-cluster",
                    THREE,
                    "--join",
                    "http://h:1",
                ],
                "cannot be used with",
            ),
            (
                &[
                    "--name",
                    "n1",
                    "--initial-cluster",
                    THREE,
                    "--initial-advertise-peer-urls",
                    "http://10.0.0.1:2380",
                ],
                "--initial-cluster lists n1",
            ),
            (
                &["--name", "n1", "--listen-client-url", "http://0.0.0.0:2379"],
                "--advertise-client-url",
            ),
            (
                &["--name", "n1", "--advertise-client-url", "127.0.0.1:2379"],
                "--advertise-client-urls",
            ),
            (&["--name", "n1", "--join", "h:2380"], "--join"),
            (
                &["--name", "n1", "--initial-cluster", "n1=https://h:1"],
                "--initial-cluster",
            ),
        ];
        for (args, expected) in cases {
            match parse(args) {
                Ok(cfg) => panic!("{args:?} accepted: {cfg:?}"),
                Err(e) => assert!(
                    format!("{e:#}").contains(expected),
                    "{args:?}: {e:#} does not mention {expected}"
                ),
            }
        }
    }
}
