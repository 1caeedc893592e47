//! The public [`Store`] handle: opens sled, starts openraft (and, for a cluster member, the
//! peer service), and turns the KV API into Raft writes and linearizable reads.
//!
//! Writes return only after the entry is committed, applied and flushed; on a follower they are
//! forwarded to the leader (see `store_cluster`). Reads first obtain a read index (from this
//! member if it leads, else from the leader) and wait until it is applied here. This module
//! holds no data itself.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use openraft::metrics::WaitError;

use crate::cluster::{self, ClusterConfig, RaftTuning};

use crate::error::{Error, Result};
use crate::forward_batch::ForwardBatcher;
use crate::key_range::KeyRange;
use crate::lease::LeaseId;
use crate::lease_keeper::{ExpiryTask, Lessor};
use crate::log_store::LogStore;
use crate::member_agent;
use crate::model::{
    DeleteResult, KeyValue, PutResult, RangeResult, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::network::{PeerChannels, PeerNetworkFactory};
use crate::peer_service::PeerServer;
use crate::proposal::initial_nodes;
use crate::read_index::ReadIndex;
use crate::state_machine::{SmShared, StateMachineStore};
use crate::types::{Node, NodeId, Raft, RaftRequest, RaftResponse};
use crate::watch::{WatchCursor, WatchStream};
use crate::wire::{Proposal, ProposalOutcome};
use crate::write_batch::WriteBatcher;

/// How long [`Store::open`] waits for this member to become leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Store::open`] waits for a just-closed sled instance to release its lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`Store::shutdown`] waits for openraft's tasks to release the storage.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// sled's page cache, in bytes (sled's default is 1 GiB). The hot data (current key-values,
/// the log tail, recent history) fits in far less; a larger cache only keeps old history pages
/// resident, so memory grew with every write until the default was reached. Measured with
/// `raftstore-bench`: resident memory after its load fell from 240-308 MiB to about 120 MiB
/// per member, with put throughput no lower.
pub(crate) const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

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
    /// Batched read-index rounds for linearizable reads.
    pub(crate) reads: ReadIndex,
    /// Groups this member's transactions into batch entries while it leads.
    pub(crate) writes: Arc<WriteBatcher>,
    /// Groups this member's transactions into forwarded batches while another member leads.
    pub(crate) forwards: Arc<ForwardBatcher>,
    server: tokio::sync::Mutex<Option<PeerServer>>,
    peer_addr: Option<std::net::SocketAddr>,
    /// The member agent of a cluster member (publishing, promoting); stopped on shutdown.
    agent: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set once this member learns that it was removed from the cluster.
    pub(crate) removed: tokio::sync::watch::Sender<bool>,
    /// This member's lease deadlines (used while it leads) and lease id generator.
    pub(crate) lessor: Arc<Lessor>,
    /// Revokes expired leases while this member leads; taken by `shutdown`.
    expiry: tokio::sync::Mutex<Option<ExpiryTask>>,
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
            raft.initialize(initial_nodes([(cfg.node_id, Node::default())]))
                .await?;
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
    /// members; a member with [`ClusterConfig::join`] asks the running cluster to add it (and
    /// returns once it is added as a learner; the leader promotes it when it has caught up);
    /// restarts keep vote, log and state from disk. Once running, the member publishes its name
    /// and client URLs in the membership. Returns without waiting for a leader (the other
    /// members may not run yet): see [`Store::wait_for_leader`].
    pub async fn open_cluster_on(
        cfg: ClusterConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Store> {
        let store = start(cfg.node_id, &cfg.data_dir, &cfg.tuning, Some(listener)).await?;
        if let Err(e) = store.bootstrap(&cfg).await {
            // Release the directory and the port before reporting.
            if let Err(stop) = store.shutdown().await {
                tracing::warn!(node = cfg.node_id, error = %stop, "stopping after a failed start");
            }
            return Err(e);
        }
        *store
            .inner
            .agent
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(member_agent::spawn(
            &store,
            cfg.name.clone(),
            cfg.client_urls.clone(),
        ));
        tracing::info!(node = cfg.node_id, name = %cfg.name, peer_url = %cfg.advertise_peer_url, "cluster member started");
        Ok(store)
    }

    /// Initialises a new cluster or joins a running one, as this start requires.
    async fn bootstrap(&self, cfg: &ClusterConfig) -> Result<()> {
        let initialized = self.inner.raft.is_initialized().await?;
        if cluster::should_initialize(cfg, initialized) {
            tracing::info!(
                node = cfg.node_id,
                members = cfg.initial_cluster.len(),
                "initialising new cluster"
            );
            let nodes = initial_nodes(cfg.initial_members());
            self.inner.raft.initialize(nodes).await?;
        }
        if let Some(url) = cluster::should_join(cfg, initialized) {
            self.join_via(url, cfg.member(true)).await?;
        }
        Ok(())
    }

    /// This member's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The address the peer service is bound to (`None` for a single-member store).
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.peer_addr
    }

    /// Writes `value` under `key` (detaching it from any lease it had).
    pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<PutResult> {
        match self.single(TxnOp::Put { key, value }).await? {
            TxnOpResult::Put(put) => Ok(put),
            _ => Err(Error::UnexpectedResponse("put did not return a put result")),
        }
    }

    /// Writes `value` under `key` attached to `lease` (0: none), so revoking or expiring the
    /// lease deletes the key. Fails with [`Error::LeaseNotFound`] if the lease does not exist.
    pub async fn put_with_lease(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<PutResult> {
        match self
            .single(TxnOp::PutWithLease { key, value, lease })
            .await?
        {
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
    /// forwarded to the leader (see [`Store::propose`] for the retry rules). A put naming a
    /// lease that does not exist fails the whole transaction with [`Error::LeaseNotFound`].
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        match self.propose(Proposal::Write(RaftRequest::Txn(txn))).await? {
            ProposalOutcome::Write(RaftResponse::Txn(result)) => Ok(result),
            ProposalOutcome::Write(RaftResponse::Refused(refusal)) => Err(refusal.into()),
            _ => Err(Error::UnexpectedResponse("txn did not return a txn result")),
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
        Ok(self.watch_cursor(range, start_revision)?.into_stream())
    }

    /// Like [`Store::watch_range`], as a cursor that can also tell when it has caught up (for
    /// etcd's progress notifications).
    pub(crate) fn watch_cursor(&self, range: KeyRange, start_revision: i64) -> Result<WatchCursor> {
        self.check_open()?;
        self.inner
            .sm
            .watch_cursor(range.common_prefix(), Some(range), start_revision)
    }

    /// Drops the history before `revision` through the Raft log (every member compacts at the
    /// same point; `revision` itself stays readable and watchable, as in etcd) and returns the
    /// compaction revision now in force. Fails with [`Error::Compacted`] if `revision` is
    /// already compacted and [`Error::FutureRevision`] if the store has not reached it.
    pub async fn compact(&self, revision: i64) -> Result<i64> {
        let compacted = self.compact_revision();
        if revision <= compacted {
            return Err(Error::Compacted {
                compact_revision: compacted,
            });
        }
        let mut current = self.revision();
        if revision > current {
            // A follower may trail the leader: catch up before calling the revision future.
            self.linearize().await?;
            current = self.revision();
        }
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
        if let Some(expiry) = self.inner.expiry.lock().await.take() {
            expiry.stop().await;
        }
        let agent = self
            .inner
            .agent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(agent) = agent {
            agent.abort();
            let _ = agent.await;
        }
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
    let db_path = sled_dir(data_dir);
    std::fs::create_dir_all(&db_path).map_err(|source| Error::DataDir {
        path: db_path.clone(),
        source,
    })?;
    let db = open_db(db_path).await?;
    check_identity(&db, node_id)?;
    let log_store = LogStore::open(&db)?;
    let log = log_store.clone();
    let state_machine = StateMachineStore::open(&db)?;
    let sm = state_machine.shared();
    let lessor = Arc::new(Lessor::new(node_id, tuning.election_timeout_max, &sm));
    let channels = PeerChannels::default();
    let raft = Raft::new(
        node_id,
        Arc::new(tuning.to_openraft()?),
        PeerNetworkFactory::new(channels.clone()),
        log_store,
        state_machine,
    )
    .await?;
    let reads = ReadIndex::new(node_id, raft.clone(), channels.clone());
    let writes = WriteBatcher::new(node_id, raft.clone());
    let forwards = ForwardBatcher::new(node_id, raft.clone(), channels.clone());
    let server = listener
        .map(|l| {
            let (lessor, reads, writes) = (lessor.clone(), reads.clone(), writes.clone());
            PeerServer::start(raft.clone(), lessor, reads, writes, node_id, l)
        })
        .transpose()?;
    let expiry = ExpiryTask::spawn(raft.clone(), sm.clone(), lessor.clone());
    Ok(Store {
        inner: Arc::new(StoreInner {
            node_id,
            raft,
            sm,
            log,
            db,
            shut_down: AtomicBool::new(false),
            agent: std::sync::Mutex::new(None),
            removed: tokio::sync::watch::Sender::new(false),
            channels,
            reads,
            writes,
            forwards,
            peer_addr: server.as_ref().map(|s| s.addr),
            server: tokio::sync::Mutex::new(server),
            lessor,
            expiry: tokio::sync::Mutex::new(Some(expiry)),
        }),
    })
}

/// Records which member a data directory belongs to on its first start and refuses to open it
/// as another member later (e.g. started with a different peer URL, hence a different id): Raft
/// state written as one member must never be reused as another.
fn check_identity(db: &sled::Db, node_id: NodeId) -> Result<()> {
    let tree = db.open_tree("member")?;
    match tree.get("id")? {
        Some(bytes) => {
            let recorded = <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Corrupt("member id record is not 8 bytes"))?;
            if recorded != node_id {
                return Err(Error::InvalidConfig(format!(
                    "the data directory belongs to member {recorded:x}, but this configuration \
                     makes it member {node_id:x} (a different peer URL?); start it with its \
                     original peer URL or use an empty data directory"
                )));
            }
        }
        None => {
            tree.insert("id", &node_id.to_be_bytes())?;
            tree.flush()?;
        }
    }
    Ok(())
}

/// Where a member's sled database lives inside its data directory.
pub(crate) fn sled_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("sled")
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
            tokio::task::spawn_blocking(move || {
                sled::Config::new()
                    .path(path)
                    .cache_capacity(SLED_CACHE_BYTES)
                    .open()
            })
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
