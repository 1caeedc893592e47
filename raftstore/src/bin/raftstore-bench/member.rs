//! The hidden `member` mode: one raftstore member serving the etcd v3 API, started by the
//! benchmark as a process of its own (as `capstan store` does, without depending on it).
//!
//! Stops on SIGINT/SIGTERM, and also when the benchmark that started it goes away (the member
//! is re-parented), so an interrupted run leaves no raftstore member behind.

use std::time::Duration;

use raftstore::{ClusterConfig, EtcdServer, EtcdServerConfig, Store};
use tokio::signal::unix::{signal, SignalKind};

use crate::args::MemberArgs;
use crate::error::{BenchError, Result};

/// How often the member checks that its parent still runs.
const PARENT_POLL: Duration = Duration::from_millis(250);

/// Runs the member until it is told to stop.
pub async fn run(args: MemberArgs) -> Result<()> {
    let parent = std::os::unix::process::parent_id();
    let cfg = ClusterConfig::new(
        &args.name,
        args.data_dir.clone(),
        &args.listen_peer_url,
        &args.initial_cluster,
    )?;
    let client_addr = args
        .listen_client_url
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Usage {
            arg: "--listen-client-url".to_string(),
            reason: "must be an http:// URL".to_string(),
        })?
        .to_string();
    let listener = tokio::net::TcpListener::bind(&client_addr)
        .await
        .map_err(BenchError::io(format!("binding {client_addr}")))?;
    let store = Store::open_cluster(cfg.clone()).await?;
    let etcd = EtcdServerConfig {
        member_names: cfg
            .initial_cluster
            .iter()
            .map(|m| (m.id, m.name.clone()))
            .collect(),
        client_urls: [(cfg.node_id, vec![args.listen_client_url.clone()])]
            .into_iter()
            .collect(),
        ..EtcdServerConfig::default()
    };
    let server = EtcdServer::start(store.clone(), etcd, listener)?;
    let mut term = signal(SignalKind::terminate()).map_err(BenchError::io("SIGTERM handler"))?;
    let mut poll = tokio::time::interval(PARENT_POLL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = poll.tick() => {
                if std::os::unix::process::parent_id() != parent {
                    break;
                }
            }
        }
    }
    server.stop().await;
    store.shutdown().await?;
    Ok(())
}
