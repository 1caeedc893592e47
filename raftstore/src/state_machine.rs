//! The MVCC state machine, persisted in sled: trees `kv` (key -> [`KeyValue`]), `events`
//! (revision, big-endian -> the revision's [`WatchEvent`]s), `sm_meta` (revision, last applied log
//! id, membership) and `snapshot` (the current snapshot).
//!
//! Durability contract, kept here: every entry is applied in one sled transaction that writes the
//! key-values, the revision's history and the applied log id together, so a crash never leaves a
//! half-applied entry. `apply` flushes sled before it returns, so no client response and no watch
//! event goes out before the state machine is on disk. Readers may see an entry a moment before
//! that flush; this is safe because the entry is already committed in the (flushed) Raft log and
//! would be re-applied after a crash. A snapshot install first persists the snapshot and a
//! "restore pending" marker, so a crash half-way through is finished on the next open.
//!
//! The MVCC rules themselves live in [`crate::mvcc`]; this module only does the I/O around them.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

use crate::codec::{decode, encode, revision_key};
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::model::{KeyValue, RangeResult, TxnOpResult, WatchEvent};
use crate::mvcc::{self, KvRead, KvWrite};
use crate::types::{
    Entry, LogId, RaftResponse, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::watch::{self, WatchHub, WatchStream, WATCH_CHANNEL_CAPACITY};

const STATE_KEY: &[u8] = b"state";
const RESTORE_PENDING_KEY: &[u8] = b"restore_pending";
const CURRENT_SNAPSHOT_KEY: &[u8] = b"current";

/// The revision of an empty store, as in etcd.
pub const INITIAL_REVISION: i64 = 1;

/// The state-machine-wide counters, persisted under `sm_meta/state` with every applied entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SmState {
    revision: i64,
    compact_revision: i64,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl SmState {
    fn initial() -> Self {
        SmState {
            revision: INITIAL_REVISION,
            compact_revision: 0,
            last_applied: None,
            last_membership: StoredMembership::default(),
        }
    }
}

/// The full state machine content as shipped in a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    state: SmState,
    kvs: Vec<KeyValue>,
    events: Vec<(i64, Vec<WatchEvent>)>,
}

/// The sled-backed state machine given to openraft; cheap to clone (clones share state). It is
/// also its own snapshot builder.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<SmShared>,
}

/// State shared between the openraft state machine worker and the public read/watch path.
pub(crate) struct SmShared {
    db: sled::Db,
    kv: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    snapshot: sled::Tree,
    /// Writers (apply, install) hold it exclusively so readers see whole revisions.
    state: RwLock<SmState>,
    hub: WatchHub,
}

/// The events of one revision, waiting to be published once the apply batch is flushed.
type RevisionEvents = (i64, Vec<WatchEvent>);

struct KvTree<'a>(&'a sled::Tree);

impl KvRead for KvTree<'_> {
    type Error = Error;
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.0.get(key)?.map(|bytes| decode(&bytes)).transpose()
    }
    fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        if range.is_single() {
            return Ok(self.get(&range.key)?.into_iter().collect());
        }
        self.0
            .range::<Vec<u8>, _>(range.bounds())
            .map(|item| decode(&item?.1))
            .collect()
    }
}

impl StateMachineStore {
    /// Opens the state machine trees in `db`, finishing an interrupted snapshot install.
    pub fn open(db: &sled::Db) -> Result<Self> {
        let meta = db.open_tree("sm_meta")?;
        let state = match meta.get(STATE_KEY)? {
            Some(bytes) => decode(&bytes)?,
            None => SmState::initial(),
        };
        let shared = SmShared {
            db: db.clone(),
            kv: db.open_tree("kv")?,
            events: db.open_tree("events")?,
            meta,
            snapshot: db.open_tree("snapshot")?,
            hub: WatchHub::new(state.revision, WATCH_CHANNEL_CAPACITY),
            state: RwLock::new(state),
        };
        if shared.meta.contains_key(RESTORE_PENDING_KEY)? {
            tracing::warn!("finishing interrupted snapshot install");
            if let Some((meta, data)) = shared.stored_snapshot()? {
                shared.restore(&meta, &decode(&data)?)?;
            }
            shared.meta.remove(RESTORE_PENDING_KEY)?;
            shared.db.flush()?;
        }
        Ok(StateMachineStore {
            shared: Arc::new(shared),
        })
    }

    /// The handle the public store uses for reads and watches.
    pub(crate) fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }
}

impl SmShared {
    fn read_state(&self) -> RwLockReadGuard<'_, SmState> {
        // Writers only swap in fully computed values, so a poisoned lock still guards valid data.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, SmState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current applied revision.
    pub(crate) fn revision(&self) -> i64 {
        self.read_state().revision
    }

    /// The current value of `key` in the local state machine.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let _state = self.read_state();
        KvTree(&self.kv).get(key)
    }

    /// All keys starting with `prefix`, sorted, with the revision they were read at.
    pub(crate) fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResult> {
        let state = self.read_state();
        let kvs = self
            .kv
            .scan_prefix(prefix)
            .map(|item| {
                let (_key, bytes) = item?;
                decode(&bytes)
            })
            .collect::<Result<Vec<KeyValue>>>()?;
        Ok(RangeResult {
            kvs,
            revision: state.revision,
        })
    }

    /// The compaction revision (0: never compacted).
    pub(crate) fn compact_revision(&self) -> i64 {
        self.read_state().compact_revision
    }

    /// The key-values in `range` as of `revision` (<= 0: the current one), sorted by key, with
    /// the current store revision. Past states are rebuilt by undoing the newer history events
    /// (each carries the key's previous state), so they are exact back to the compaction point.
    pub(crate) fn range_at(&self, range: &KeyRange, revision: i64) -> Result<(Vec<KeyValue>, i64)> {
        let state = self.read_state();
        let current = state.revision;
        let kvs = KvTree(&self.kv).range(range)?;
        if revision <= 0 || revision == current {
            return Ok((kvs, current));
        }
        if revision > current {
            return Err(Error::FutureRevision { revision, current });
        }
        if revision < state.compact_revision {
            return Err(Error::Compacted {
                compact_revision: state.compact_revision,
            });
        }
        let mut at: std::collections::BTreeMap<Vec<u8>, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        let newer = self
            .events
            .range(revision_key(revision + 1)..=revision_key(current));
        for item in newer.rev() {
            let (_key, bytes) = item?;
            let events: Vec<WatchEvent> = decode(&bytes)?;
            for event in events.iter().rev().filter(|e| range.contains(&e.kv.key)) {
                match &event.prev_kv {
                    Some(prev) => at.insert(prev.key.clone(), prev.clone()),
                    None => at.remove(&event.kv.key),
                };
            }
        }
        Ok((at.into_values().collect(), current))
    }

    /// Starts a watch; see [`crate::Store::watch`].
    pub(crate) fn watch(&self, prefix: Vec<u8>, start_revision: i64) -> Result<WatchStream> {
        let (start, compact_revision) = {
            let state = self.read_state();
            let start = if start_revision <= 0 {
                state.revision + 1
            } else {
                start_revision
            };
            (start, state.compact_revision)
        };
        if start <= compact_revision {
            return Err(Error::Compacted { compact_revision });
        }
        let registration = self.hub.register(prefix.clone(), start);
        Ok(watch::watch_stream(
            self.events.clone(),
            prefix,
            start,
            registration,
        ))
    }

    /// Ends all watches with [`Error::Shutdown`].
    pub(crate) fn close_watchers(&self) {
        self.hub.close();
    }

    /// Flushes everything to disk.
    pub(crate) async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Applies one entry atomically; returns the response and the revision's events to publish.
    fn apply_entry(&self, entry: Entry) -> Result<(RaftResponse, Option<RevisionEvents>)> {
        let mut state = self.write_state();
        let mut next = state.clone();
        next.last_applied = Some(entry.log_id);
        let mut response = RaftResponse::default();
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let mut compacted_events = Vec::new();
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(membership) => {
                next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            EntryPayload::Normal(request) => {
                let applied = mvcc::apply_txn(&KvTree(&self.kv), state.revision, &request.txn)?;
                next.revision = applied.revision;
                writes = applied.writes;
                events = applied.events;
                let mut result = applied.result;
                if let Some(target) = applied.compact {
                    if target > next.compact_revision && target <= next.revision {
                        next.compact_revision = target;
                        // History is only written under this lock, so the scan is stable.
                        for item in self.events.range(..=revision_key(target)) {
                            compacted_events.push(item?.0);
                        }
                        tracing::info!(compact_revision = target, "compacted history");
                    }
                    for r in &mut result.responses {
                        if let TxnOpResult::Compact { compact_revision } = r {
                            *compact_revision = next.compact_revision;
                        }
                    }
                }
                response.txn = Some(result);
            }
        }

        let mut encoded_writes = Vec::with_capacity(writes.len());
        for write in &writes {
            match write {
                KvWrite::Put(kv) => encoded_writes.push((kv.key.clone(), Some(encode(kv)?))),
                KvWrite::Delete(key) => encoded_writes.push((key.clone(), None)),
            }
        }
        let encoded_events = if events.is_empty() {
            None
        } else {
            Some(encode(&events)?)
        };
        let encoded_state = encode(&next)?;
        (&self.kv, &self.events, &self.meta).transaction(|(kv, ev, meta)| {
            for (key, value) in &encoded_writes {
                match value {
                    Some(value) => kv.insert(key.as_slice(), value.as_slice())?,
                    None => kv.remove(key.as_slice())?,
                };
            }
            for key in &compacted_events {
                ev.remove(key)?;
            }
            if let Some(encoded) = &encoded_events {
                ev.insert(&revision_key(next.revision), encoded.as_slice())?;
            }
            meta.insert(STATE_KEY, encoded_state.as_slice())?;
            Ok::<_, ConflictableTransactionError<sled::Error>>(())
        })?;
        let revision = next.revision;
        *state = next;
        Ok((response, (!events.is_empty()).then_some((revision, events))))
    }

    fn stored_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.snapshot
            .get(CURRENT_SNAPSHOT_KEY)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn build_snapshot(&self) -> Result<Snapshot<TypeConfig>> {
        let (payload, meta) = {
            let state = self.read_state();
            let kvs = self
                .kv
                .iter()
                .map(|item| decode(&item?.1))
                .collect::<Result<Vec<KeyValue>>>()?;
            let events = self
                .events
                .iter()
                .map(|item| {
                    let (key, bytes) = item?;
                    let revision = key
                        .as_ref()
                        .try_into()
                        .map(i64::from_be_bytes)
                        .map_err(|_| Error::Corrupt("malformed events key"))?;
                    Ok((revision, decode(&bytes)?))
                })
                .collect::<Result<Vec<_>>>()?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let snapshot_id = match &state.last_applied {
                Some(id) => format!("{}-{}-{nanos}", id.leader_id, id.index),
                None => format!("empty-{nanos}"),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.last_membership.clone(),
                snapshot_id,
            };
            (
                SnapshotPayload {
                    state: state.clone(),
                    kvs,
                    events,
                },
                meta,
            )
        };
        let data = encode(&payload)?;
        self.snapshot
            .insert(CURRENT_SNAPSHOT_KEY, encode(&(&meta, &data))?)?;
        self.db.flush()?;
        tracing::info!(revision = payload.state.revision, snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    /// Replaces the whole state machine with `payload` (synchronously, under the write lock).
    fn restore(&self, meta: &SnapshotMeta, payload: &SnapshotPayload) -> Result<()> {
        let mut state = self.write_state();
        let mut next = payload.state.clone();
        next.last_applied = meta.last_log_id;
        next.last_membership = meta.last_membership.clone();
        self.kv.clear()?;
        self.events.clear()?;
        let mut kv_batch = sled::Batch::default();
        for kv in &payload.kvs {
            kv_batch.insert(kv.key.as_slice(), encode(kv)?);
        }
        self.kv.apply_batch(kv_batch)?;
        let mut events_batch = sled::Batch::default();
        for (revision, events) in &payload.events {
            events_batch.insert(&revision_key(*revision), encode(events)?);
        }
        self.events.apply_batch(events_batch)?;
        self.meta.insert(STATE_KEY, encode(&next)?)?;
        let revision = next.revision;
        *state = next;
        drop(state);
        self.hub.reset(revision);
        Ok(())
    }

    async fn install_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<()> {
        let payload: SnapshotPayload = decode(&data)?;
        self.snapshot
            .insert(CURRENT_SNAPSHOT_KEY, encode(&(meta, &data))?)?;
        self.meta.insert(RESTORE_PENDING_KEY, &[1u8])?;
        self.db.flush_async().await?;
        self.restore(meta, &payload)?;
        self.meta.remove(RESTORE_PENDING_KEY)?;
        self.db.flush_async().await?;
        tracing::info!(revision = payload.state.revision, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> std::result::Result<Snapshot<TypeConfig>, StorageError> {
        self.shared
            .build_snapshot()
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> std::result::Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.read_state();
        Ok((state.last_applied, state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> std::result::Result<Vec<RaftResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut to_publish = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let (response, published) = self
                .shared
                .apply_entry(entry)
                .map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?;
            responses.push(response);
            to_publish.extend(published);
        }
        self.shared
            .flush()
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_state_machine(&e)))?;
        for (revision, events) in &to_publish {
            self.shared.hub.publish(*revision, events);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> std::result::Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> std::result::Result<(), StorageError> {
        self.shared
            .install_snapshot(meta, snapshot.into_inner())
            .await
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> std::result::Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .shared
            .stored_snapshot()
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::model::{Txn, TxnOp};
    use crate::types::RaftRequest;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn put_entry(index: u64, key: &str, value: &str) -> Entry {
        let txn = Txn {
            compares: vec![],
            success: vec![TxnOp::Put {
                key: key.into(),
                value: value.into(),
            }],
            failure: vec![],
        };
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(RaftRequest { txn }),
        }
    }

    fn open_sm(
        dir: &tempfile::TempDir,
        name: &str,
    ) -> anyhow::Result<(sled::Db, StateMachineStore)> {
        // sled releases the lock of a dropped instance from a background thread; retry briefly.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new().path(dir.path().join(name)).open() {
                Ok(db) => break db,
                Err(_) if attempts < 100 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let sm = StateMachineStore::open(&db)?;
        Ok((db, sm))
    }

    #[tokio::test]
    async fn snapshot_carries_kvs_revision_history_and_membership_to_another_member(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (_db_a, mut a) = open_sm(&dir, "a")?;
        let membership = Membership::new(vec![[1u64].into_iter().collect()], None);
        a.apply(vec![
            Entry {
                log_id: log_id(1),
                payload: EntryPayload::Membership(membership),
            },
            put_entry(2, "/x/1", "a"),
            put_entry(3, "/x/1", "b"),
            put_entry(4, "/x/2", "c"),
        ])
        .await?;
        assert_eq!(a.shared.revision(), 4);
        let snapshot = a.build_snapshot().await?;
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(4)));

        let (_db_b, mut b) = open_sm(&dir, "b")?;
        let mut watcher = b.shared.watch(b"/x/".to_vec(), 0)?;
        b.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await?;
        // Watchers cannot follow across a state jump; they are told to re-list.
        assert!(matches!(
            watcher.next().await,
            Some(Err(Error::Compacted {
                compact_revision: 4
            }))
        ));

        let (applied, stored_membership) = b.applied_state().await?;
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(stored_membership.log_id(), &Some(log_id(1)));
        assert_eq!(b.shared.revision(), 4);
        let kv = b
            .shared
            .get(b"/x/1")?
            .ok_or_else(|| anyhow::anyhow!("missing"))?;
        assert_eq!(
            (kv.value.as_slice(), kv.version, kv.mod_revision),
            (b"b".as_slice(), 2, 3)
        );
        let mut history = b.shared.watch(b"/x/".to_vec(), 2)?;
        let revisions = [
            history.next().await,
            history.next().await,
            history.next().await,
        ]
        .into_iter()
        .map(|e| e.and_then(|e| e.ok()).map(|e| e.kv.mod_revision))
        .collect::<Vec<_>>();
        assert_eq!(revisions, vec![Some(2), Some(3), Some(4)]);
        assert!(b.get_current_snapshot().await?.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn interrupted_snapshot_install_is_finished_on_next_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let snapshot = {
            let (_db, mut a) = open_sm(&dir, "a")?;
            a.apply(vec![put_entry(1, "/k", "v")]).await?;
            a.build_snapshot().await?
        };
        {
            // Simulate a crash right after the snapshot and the marker were persisted.
            let (db, _b) = open_sm(&dir, "b")?;
            let snapshots = db.open_tree("snapshot")?;
            snapshots.insert(
                CURRENT_SNAPSHOT_KEY,
                encode(&(&snapshot.meta, snapshot.snapshot.get_ref()))?,
            )?;
            db.open_tree("sm_meta")?
                .insert(RESTORE_PENDING_KEY, &[1u8])?;
            db.flush()?;
        }
        let (db, mut b) = open_sm(&dir, "b")?;
        assert_eq!(b.applied_state().await?.0, Some(log_id(1)));
        assert_eq!(b.shared.get(b"/k")?.map(|kv| kv.value), Some(b"v".to_vec()));
        assert!(!db.open_tree("sm_meta")?.contains_key(RESTORE_PENDING_KEY)?);
        Ok(())
    }
}
