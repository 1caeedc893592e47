//! The Raft log and vote, persisted in sled (trees `raft_log` and `raft_meta`).
//!
//! Durability contract, kept here:
//! - `append` writes the entries in one atomic sled batch, then flushes sled to disk, and only then
//!   calls the `LogFlushed` callback. An entry is never reported as persisted before fsync.
//! - `save_vote` flushes before it returns.
//! - `truncate` and `purge` flush before they return, so removed entries cannot come back after a
//!   crash (purge records `last_purged` first, so a crash in between never leaves a hole).
//! - `save_committed` is not flushed: it is an optimisation that lets a restart re-apply committed
//!   entries earlier; losing it only delays that until the leader commits again.
//!
//! This module owns the log only; it must not touch the state machine trees.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogId, RaftLogReader, StorageIOError, Vote};

use crate::codec::{decode, encode, index_key};
use crate::error::Result;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// The sled-backed Raft log store; cheap to clone (clones share the same trees).
#[derive(Clone, Debug)]
pub struct LogStore {
    inner: Arc<LogStoreInner>,
}

#[derive(Debug)]
struct LogStoreInner {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    /// Opens the log trees in `db`.
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(LogStore {
            inner: Arc::new(LogStoreInner {
                db: db.clone(),
                log: db.open_tree("raft_log")?,
                meta: db.open_tree("raft_meta")?,
            }),
        })
    }

    /// Whether other clones (e.g. openraft's log readers) are still alive.
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }
}

impl LogStoreInner {
    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.meta.get(key)?.map(|bytes| decode(&bytes)).transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<()> {
        self.meta.insert(key, encode(value)?)?;
        Ok(())
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(index_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range::<[u8; 8], _>((start, end))
            .map(|item| {
                let (_key, bytes) = item?;
                decode(&bytes)
            })
            .collect()
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.get_meta(LAST_PURGED_KEY)?;
        let last_entry: Option<Entry> = self
            .log
            .last()?
            .map(|(_key, bytes)| decode(&bytes))
            .transpose()?;
        let last_log_id = last_entry.map(|e| *e.get_log_id()).or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.get_log_id().index), encode(&entry)?);
        }
        self.log.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Removes entries with index in `range`, then flushes.
    async fn remove(&self, range: impl RangeBounds<[u8; 8]>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(range) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.log.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        self.inner
            .entries(range)
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<TypeConfig>, StorageError> {
        self.inner
            .log_state()
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> std::result::Result<(), StorageError> {
        let res = async {
            self.inner.put_meta(VOTE_KEY, vote)?;
            self.inner.db.flush_async().await?;
            Ok::<_, crate::Error>(())
        };
        res.await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> std::result::Result<Option<Vote<NodeId>>, StorageError> {
        self.inner
            .get_meta(VOTE_KEY)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> std::result::Result<(), StorageError> {
        self.inner
            .put_meta(COMMITTED_KEY, &committed)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> std::result::Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> = self
            .inner
            .get_meta(COMMITTED_KEY)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> std::result::Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        match self.inner.append(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "log append failed");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "truncating raft log");
        self.inner
            .remove(index_key(log_id.index)..)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> std::result::Result<(), StorageError> {
        tracing::debug!(index = log_id.index, "purging raft log");
        let res = async {
            self.inner.put_meta(LAST_PURGED_KEY, &log_id)?;
            self.inner.remove(..=index_key(log_id.index)).await
        };
        res.await.map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
