//! The etcd v3 client API (a wire-compatible subset of `etcdserverpb`) served on a client URL
//! for one member: KV, Watch, Cluster and Maintenance, so `etcdctl` and etcd client libraries
//! work against a Capstan store.
//!
//! Owns the gRPC server's lifecycle, the response header and the one place where store errors
//! become `tonic::Status` ([`status`], with etcd's own error texts so clients recognise them).
//! The services translate requests into [`Store`] calls; they must not touch sled or openraft.

mod cluster;
mod kv;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::types::NodeId;

/// The generated etcd protobuf types and service traits.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    /// etcd's `mvccpb` package.
    pub(crate) mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's `etcdserverpb` package.
    pub(crate) mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub(crate) use etcdserverpb::*;
}

/// How long [`EtcdServer::stop`] waits for in-flight calls before aborting the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The cluster id in every response header. Capstan stores have no cluster identity yet, so
/// all members (of every cluster) report this constant.
const CLUSTER_ID: u64 = 0xca95_7a11_e7cd_0001;

/// What the client API reports about members beyond what Raft membership knows.
#[derive(Clone, Debug, Default)]
pub struct EtcdServerConfig {
    /// Member names by id (from `--initial-cluster`); members not listed are shown unnamed.
    pub member_names: HashMap<NodeId, String>,
    /// Client URLs by member id; this member's own URL at least.
    pub client_urls: HashMap<NodeId, Vec<String>>,
}

/// The running client API of one member.
pub struct EtcdServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EtcdServer {
    /// Serves the etcd v3 API for `store` on `listener` until [`EtcdServer::stop`].
    pub fn start(
        store: Store,
        cfg: EtcdServerConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<EtcdServer> {
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr: None, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let node = store.node_id();
        let kv = pb::kv_server::KvServer::new(kv::KvService {
            store: store.clone(),
        });
        let watch = pb::watch_server::WatchServer::new(watch::WatchService {
            store: store.clone(),
        });
        let cluster = pb::cluster_server::ClusterServer::new(cluster::ClusterService {
            store: store.clone(),
            cfg,
        });
        let maintenance =
            pb::maintenance_server::MaintenanceServer::new(cluster::MaintenanceService { store });
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(kv)
                .add_service(watch)
                .add_service(cluster)
                .add_service(maintenance)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(node, error = %e, "etcd client service failed");
            }
        });
        tracing::info!(node, addr = %addr, "etcd client service listening");
        Ok(EtcdServer {
            stop: Some(stop),
            task,
            addr,
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls and waits (briefly) for open calls and watch streams to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("etcd client service did not stop in time; aborting it");
            abort.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// The response header for `store` at `revision`.
pub(crate) fn header(store: &Store, revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: CLUSTER_ID,
        member_id: store.node_id(),
        revision,
        raft_term: store.members().term,
    })
}

/// The etcd text for a compacted revision (clients match on it).
pub(crate) const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// Converts a store error into the status etcd would answer with.
pub(crate) fn status(e: Error) -> Status {
    match e {
        Error::Compacted { .. } => Status::out_of_range(COMPACTED),
        Error::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        Error::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        Error::NotLeader { .. } | Error::PeerUnreachable { .. } => {
            Status::unavailable("etcdserver: leader changed")
        }
        Error::Timeout { .. } => Status::unavailable("etcdserver: request timed out"),
        Error::Shutdown => Status::unavailable("etcdserver: server stopped"),
        Error::Membership(m) => Status::failed_precondition(format!("etcdserver: {m}")),
        other => Status::internal(other.to_string()),
    }
}

/// A request this server cannot serve faithfully.
pub(crate) fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("capstan: {what} is not supported"))
}
