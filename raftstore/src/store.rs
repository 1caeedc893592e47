//! The public [`Store`] handle: opens sled, starts openraft (and, for a cluster member, the
//! peer service), and turns the KV API into Raft writes and linearizable reads.
//!
//! Writes return only after the entry is committed, applied and flushed; on a follower they are
//! forwarded to the leader (see `store_cluster`). Reads first obtain a read index (from this
//! member if it leads, else from the leader) and wait until it is applied here. This module
//! holds no data itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use openraft::metrics::WaitError;

use crate::cluster::{self, ClusterConfig, RaftTuning};

use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::log_store::LogStore;
use crate::model::{
    DeleteResult, KeyValue, PutResult, RangeResult, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::network::{PeerChannels, PeerNetworkFactory};
use crate::peer_service::PeerServer;
use crate::proposal::initial_nodes;
use crate::state_machine::{SmShared, StateMachineStore};
use crate::types::{NodeId, Raft, RaftRequest};
use crate::watch::WatchStream;
use crate::wire::{Proposal, ProposalOutcome};

/// How long [`Store::open`] waits for this member to become leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Store::open`] waits for a just-closed sled instance to release its lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`Store::shutdown`] waits for openraft's tasks to release the storage.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom a single-member store runs (see [`ClusterConfig`] for a real cluster).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This member's Raft id.
    pub node_id: u64,
    /// Directory holding the sled database (created if missing).
    pub data_dir: PathBuf,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Sees every write acknowledged before the read started, on any member (read index from
    /// the leader, then wait until this member applied it).
    #[default]
    Linearizable,
    /// This member's applied state, without asking the leader: fast, possibly stale.
    Serializable,
}

/// A cheap, cloneable handle to the running store. Call [`Store::shutdown`] before dropping the
/// last handle: openraft's tasks keep running (and keep the directory locked) until then.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

pub(crate) struct StoreInner {
    pub(crate) node_id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) sm: Arc<SmShared>,
    /// Kept to see when openraft has released its clones (see `shutdown`).
    log: LogStore,
    pub(crate) db: sled::Db,
    shut_down: AtomicBool,
    pub(crate) channels: PeerChannels,
    server: tokio::sync::Mutex<Option<PeerServer>>,
    peer_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node", &self.inner.node_id)
            .field("revision", &self.revision())
            .finish()
    }
}

impl Store {
    /// Opens or creates a single-member store in `data_dir` (no peer service); on first start
    /// initialises a one-member cluster; returns once this member is leader and has applied
    /// everything committed before.
    pub async fn open(cfg: StoreConfig) -> Result<Store> {
        let store = start(cfg.node_id, &cfg.data_dir, &RaftTuning::default(), None).await?;
        let raft = &store.inner.raft;
        if !raft.is_initialized().await? {
            tracing::info!(node = cfg.node_id, "initialising one-member cluster");
            raft.initialize(initial_nodes([(cfg.node_id, "")])).await?;
        }
        raft.wait(Some(LEADER_TIMEOUT))
            .current_leader(cfg.node_id, "store open: become leader")
            .await
            .map_err(|e| wait_error(e, "leadership"))?;
        // Wait until everything committed before this start is applied, so reads and
        // `revision()` reflect it.
        raft.ensure_linearizable().await?;
        tracing::info!(
            node = cfg.node_id,
            resource_version = store.revision(),
            "store ready"
        );
        Ok(store)
    }

    /// Opens a member of a multi-member cluster, serving the peer service on
    /// `cfg.listen_peer_url`. See [`Store::open_cluster_on`].
    pub async fn open_cluster(cfg: ClusterConfig) -> Result<Store> {
        let addr = cluster::listen_addr(&cfg.listen_peer_url)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: Some(addr),
                source,
            })?;
        Store::open_cluster_on(cfg, listener).await
    }

    /// Opens a member of a multi-member cluster, serving the peer service on `listener`. On
    /// the first start of a new cluster the lowest-id member initialises it with the initial
    /// members; restarts keep vote, log and state from disk. Returns without waiting for a
    /// leader (the other members may not run yet): see [`Store::wait_for_leader`].
    pub async fn open_cluster_on(
        cfg: ClusterConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Store> {
        let store = start(cfg.node_id, &cfg.data_dir, &cfg.tuning, Some(listener)).await?;
        let raft = &store.inner.raft;
        if cluster::should_initialize(&cfg, raft.is_initialized().await?) {
            tracing::info!(
                node = cfg.node_id,
                members = cfg.initial_cluster.len(),
                "initialising new cluster"
            );
            let nodes = initial_nodes(
                cfg.initial_cluster
                    .iter()
                    .map(|m| (m.id, m.peer_url.as_str())),
            );
            raft.initialize(nodes).await?;
        }
        tracing::info!(node = cfg.node_id, name = %cfg.name, "cluster member started");
        Ok(store)
    }

    /// This member's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The address the peer service is bound to (`None` for a single-member store).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.peer_addr
    }

    /// Writes `value` under `key`.
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<PutResult> {
        match self.single(TxnOp::Put { key, value }).await? {
            TxnOpResult::Put(put) => Ok(put),
            _ => Err(Error::UnexpectedResponse("put did not return a put result")),
        }
    }

    /// Reads `key` linearizably.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency.
    pub async fn get_with(
        &self,
        key: &[u8],
        consistency: ReadConsistency,
    ) -> Result<Option<KeyValue>> {
        self.prepare_read(consistency).await?;
        self.inner.sm.get(key)
    }

    /// Reads all keys starting with `prefix` linearizably, sorted by key.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResult> {
        self.range_prefix_with(prefix, ReadConsistency::Linearizable)
            .await
    }

    /// Reads all keys starting with `prefix` with the given consistency, sorted by key.
    pub async fn range_prefix_with(
        &self,
        prefix: &[u8],
        consistency: ReadConsistency,
    ) -> Result<RangeResult> {
        self.prepare_read(consistency).await?;
        self.inner.sm.range_prefix(prefix)
    }

    /// Deletes `key`; deleting a missing key changes nothing (`prev` is `None`).
    pub async fn delete(&self, key: &[u8]) -> Result<DeleteResult> {
        match self.single(TxnOp::Delete { key: key.to_vec() }).await? {
            TxnOpResult::Delete(delete) => Ok(delete),
            _ => Err(Error::UnexpectedResponse(
                "delete did not return a delete result",
            )),
        }
    }

    /// Runs a compare-then-act transaction atomically at one revision. On a follower it is
    /// forwarded to the leader (see [`Store::propose`] for the retry rules).
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        match self.propose(Proposal::Write(RaftRequest { txn })).await? {
            ProposalOutcome::Write(response) => response
                .txn
                .ok_or(Error::UnexpectedResponse("normal entry without txn result")),
            ProposalOutcome::Membership { .. } => Err(Error::UnexpectedResponse(
                "write returned a membership outcome",
            )),
        }
    }

    /// Events for keys starting with `prefix` with `mod_revision >= start_revision`, in revision
    /// order, none lost or duplicated; `start_revision` 0 means only changes after now. The stream
    /// ends with an `Err` if the watcher falls too far behind, history is gone, or the store
    /// shuts down.
    pub async fn watch(&self, prefix: Vec<u8>, start_revision: i64) -> Result<WatchStream> {
        self.check_open()?;
        self.inner.sm.watch(prefix, start_revision)
    }

    /// Reads the etcd-style `range` as of `revision` (<= 0: now) with the given consistency,
    /// sorted by key. Past revisions are exact back to the compaction revision; older ones fail
    /// with [`Error::Compacted`], newer than now with [`Error::FutureRevision`]. The result's
    /// `revision` is the current store revision, as in etcd's response header.
    pub async fn range(
        &self,
        range: &KeyRange,
        revision: i64,
        consistency: ReadConsistency,
    ) -> Result<RangeResult> {
        self.prepare_read(consistency).await?;
        let (kvs, revision) = self.inner.sm.range_at(range, revision)?;
        Ok(RangeResult { kvs, revision })
    }

    /// Like [`Store::watch`], for the etcd-style `range`.
    pub async fn watch_range(&self, range: KeyRange, start_revision: i64) -> Result<WatchStream> {
        let stream = self.watch(range.common_prefix(), start_revision).await?;
        Ok(Box::pin(stream.filter(move |event| {
            let keep = match event {
                Ok(e) => range.contains(&e.kv.key),
                Err(_) => true,
            };
            std::future::ready(keep)
        })))
    }

    /// Drops history up to and including `revision` through the Raft log (every member
    /// compacts at the same point) and returns the compaction revision now in force. Fails with
    /// [`Error::Compacted`] if `revision` is already compacted and [`Error::FutureRevision`] if
    /// the store has not reached it.
    pub async fn compact(&self, revision: i64) -> Result<i64> {
        let compacted = self.compact_revision();
        if revision <= compacted {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        let current = self.revision();
        if revision > current {
            return Err(Error::FutureRevision { revision, current });
        }
        match self.single(TxnOp::Compact { revision }).await? {
            TxnOpResult::Compact { compact_revision } => Ok(compact_revision),
            _ => Err(Error::UnexpectedResponse(
                "compact did not return a compact result",
            )),
        }
    }

    /// The revision up to which history was compacted (0: never).
    pub fn compact_revision(&self) -> i64 {
        self.inner.sm.compact_revision()
    }

    /// Bytes the store's database takes on disk.
    pub fn db_size(&self) -> Result<u64> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// The current applied revision.
    pub fn revision(&self) -> i64 {
        self.inner.sm.revision()
    }

    /// Stops Raft, ends all watches and flushes sled. Returns once openraft's tasks have let go
    /// of the storage, so the directory can be reopened as soon as every `Store` clone is
    /// dropped. Later calls on any clone return [`Error::Shutdown`]; calling it twice is harmless.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!(node = self.inner.node_id, "store shutting down");
        self.inner.sm.close_watchers();
        // Raft first, so calls in flight in the peer service fail fast instead of holding up the
        // server's graceful stop.
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::RaftSetup(format!("raft shutdown: {e}")))?;
        if let Some(server) = self.inner.server.lock().await.take() {
            server.stop().await;
        }
        // The state machine worker and log readers stop asynchronously after the core.
        let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
        while Arc::strong_count(&self.inner.sm) > 1 || self.inner.log.is_shared() {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    node = self.inner.node_id,
                    "raft tasks still hold the storage after shutdown"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.db.flush_async().await?;
        Ok(())
    }

    async fn single(&self, op: TxnOp) -> Result<TxnOpResult> {
        let result = self
            .txn(Txn {
                compares: vec![],
                success: vec![op],
                failure: vec![],
            })
            .await?;
        result
            .responses
            .into_iter()
            .next()
            .ok_or(Error::UnexpectedResponse("txn returned no op result"))
    }

    async fn prepare_read(&self, consistency: ReadConsistency) -> Result<()> {
        self.check_open()?;
        match consistency {
            ReadConsistency::Linearizable => self.linearize().await,
            ReadConsistency::Serializable => Ok(()),
        }
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        Ok(())
    }
}

/// Opens storage and starts openraft (and the peer service if `listener` is given).
async fn start(
    node_id: NodeId,
    data_dir: &std::path::Path,
    tuning: &RaftTuning,
    listener: Option<tokio::net::TcpListener>,
) -> Result<Store> {
    let db_path = data_dir.join("sled");
    std::fs::create_dir_all(&db_path).map_err(|source| Error::DataDir {
        path: db_path.clone(),
        source,
    })?;
    let db = open_db(db_path).await?;
    let log_store = LogStore::open(&db)?;
    let log = log_store.clone();
    let state_machine = StateMachineStore::open(&db)?;
    let sm = state_machine.shared();
    let channels = PeerChannels::default();
    let raft = Raft::new(
        node_id,
        Arc::new(tuning.to_openraft()?),
        PeerNetworkFactory::new(channels.clone()),
        log_store,
        state_machine,
    )
    .await?;
    let server = listener
        .map(|l| PeerServer::start(raft.clone(), node_id, l))
        .transpose()?;
    Ok(Store {
        inner: Arc::new(StoreInner {
            node_id,
            raft,
            sm,
            log,
            db,
            shut_down: AtomicBool::new(false),
            channels,
            peer_addr: server.as_ref().map(|s| s.addr),
            server: tokio::sync::Mutex::new(server),
        }),
    })
}

/// Translates openraft's wait error for `what`.
pub(crate) fn wait_error(e: WaitError, what: &'static str) -> Error {
    match e {
        WaitError::Timeout(waited, _) => Error::Timeout {
            what,
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        },
        WaitError::ShuttingDown => Error::Shutdown,
    }
}

/// Opens sled, waiting briefly for the directory lock: sled releases it from a background thread
/// shortly after the previous instance in this process was dropped. Another live instance still
/// makes this fail after the deadline.
async fn open_db(path: PathBuf) -> Result<sled::Db> {
    let deadline = tokio::time::Instant::now() + LOCK_TIMEOUT;
    loop {
        let attempt = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sled::Config::new().path(path).open())
                .await
                .map_err(|e| Error::RaftSetup(format!("sled open task failed: {e}")))?
        };
        match attempt {
            // sled reports the lock conflict only as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}
