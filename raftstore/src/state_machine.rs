//! The MVCC state machine, persisted in sled: trees `kv` (key -> [`KeyValue`]), `events`
//! (revision, big-endian -> the revision's [`WatchEvent`]s), `sm_meta` (revision, last applied log
//! id, membership), `leases` (lease id -> [`Lease`]), `lease_keys` (lease id ++ key -> empty: the
//! keys attached to each lease) and `snapshot` (the current snapshot).
//!
//! Durability contract, kept here: every entry is applied in one sled transaction that writes the
//! key-values, the revision's history and the applied log id together, so a crash never leaves a
//! half-applied entry. `apply` does not fsync: every entry it applies is committed, so it is
//! already fsynced in the Raft log of a majority (see `log_store`), and the log is the source of
//! truth. After a crash the state machine reopens at the last applied log id sled persisted (a
//! consistent prefix: sled recovers whole transactions in order, and any later flush, such as the
//! next log append in the same database, persists everything applied before it) and openraft
//! re-applies the committed entries after it; applying is deterministic, so the same revisions,
//! responses and watch events result. The log is never purged past state that is not on disk:
//! purging follows a snapshot, and building one flushes. This is etcd's arrangement too (its
//! backend commits in the background and replays the WAL from the consistent index). A snapshot
//! install first persists the snapshot and a "restore pending" marker, so a crash half-way
//! through is finished on the next open.
//!
//! The MVCC rules themselves live in [`crate::mvcc`]; this module only does the I/O around them.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, Transactional};

use crate::batch_apply;
use crate::codec::{decode, encode, lease_key, lease_link_key, revision_key};
use crate::error::{Error, Result};
use crate::key_range::KeyRange;
use crate::lease::{Lease, LeaseId, NO_LEASE};
use crate::model::{KeyValue, RangeResult, Refusal, Txn, TxnOp, TxnOpResult, WatchEvent};
use crate::mvcc::{self, KvRead, KvWrite, LeaseLinks, LeaseRead};
use crate::types::{
    Entry, LogId, RaftRequest, RaftResponse, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use crate::watch::{WatchCursor, WatchHub, WatchStream, WATCH_CHANNEL_CAPACITY};

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
    /// The lease table; the lease index is rebuilt from the `lease` of `kvs`.
    leases: Vec<Lease>,
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
    leases: sled::Tree,
    /// The lease index: lease id ++ key for every key attached to a lease.
    lease_links: sled::Tree,
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

/// What a transaction is applied against: the key-values and the lease table.
struct ApplyView<'a> {
    kv: KvTree<'a>,
    leases: &'a sled::Tree,
}

impl KvRead for ApplyView<'_> {
    type Error = Error;
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.kv.get(key)
    }
    fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>> {
        self.kv.range(range)
    }
}

impl LeaseRead for ApplyView<'_> {
    fn lease_exists(&self, id: LeaseId) -> Result<bool> {
        Ok(id > NO_LEASE && self.leases.contains_key(lease_key(id))?)
    }
}

/// Everything one entry changes, persisted in one sled transaction.
#[derive(Default)]
struct EntryWrites {
    kvs: Vec<KvWrite>,
    events: Vec<WatchEvent>,
    /// The events of every revision a batch entry created (its `events` stay empty).
    history: Vec<RevisionEvents>,
    /// Lease table changes: the lease to store, or `None` to remove it.
    leases: Vec<(LeaseId, Option<Lease>)>,
    attached: LeaseLinks,
    detached: LeaseLinks,
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
            leases: db.open_tree("leases")?,
            lease_links: db.open_tree("lease_keys")?,
            hub: WatchHub::new(
                state.revision,
                state.compact_revision,
                WATCH_CHANNEL_CAPACITY,
            ),
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

    /// Index of the last log entry applied here (0: none). Ahead of openraft's metrics, which
    /// learn of an apply only when the core next publishes them.
    pub(crate) fn applied_index(&self) -> u64 {
        self.read_state().last_applied.map_or(0, |id| id.index)
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

    /// Lease `id`, if it exists.
    pub(crate) fn lease(&self, id: LeaseId) -> Result<Option<Lease>> {
        let _state = self.read_state();
        self.leases
            .get(lease_key(id))?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// Every lease, sorted by id.
    pub(crate) fn leases(&self) -> Result<Vec<Lease>> {
        let _state = self.read_state();
        self.leases.iter().map(|item| decode(&item?.1)).collect()
    }

    /// The keys attached to lease `id`, sorted.
    pub(crate) fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        let _state = self.read_state();
        self.attached_keys(id)
    }

    /// The keys attached to lease `id`, for callers that hold the state lock already.
    fn attached_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        self.lease_links
            .scan_prefix(lease_key(id))
            .map(|item| Ok(item?.0[8..].to_vec()))
            .collect()
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
        Ok(self
            .watch_cursor(prefix, None, start_revision)?
            .into_stream())
    }

    /// Starts a watch on the keys starting with `prefix` (and inside `range`, if given) from
    /// `start_revision` (<= 0: only changes after now).
    pub(crate) fn watch_cursor(
        &self,
        prefix: Vec<u8>,
        range: Option<KeyRange>,
        start_revision: i64,
    ) -> Result<WatchCursor> {
        // Registered under the state lock, so no snapshot install slips in between.
        let state = self.read_state();
        let start = if start_revision <= 0 {
            state.revision + 1
        } else {
            start_revision
        };
        WatchCursor::open(&self.hub, self.events.clone(), prefix, range, start)
    }

    /// Ends all watches with [`Error::Shutdown`].
    pub(crate) fn close_watchers(&self) {
        self.hub.close();
    }

    /// Applies one entry atomically; returns the response and the revision's events to publish.
    fn apply_entry(&self, entry: Entry) -> Result<(RaftResponse, Vec<RevisionEvents>)> {
        let state = self.write_state();
        let mut next = state.clone();
        next.last_applied = Some(entry.log_id);
        let mut response = RaftResponse::default();
        let mut changes = EntryWrites::default();
        let mut compacted_events = Vec::new();
        match entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(membership) => {
                next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
            }
            EntryPayload::Normal(RaftRequest::LeaseGrant { id, ttl }) => {
                response = self.grant_lease(id, ttl, &mut changes)?;
            }
            EntryPayload::Normal(RaftRequest::LeaseRevoke { id }) => {
                response = self.revoke_lease(id, &mut next, &mut changes)?;
            }
            EntryPayload::Normal(RaftRequest::Batch(txns)) => {
                let batch = batch_apply::apply_batch(
                    &self.apply_view(),
                    state.revision,
                    state.compact_revision,
                    &txns,
                )?;
                next.revision = batch.revision;
                changes.kvs = batch.writes;
                changes.history = batch.history;
                changes.attached = batch.attached;
                changes.detached = batch.detached;
                response = RaftResponse::Batch(batch.responses);
            }
            EntryPayload::Normal(RaftRequest::Txn(txn)) => {
                let applied = match mvcc::apply_txn(&self.apply_view(), state.revision, &txn)? {
                    Ok(applied) => applied,
                    Err(refusal) => {
                        return self.persist(
                            state,
                            next,
                            changes,
                            &[],
                            RaftResponse::Refused(refusal),
                        );
                    }
                };
                next.revision = applied.revision;
                changes.kvs = applied.writes;
                changes.events = applied.events;
                changes.attached = applied.attached;
                changes.detached = applied.detached;
                let mut result = applied.result;
                if let Some(target) = applied.compact {
                    if target > next.compact_revision && target <= next.revision {
                        next.compact_revision = target;
                        // Like etcd, the compaction revision's own events stay: watching from
                        // it still works. Replaying watchers learn of the deletion first.
                        self.hub.note_compaction(target);
                        // History is only written under this lock, so the scan is stable.
                        for item in self.events.range(..revision_key(target)) {
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
                response = RaftResponse::Txn(result);
            }
        }
        self.persist(state, next, changes, &compacted_events, response)
    }

    /// The view transactions are applied against.
    fn apply_view(&self) -> ApplyView<'_> {
        ApplyView {
            kv: KvTree(&self.kv),
            leases: &self.leases,
        }
    }

    /// Applies a lease grant: records the lease unless its id is taken.
    fn grant_lease(
        &self,
        id: LeaseId,
        ttl: i64,
        changes: &mut EntryWrites,
    ) -> Result<RaftResponse> {
        // The leader never proposes an id <= 0 (0 means "no lease"); refuse one all the same
        // rather than record a lease no key could name.
        if id <= NO_LEASE || self.apply_view().lease_exists(id)? {
            return Ok(RaftResponse::Refused(Refusal::LeaseExists { lease: id }));
        }
        changes.leases.push((id, Some(Lease { id, ttl })));
        tracing::debug!(lease = id, ttl, "lease granted");
        Ok(RaftResponse::LeaseGranted { id, ttl })
    }

    /// Applies a lease revoke: deletes the lease and every key attached to it at one revision
    /// (a lease without keys leaves the revision as it is).
    fn revoke_lease(
        &self,
        id: LeaseId,
        next: &mut SmState,
        changes: &mut EntryWrites,
    ) -> Result<RaftResponse> {
        let view = self.apply_view();
        if !view.lease_exists(id)? {
            return Ok(RaftResponse::Refused(Refusal::LeaseNotFound { lease: id }));
        }
        // Called under the state write lock, so not `lease_keys`.
        let deletes = self
            .attached_keys(id)?
            .into_iter()
            .map(|key| TxnOp::Delete { key })
            .collect();
        let txn = Txn {
            compares: vec![],
            success: deletes,
            failure: vec![],
        };
        let applied = match mvcc::apply_txn(&view, next.revision, &txn)? {
            Ok(applied) => applied,
            // Deletes name no lease; nothing to refuse.
            Err(refusal) => return Ok(RaftResponse::Refused(refusal)),
        };
        next.revision = applied.revision;
        changes.kvs = applied.writes;
        changes.events = applied.events;
        changes.detached = applied.detached;
        changes.leases.push((id, None));
        tracing::debug!(
            lease = id,
            keys = changes.events.len(),
            revision = next.revision,
            "lease revoked"
        );
        Ok(RaftResponse::LeaseRevoked {
            revision: next.revision,
        })
    }

    /// Persists one applied entry atomically and swaps in its state; returns `response` and the
    /// revision's events to publish.
    fn persist(
        &self,
        mut state: RwLockWriteGuard<'_, SmState>,
        next: SmState,
        changes: EntryWrites,
        compacted_events: &[sled::IVec],
        response: RaftResponse,
    ) -> Result<(RaftResponse, Vec<RevisionEvents>)> {
        let EntryWrites {
            kvs: writes,
            events,
            history,
            leases,
            attached,
            detached,
        } = changes;
        let mut encoded_leases = Vec::with_capacity(leases.len());
        for (id, lease) in &leases {
            encoded_leases.push((lease_key(*id), lease.as_ref().map(encode).transpose()?));
        }
        let mut links: Vec<(Vec<u8>, bool)> = detached
            .iter()
            .map(|(id, key)| (lease_link_key(*id, key), false))
            .collect();
        links.extend(
            attached
                .iter()
                .map(|(id, key)| (lease_link_key(*id, key), true)),
        );
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
        let encoded_history = history
            .iter()
            .map(|(revision, events)| Ok((revision_key(*revision), encode(events)?)))
            .collect::<Result<Vec<_>>>()?;
        let encoded_state = encode(&next)?;
        let trees = (
            &self.kv,
            &self.events,
            &self.meta,
            &self.leases,
            &self.lease_links,
        );
        trees.transaction(|(kv, ev, meta, lease_tree, link_tree)| {
            for (key, value) in &encoded_writes {
                match value {
                    Some(value) => kv.insert(key.as_slice(), value.as_slice())?,
                    None => kv.remove(key.as_slice())?,
                };
            }
            for key in compacted_events {
                ev.remove(key)?;
            }
            for (key, lease) in &encoded_leases {
                match lease {
                    Some(lease) => lease_tree.insert(key, lease.as_slice())?,
                    None => lease_tree.remove(key)?,
                };
            }
            for (link, attach) in &links {
                if *attach {
                    link_tree.insert(link.as_slice(), &[])?;
                } else {
                    link_tree.remove(link.as_slice())?;
                }
            }
            if let Some(encoded) = &encoded_events {
                ev.insert(&revision_key(next.revision), encoded.as_slice())?;
            }
            for (key, encoded) in &encoded_history {
                ev.insert(key, encoded.as_slice())?;
            }
            meta.insert(STATE_KEY, encoded_state.as_slice())?;
            Ok::<_, ConflictableTransactionError<sled::Error>>(())
        })?;
        let revision = next.revision;
        *state = next;
        let mut published = history;
        if !events.is_empty() {
            published.push((revision, events));
        }
        Ok((response, published))
    }

    fn stored_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        self.snapshot
            .get(CURRENT_SNAPSHOT_KEY)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// A consistent copy of the whole state machine (taken under the state lock), encoded as a
    /// snapshot payload, with the revision and compaction revision it was taken at. Nothing
    /// is stored: this is what a backup carries (see `crate::backup`).
    pub(crate) fn backup_payload(&self) -> Result<(i64, i64, Vec<u8>)> {
        let (payload, _meta) = self.capture()?;
        Ok((
            payload.state.revision,
            payload.state.compact_revision,
            encode(&payload)?,
        ))
    }

    fn build_snapshot(&self) -> Result<Snapshot<TypeConfig>> {
        let (payload, meta) = self.capture()?;
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

    /// The whole state machine content and its snapshot metadata, read under the state lock.
    fn capture(&self) -> Result<(SnapshotPayload, SnapshotMeta)> {
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
            let leases = self
                .leases
                .iter()
                .map(|item| decode(&item?.1))
                .collect::<Result<Vec<Lease>>>()?;
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
                    leases,
                },
                meta,
            )
        };
        Ok((payload, meta))
    }

    /// Replaces the whole state machine with `payload` (synchronously, under the write lock).
    fn restore(&self, meta: &SnapshotMeta, payload: &SnapshotPayload) -> Result<()> {
        let mut state = self.write_state();
        // Watchers end before their history is replaced under them.
        self.hub
            .reset(payload.state.revision, payload.state.compact_revision);
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
        self.leases.clear()?;
        self.lease_links.clear()?;
        let mut lease_batch = sled::Batch::default();
        for lease in &payload.leases {
            lease_batch.insert(&lease_key(lease.id), encode(lease)?);
        }
        self.leases.apply_batch(lease_batch)?;
        let mut link_batch = sled::Batch::default();
        for kv in payload.kvs.iter().filter(|kv| kv.lease != NO_LEASE) {
            link_batch.insert(lease_link_key(kv.lease, &kv.key), &[]);
        }
        self.lease_links.apply_batch(link_batch)?;
        self.meta.insert(STATE_KEY, encode(&next)?)?;
        *state = next;
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
        // No flush here: the entries are already fsynced in the Raft log (see the module doc).
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
            payload: EntryPayload::Normal(RaftRequest::Txn(txn)),
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

    fn entry(index: u64, request: RaftRequest) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(request),
        }
    }

    fn leased_put(index: u64, key: &str, lease: LeaseId) -> Entry {
        let txn = Txn {
            compares: vec![],
            success: vec![TxnOp::PutWithLease {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
            }],
            failure: vec![],
        };
        entry(index, RaftRequest::Txn(txn))
    }

    #[tokio::test]
    async fn leases_and_their_keys_travel_in_a_snapshot_and_a_revoke_there_deletes_the_keys(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (_db_a, mut a) = open_sm(&dir, "a")?;
        let responses = a
            .apply(vec![
                entry(1, RaftRequest::LeaseGrant { id: 7, ttl: 30 }),
                entry(2, RaftRequest::LeaseGrant { id: 7, ttl: 5 }),
                leased_put(3, "/l/1", 7),
                leased_put(4, "/l/2", 7),
                leased_put(5, "/l/3", 99),
                put_entry(6, "/l/2", "detached"),
            ])
            .await?;
        assert_eq!(responses[0], RaftResponse::LeaseGranted { id: 7, ttl: 30 });
        assert_eq!(
            responses[1],
            RaftResponse::Refused(Refusal::LeaseExists { lease: 7 })
        );
        assert_eq!(
            responses[4],
            RaftResponse::Refused(Refusal::LeaseNotFound { lease: 99 })
        );
        // Grants and refusals take no revision: two leased puts and one plain put.
        assert_eq!(a.shared.revision(), 4);
        assert_eq!(a.shared.lease_keys(7)?, vec![b"/l/1".to_vec()]);
        let snapshot = a.build_snapshot().await?;

        let (_db_b, mut b) = open_sm(&dir, "b")?;
        b.install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await?;
        assert_eq!(b.shared.leases()?, vec![Lease { id: 7, ttl: 30 }]);
        assert_eq!(b.shared.lease_keys(7)?, vec![b"/l/1".to_vec()]);
        assert_eq!(b.shared.get(b"/l/1")?.map(|kv| kv.lease), Some(7));
        let mut watch = b.shared.watch(b"/l/".to_vec(), 0)?;
        let revoked = b
            .apply(vec![
                entry(7, RaftRequest::LeaseRevoke { id: 7 }),
                entry(8, RaftRequest::LeaseRevoke { id: 7 }),
            ])
            .await?;
        assert_eq!(revoked[0], RaftResponse::LeaseRevoked { revision: 5 });
        assert_eq!(
            revoked[1],
            RaftResponse::Refused(Refusal::LeaseNotFound { lease: 7 })
        );
        let event = watch.next().await.transpose()?;
        assert_eq!(
            event.map(|e| (e.kind, e.kv.key, e.kv.mod_revision)),
            Some((crate::model::EventKind::Delete, b"/l/1".to_vec(), 5))
        );
        assert!(b.shared.get(b"/l/1")?.is_none());
        assert!(b.shared.get(b"/l/2")?.is_some());
        assert!(b.shared.leases()?.is_empty() && b.shared.lease_keys(7)?.is_empty());
        Ok(())
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
