//! The public [`Store`] handle: opens sled, starts openraft, and turns the KV API into Raft
//! writes and linearizable local reads.
//!
//! Writes go through `Raft::client_write` and return only after the entry is committed, applied
//! and flushed. Reads first confirm leadership with `ensure_linearizable` (read index), then read
//! the local state machine. This module holds no data itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::metrics::WaitError;

use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::model::{
    DeleteResult, KeyValue, PutResult, RangeResult, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::network::PeerNetworkFactory;
use crate::state_machine::{SmShared, StateMachineStore};
use crate::types::{Node, NodeId, Raft, RaftRequest};
use crate::watch::WatchStream;

/// How long [`Store::open`] waits for this member to become leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Store::open`] waits for a just-closed sled instance to release its lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`Store::shutdown`] waits for openraft's tasks to release the storage.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom a store runs.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This member's Raft id.
    pub node_id: u64,
    /// Directory holding the sled database (created if missing).
    pub data_dir: PathBuf,
}

/// A cheap, cloneable handle to the running store. Call [`Store::shutdown`] before dropping the
/// last handle: openraft's tasks keep running (and keep the directory locked) until then.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    node_id: NodeId,
    raft: Raft,
    sm: Arc<SmShared>,
    /// Kept to see when openraft has released its clones (see `shutdown`).
    log: LogStore,
    db: sled::Db,
    shut_down: AtomicBool,
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
    /// Opens or creates the store in `data_dir`; on first start initialises a one-member cluster;
    /// returns once this member is leader and has applied everything committed before.
    pub async fn open(cfg: StoreConfig) -> Result<Store> {
        let db_path = cfg.data_dir.join("sled");
        std::fs::create_dir_all(&db_path).map_err(|source| Error::DataDir {
            path: db_path.clone(),
            source,
        })?;
        let db = open_db(db_path).await?;
        let log_store = LogStore::open(&db)?;
        let log = log_store.clone();
        let state_machine = StateMachineStore::open(&db)?;
        let sm = state_machine.shared();

        let config = openraft::Config {
            cluster_name: "capstan".to_string(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::RaftSetup(e.to_string()))?;
        let raft = Raft::new(
            cfg.node_id,
            Arc::new(config),
            PeerNetworkFactory,
            log_store,
            state_machine,
        )
        .await?;

        if !raft.is_initialized().await? {
            tracing::info!(node = cfg.node_id, "initialising one-member cluster");
            let members = BTreeMap::from([(cfg.node_id, Node::default())]);
            raft.initialize(members).await?;
        }
        raft.wait(Some(LEADER_TIMEOUT))
            .current_leader(cfg.node_id, "store open: become leader")
            .await
            .map_err(|e| match e {
                WaitError::Timeout(waited, _) => Error::Timeout {
                    what: "leadership",
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                },
                WaitError::ShuttingDown => Error::Shutdown,
            })?;
        // Wait until everything committed before this start is applied, so reads and
        // `revision()` reflect it.
        raft.ensure_linearizable().await?;
        let store = Store {
            inner: Arc::new(StoreInner {
                node_id: cfg.node_id,
                raft,
                sm,
                log,
                db,
                shut_down: AtomicBool::new(false),
            }),
        };
        tracing::info!(
            node = cfg.node_id,
            resource_version = store.revision(),
            "store ready"
        );
        Ok(store)
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
        self.linearize().await?;
        self.inner.sm.get(key)
    }

    /// Reads all keys starting with `prefix` linearizably, sorted by key.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResult> {
        self.linearize().await?;
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

    /// Runs a compare-then-act transaction atomically at one revision.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.check_open()?;
        let response = self.inner.raft.client_write(RaftRequest { txn }).await?;
        response
            .data
            .txn
            .ok_or(Error::UnexpectedResponse("normal entry without txn result"))
    }

    /// Events for keys starting with `prefix` with `mod_revision >= start_revision`, in revision
    /// order, none lost or duplicated; `start_revision` 0 means only changes after now. The stream
    /// ends with an `Err` if the watcher falls too far behind, history is gone, or the store
    /// shuts down.
    pub async fn watch(&self, prefix: Vec<u8>, start_revision: i64) -> Result<WatchStream> {
        self.check_open()?;
        self.inner.sm.watch(prefix, start_revision)
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
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::RaftSetup(format!("raft shutdown: {e}")))?;
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

    async fn linearize(&self) -> Result<()> {
        self.check_open()?;
        self.inner.raft.ensure_linearizable().await?;
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.shut_down.load(Ordering::SeqCst) {
            return Err(Error::Shutdown);
        }
        Ok(())
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
