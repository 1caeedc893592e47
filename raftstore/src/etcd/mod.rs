//! The etcd v3 client API (a wire-compatible subset of `etcdserverpb`) served on a client URL
//! for one member: KV, Watch, Lease, Cluster and Maintenance, so `etcdctl` and etcd client libraries
//! work against a Capstan store.
//!
//! Owns the gRPC server's lifecycle, the response header and the one place where store errors
//! become `tonic::Status` ([`status`], with etcd's own error texts so clients recognise them).
//! The services translate requests into [`Store`] calls; they must not touch sled or openraft.

mod authority;
mod cluster;
mod kv;
mod lease;
mod snapshot;
mod txn_check;
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
pub use snapshot::{save_snapshot, SavedSnapshot, SnapshotError};

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

/// Settings of the client API. Member names and client URLs come from the replicated
/// membership (each member publishes its own); the maps here only fill in what a member's
/// record leaves empty, e.g. for a single-member store opened with [`Store::open`], which
/// publishes nothing.
#[derive(Clone, Debug, Default)]
pub struct EtcdServerConfig {
    /// Fallback member names by id, for members whose record has no name.
    pub member_names: HashMap<NodeId, String>,
    /// Fallback client URLs by member id, for members whose record has none.
    pub client_urls: HashMap<NodeId, Vec<String>>,
    /// How often a `progress_notify` watch that sent nothing gets a progress response
    /// (`None`: etcd's 10 minutes).
    pub watch_progress_interval: Option<Duration>,
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
        let incoming = authority::fix_authority(listener);
        let node = store.node_id();
        let kv = pb::kv_server::KvServer::new(kv::KvService {
            store: store.clone(),
        });
        let lease = pb::lease_server::LeaseServer::new(lease::LeaseService {
            store: store.clone(),
        });
        let watch = pb::watch_server::WatchServer::new(watch::WatchService {
            store: store.clone(),
            progress_interval: cfg
                .watch_progress_interval
                .unwrap_or(watch::DEFAULT_PROGRESS_INTERVAL),
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
                .add_service(lease)
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

/// The etcd text for an unknown lease (clients match on it).
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// Converts a store error into the status etcd would answer with.
pub(crate) fn status(e: Error) -> Status {
    match e {
        Error::Compacted { .. } => Status::out_of_range(COMPACTED),
        Error::FutureRevision { .. } => {
            Status::out_of_range("etcdserver: mvcc: required revision is a future revision")
        }
        Error::NotLeader { leader: None, .. } => Status::unavailable("etcdserver: no leader"),
        Error::NotLeader {
            leader: Some(leader),
            leader_url,
        } => cluster::leader_changed(leader, leader_url.as_deref()),
        Error::PeerUnreachable { .. } => Status::unavailable("etcdserver: leader changed"),
        Error::Timeout { .. } => Status::unavailable("etcdserver: request timed out"),
        Error::Shutdown => Status::unavailable("etcdserver: server stopped"),
        Error::Membership(m) => Status::failed_precondition(format!("etcdserver: {m}")),
        Error::Member(m) => cluster::member_status(&m),
        Error::LeaseNotFound { .. } => Status::not_found(LEASE_NOT_FOUND),
        Error::LeaseExists { .. } => {
            Status::failed_precondition("etcdserver: lease already exists")
        }
        Error::LeaseTtlTooLarge { .. } => Status::out_of_range("etcdserver: too large lease TTL"),
        e @ Error::InvalidLease { .. } => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// A request this server cannot serve faithfully.
pub(crate) fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!("capstan: {what} is not supported"))
}
