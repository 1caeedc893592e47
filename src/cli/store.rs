//! `capstan store`: runs one member of a Raft store cluster in the foreground, optionally serving
//! the etcd v3 client API on `--listen-client-url` (so `etcdctl` works against it). Useful for
//! testing clusters: it prints a line on stdout whenever the leader, term or membership this
//! member sees changes.
//!
//! Owns only flag parsing and the foreground loop; all store logic lives in `raftstore`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use raftstore::{
    ClusterConfig, ClusterStatus, EtcdServer, EtcdServerConfig, InitialClusterState, Store,
};

/// Flags of `capstan store`.
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// This member's name; must appear in --initial-cluster unless --node-id is given.
    #[arg(long)]
    name: String,
    /// Data directory of this member's store.
    #[arg(long, default_value = "./capstan-store")]
    data_dir: PathBuf,
    /// Where the Raft peer service listens.
    #[arg(long, default_value = "http://127.0.0.1:2380")]
    listen_peer_url: String,
    /// All initial members as name=peer-url pairs: n1=http://h:2380,n2=...; a member's id is
    /// its position in this list. Default: this member alone.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new` forms a cluster from --initial-cluster (the lowest id initialises it); `existing`
    /// waits to be added to a running cluster.
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Raft id, for a member joining an existing cluster (not in --initial-cluster).
    #[arg(long)]
    node_id: Option<u64>,
    /// Where the etcd v3 client API listens (e.g. http://127.0.0.1:2379); none if not given.
    #[arg(long)]
    listen_client_url: Option<String>,
    /// Log filter (tracing `EnvFilter` syntax); RUST_LOG wins when set.
    #[arg(long, default_value = "info")]
    log: String,
}

impl StoreArgs {
    fn config(&self) -> anyhow::Result<ClusterConfig> {
        let spec = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, self.listen_peer_url));
        let in_list = raftstore::parse_initial_cluster(&spec)
            .context("--initial-cluster")?
            .iter()
            .any(|m| m.name == self.name);
        let mut cfg = match (self.node_id, in_list) {
            (_, true) => {
                let cfg = ClusterConfig::new(
                    &self.name,
                    self.data_dir.clone(),
                    &self.listen_peer_url,
                    &spec,
                )
                .context("--initial-cluster")?;
                if let Some(id) = self.node_id.filter(|id| *id != cfg.node_id) {
                    anyhow::bail!(
                        "--node-id {id} contradicts --initial-cluster, where {} has id {}",
                        self.name,
                        cfg.node_id
                    );
                }
                cfg
            }
            (Some(id), false) => {
                ClusterConfig::joining(&self.name, id, self.data_dir.clone(), &self.listen_peer_url)
            }
            (None, false) => anyhow::bail!(
                "--name {} is not in --initial-cluster; give --node-id to join an existing cluster",
                self.name
            ),
        };
        if self.initial_cluster_state == "existing" {
            cfg.initial_cluster_state = InitialClusterState::Existing;
        }
        Ok(cfg)
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

/// One stdout line per change: `node=1 leader=2 term=3 members=1=http://..,2=..(learner)`.
fn status_line(s: &ClusterStatus) -> String {
    let leader = s
        .leader
        .map_or_else(|| "none".to_string(), |l| l.to_string());
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| {
            let role = if m.voter { "" } else { "(learner)" };
            format!("{}={}{role}", m.id, m.peer_url)
        })
        .collect();
    format!(
        "node={} leader={leader} term={} members={}",
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
async fn serve_client_api(
    store: &Store,
    cfg: &ClusterConfig,
    url: &str,
) -> anyhow::Result<EtcdServer> {
    let addr = url
        .strip_prefix("http://")
        .with_context(|| format!("--listen-client-url {url}: only http:// URLs are supported"))?
        .trim_end_matches('/');
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--listen-client-url {url}"))?;
    let etcd = EtcdServerConfig {
        member_names: cfg
            .initial_cluster
            .iter()
            .map(|m| (m.id, m.name.clone()))
            .chain([(cfg.node_id, cfg.name.clone())])
            .collect(),
        client_urls: [(cfg.node_id, vec![url.to_string()])].into_iter().collect(),
    };
    Ok(EtcdServer::start(store.clone(), etcd, listener)?)
}

/// Runs the member until SIGINT or SIGTERM, printing leader/term/membership changes.
pub async fn run(a: StoreArgs) -> anyhow::Result<()> {
    init_logs(&a.log)?;
    let cfg = a.config()?;
    let store = Store::open_cluster(cfg.clone())
        .await
        .context("starting the store")?;
    let client_api = match &a.listen_client_url {
        Some(url) => Some(serve_client_api(&store, &cfg, url).await?),
        None => None,
    };
    let mut status = store.status_watch();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = status.changed() => match changed {
                Some(s) => println!("{}", status_line(&s)),
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
