//! Pure MVCC apply logic: evaluates a [`Txn`] against the current key-values and computes the
//! writes, the watch events and the result, without touching storage.
//!
//! Rules (etcd's): one transaction that changes anything takes exactly one new revision
//! (`current + 1`); a transaction that changes nothing (only gets, failed deletes) keeps the
//! revision. Later ops in a transaction see the writes of earlier ones. A put naming a lease that
//! does not exist refuses the whole transaction (etcd checks the branch that runs). Every key
//! whose lease changes (attached by a put with a lease, detached by an overwrite or a delete) is
//! reported so the caller can keep its lease index. This module must stay free of I/O so it can
//! be tested exhaustively; the state machine feeds it a [`LeaseRead`].

use std::collections::BTreeMap;

use crate::key_range::KeyRange;
use crate::lease::{LeaseId, NO_LEASE};
use crate::model::{
    Compare, CompareOp, CompareTarget, DeleteRangeResult, DeleteResult, EventKind, KeyValue,
    PutResult, Refusal, Txn, TxnOp, TxnOpResult, TxnResult, WatchEvent,
};

/// Read access to the committed key-values, as of before the transaction.
pub(crate) trait KvRead {
    /// The reader's failure type.
    type Error;
    /// The current value of `key`, if present.
    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Self::Error>;
    /// The current key-values in `range`, sorted by key.
    fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>, Self::Error>;
}

/// Read access to the committed key-values and the lease table, as of before the transaction.
pub(crate) trait LeaseRead: KvRead {
    /// Whether lease `id` exists.
    fn lease_exists(&self, id: LeaseId) -> Result<bool, Self::Error>;
}

/// The key-values in `range` as the transaction sees them: `reader`'s state with the
/// transaction's own earlier writes (`overlay`) on top.
fn range_with_overlay<R: KvRead>(
    reader: &R,
    overlay: &BTreeMap<Vec<u8>, Option<KeyValue>>,
    range: &KeyRange,
) -> Result<Vec<KeyValue>, R::Error> {
    let mut seen: BTreeMap<Vec<u8>, KeyValue> = reader
        .range(range)?
        .into_iter()
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    for (key, staged) in overlay.range(range.bounds()) {
        match staged {
            Some(kv) => seen.insert(key.clone(), kv.clone()),
            None => seen.remove(key),
        };
    }
    Ok(seen.into_values().collect())
}

/// The final state of one key after a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KvWrite {
    /// Store this key-value under its key.
    Put(KeyValue),
    /// Remove this key.
    Delete(Vec<u8>),
}

/// Everything a transaction does, to be persisted atomically by the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    /// What goes back to the client.
    pub result: TxnResult,
    /// The final state of every key the transaction changed, in key order.
    pub writes: Vec<KvWrite>,
    /// The events of this revision, in op order (empty if nothing changed).
    pub events: Vec<WatchEvent>,
    /// The store revision after the transaction.
    pub revision: i64,
    /// A compaction requested by the transaction (see [`TxnOp::Compact`]); the caller decides
    /// whether it applies and patches the [`TxnOpResult::Compact`] result.
    pub compact: Option<i64>,
    /// Keys newly attached to a lease, in key order.
    pub attached: LeaseLinks,
    /// Keys no longer attached to the lease they had (overwritten or deleted), in key order.
    pub detached: LeaseLinks,
}

/// Keys with the lease they are (or were) attached to, as (lease, key).
pub(crate) type LeaseLinks = Vec<(LeaseId, Vec<u8>)>;

/// The staged writes of a transaction, with each touched key's lease before the transaction.
#[derive(Default)]
struct Staged {
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    original_lease: BTreeMap<Vec<u8>, LeaseId>,
}

impl Staged {
    /// Stages `after` for `key`, whose state as the transaction saw it was `before`.
    fn stage(&mut self, key: &[u8], before: Option<&KeyValue>, after: Option<KeyValue>) {
        if !self.overlay.contains_key(key) {
            // Not staged before, so `before` is the committed state.
            self.original_lease
                .insert(key.to_vec(), before.map_or(NO_LEASE, |kv| kv.lease));
        }
        self.overlay.insert(key.to_vec(), after);
    }

    /// The (lease, key) pairs attached and detached by the staged writes.
    fn lease_changes(&self) -> (LeaseLinks, LeaseLinks) {
        let (mut attached, mut detached) = (Vec::new(), Vec::new());
        for (key, staged) in &self.overlay {
            let old = self.original_lease.get(key).copied().unwrap_or(NO_LEASE);
            let new = staged.as_ref().map_or(NO_LEASE, |kv| kv.lease);
            if old != new {
                if old != NO_LEASE {
                    detached.push((old, key.clone()));
                }
                if new != NO_LEASE {
                    attached.push((new, key.clone()));
                }
            }
        }
        (attached, detached)
    }
}

/// Whether all of `txn`'s compares hold and the branch that runs. Compares always read the
/// committed state (`reader`), also for nested transactions: etcd evaluates every compare of the
/// path before any op runs.
fn branch<'t, R: KvRead>(reader: &R, txn: &'t Txn) -> Result<(bool, &'t [TxnOp]), R::Error> {
    for compare in &txn.compares {
        let actual = reader.get(&compare.key)?;
        if !compare_holds(actual.as_ref(), compare) {
            return Ok((false, &txn.failure));
        }
    }
    Ok((true, &txn.success))
}

/// The first lease named by a put in `ops` (or in the branches of nested transactions that
/// will run) that does not exist, if any.
fn missing_lease<R: LeaseRead>(reader: &R, ops: &[TxnOp]) -> Result<Option<LeaseId>, R::Error> {
    for op in ops {
        match op {
            TxnOp::PutWithLease { lease, .. }
                if *lease != NO_LEASE && !reader.lease_exists(*lease)? =>
            {
                return Ok(Some(*lease));
            }
            TxnOp::Txn(inner) => {
                let (_, ops) = branch(reader, inner)?;
                if let Some(lease) = missing_lease(reader, ops)? {
                    return Ok(Some(lease));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Applies `txn` on top of `reader`'s state at `current_revision`. The outer error is the
/// reader's; the inner one a refusal that leaves everything unchanged.
pub(crate) fn apply_txn<R: LeaseRead>(
    reader: &R,
    current_revision: i64,
    txn: &Txn,
) -> Result<Result<Applied, Refusal>, R::Error> {
    let new_revision = current_revision + 1;
    let (succeeded, ops) = branch(reader, txn)?;
    if let Some(lease) = missing_lease(reader, ops)? {
        return Ok(Err(Refusal::LeaseNotFound { lease }));
    }
    let mut run = Run {
        reader,
        new_revision,
        staged: Staged::default(),
        events: Vec::new(),
        compact: None,
    };
    let mut responses = run.ops(ops)?;
    let Run {
        staged,
        events,
        compact,
        ..
    } = run;

    let changed = !events.is_empty();
    let revision = if changed {
        new_revision
    } else {
        current_revision
    };
    patch_revisions(&mut responses, revision, new_revision);
    let (attached, detached) = if changed {
        staged.lease_changes()
    } else {
        (Vec::new(), Vec::new())
    };
    let writes = staged
        .overlay
        .into_iter()
        .map(|(key, staged)| match staged {
            Some(kv) => KvWrite::Put(kv),
            None => KvWrite::Delete(key),
        })
        .collect();
    Ok(Ok(Applied {
        result: TxnResult {
            succeeded,
            revision,
            responses,
        },
        writes: if changed { writes } else { Vec::new() },
        events,
        revision,
        compact,
        attached,
        detached,
    }))
}

/// One transaction being applied: the committed state and what the ops so far staged.
struct Run<'r, R> {
    reader: &'r R,
    new_revision: i64,
    staged: Staged,
    events: Vec<WatchEvent>,
    compact: Option<i64>,
}

impl<R: LeaseRead> Run<'_, R> {
    /// `key` as the transaction sees it: staged by an earlier op, else committed.
    fn lookup(&self, key: &[u8]) -> Result<Option<KeyValue>, R::Error> {
        match self.staged.overlay.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.reader.get(key),
        }
    }

    /// Runs `ops` in order and returns their results (delete revisions still unpatched).
    fn ops(&mut self, ops: &[TxnOp]) -> Result<Vec<TxnOpResult>, R::Error> {
        let new_revision = self.new_revision;
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Put { key, value } => {
                    let prev = self.lookup(key)?;
                    stage_put(
                        &mut self.staged,
                        &mut self.events,
                        new_revision,
                        prev,
                        key,
                        value,
                        NO_LEASE,
                    )
                }
                TxnOp::PutWithLease { key, value, lease } => {
                    let prev = self.lookup(key)?;
                    stage_put(
                        &mut self.staged,
                        &mut self.events,
                        new_revision,
                        prev,
                        key,
                        value,
                        *lease,
                    )
                }
                TxnOp::Delete { key } => {
                    let prev = self.lookup(key)?;
                    if let Some(p) = &prev {
                        self.staged.stage(key, Some(p), None);
                        self.events.push(delete_event(key, new_revision, p.clone()));
                    }
                    // The revision is patched once we know whether anything changed.
                    TxnOpResult::Delete(DeleteResult { revision: 0, prev })
                }
                TxnOp::Get { key } => TxnOpResult::Get(self.lookup(key)?),
                TxnOp::Range { key, range_end } => {
                    let range = KeyRange::new(key.clone(), range_end.clone());
                    TxnOpResult::Range(range_with_overlay(
                        self.reader,
                        &self.staged.overlay,
                        &range,
                    )?)
                }
                TxnOp::Compact { revision } => {
                    self.compact = Some(*revision);
                    TxnOpResult::Compact {
                        compact_revision: 0,
                    }
                }
                TxnOp::DeleteRange { key, range_end } => {
                    let range = KeyRange::new(key.clone(), range_end.clone());
                    let deleted = range_with_overlay(self.reader, &self.staged.overlay, &range)?;
                    for prev in &deleted {
                        self.staged.stage(&prev.key, Some(prev), None);
                        self.events
                            .push(delete_event(&prev.key, new_revision, prev.clone()));
                    }
                    TxnOpResult::DeleteRange(DeleteRangeResult {
                        revision: 0,
                        deleted,
                    })
                }
                TxnOp::Txn(inner) => {
                    let (succeeded, ops) = branch(self.reader, inner)?;
                    let responses = self.ops(ops)?;
                    TxnOpResult::Txn(TxnResult {
                        succeeded,
                        revision: 0,
                        responses,
                    })
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

/// Fills in the revisions only known once the whole transaction ran: `revision` is the store
/// revision afterwards, `new_revision` the one a change took.
fn patch_revisions(responses: &mut [TxnOpResult], revision: i64, new_revision: i64) {
    for response in responses {
        match response {
            TxnOpResult::Delete(d) => {
                d.revision = if d.prev.is_some() {
                    new_revision
                } else {
                    revision
                };
            }
            TxnOpResult::DeleteRange(d) => {
                d.revision = if d.deleted.is_empty() {
                    revision
                } else {
                    new_revision
                };
            }
            TxnOpResult::Txn(nested) => {
                nested.revision = revision;
                patch_revisions(&mut nested.responses, revision, new_revision);
            }
            _ => {}
        }
    }
}

/// Stages a put of `value` to `key` (last seen as `prev`) attached to `lease` at `revision`, with
/// its event; returns the op's result.
fn stage_put(
    staged: &mut Staged,
    events: &mut Vec<WatchEvent>,
    revision: i64,
    prev: Option<KeyValue>,
    key: &[u8],
    value: &[u8],
    lease: LeaseId,
) -> TxnOpResult {
    let kv = KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
        mod_revision: revision,
        version: prev.as_ref().map_or(1, |p| p.version + 1),
        lease,
    };
    staged.stage(key, prev.as_ref(), Some(kv.clone()));
    events.push(WatchEvent {
        kind: EventKind::Put,
        kv,
        prev_kv: prev.clone(),
    });
    TxnOpResult::Put(PutResult { revision, prev })
}

/// The event of deleting `key` (whose last state was `prev`) at `revision`.
fn delete_event(key: &[u8], revision: i64, prev: KeyValue) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: NO_LEASE,
        },
        prev_kv: Some(prev),
    }
}

/// Whether `compare` holds for the key's current state `actual`.
///
/// An absent key has revisions and version 0. Like etcd, a value compare on an absent key never
/// holds: there is no way to tell "missing" from "empty".
pub(crate) fn compare_holds(actual: Option<&KeyValue>, compare: &Compare) -> bool {
    let ordering = match (&compare.target, actual) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(expected), Some(kv)) => kv.value.as_slice().cmp(expected.as_slice()),
        (CompareTarget::ModRevision(expected), kv) => {
            kv.map_or(0, |k| k.mod_revision).cmp(expected)
        }
        (CompareTarget::CreateRevision(expected), kv) => {
            kv.map_or(0, |k| k.create_revision).cmp(expected)
        }
        (CompareTarget::Version(expected), kv) => kv.map_or(0, |k| k.version).cmp(expected),
        (CompareTarget::Lease(expected), kv) => kv.map_or(NO_LEASE, |k| k.lease).cmp(expected),
    };
    match compare.op {
        CompareOp::Equal => ordering.is_eq(),
        CompareOp::NotEqual => ordering.is_ne(),
        CompareOp::Greater => ordering.is_gt(),
        CompareOp::Less => ordering.is_lt(),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// An in-memory committed state for exercising the pure logic.
    #[derive(Default)]
    struct Mem {
        kvs: BTreeMap<Vec<u8>, KeyValue>,
        revision: i64,
        leases: std::collections::BTreeSet<LeaseId>,
    }

    impl LeaseRead for Mem {
        fn lease_exists(&self, id: LeaseId) -> Result<bool, Infallible> {
            Ok(self.leases.contains(&id))
        }
    }

    impl KvRead for Mem {
        type Error = Infallible;
        fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Infallible> {
            Ok(self.kvs.get(key).cloned())
        }
        fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>, Infallible> {
            Ok(self
                .kvs
                .range(range.bounds())
                .map(|(_, kv)| kv.clone())
                .collect())
        }
    }

    impl Mem {
        fn new() -> Self {
            Mem {
                kvs: BTreeMap::new(),
                revision: 1,
                leases: [7, 8].into(),
            }
        }
        fn try_run(&mut self, txn: Txn) -> Result<Applied, Refusal> {
            let Ok(applied) = apply_txn(self, self.revision, &txn);
            let applied = applied?;
            for w in &applied.writes {
                match w {
                    KvWrite::Put(kv) => {
                        self.kvs.insert(kv.key.clone(), kv.clone());
                    }
                    KvWrite::Delete(k) => {
                        self.kvs.remove(k);
                    }
                }
            }
            self.revision = applied.revision;
            Ok(applied)
        }
        fn run(&mut self, txn: Txn) -> Applied {
            self.try_run(txn).expect("refused")
        }
    }

    fn put(k: &str, v: &str) -> TxnOp {
        TxnOp::Put {
            key: k.into(),
            value: v.into(),
        }
    }
    fn put_leased(k: &str, v: &str, lease: LeaseId) -> TxnOp {
        TxnOp::PutWithLease {
            key: k.into(),
            value: v.into(),
            lease,
        }
    }
    fn del(k: &str) -> TxnOp {
        TxnOp::Delete { key: k.into() }
    }
    fn get(k: &str) -> TxnOp {
        TxnOp::Get { key: k.into() }
    }
    fn only(ops: Vec<TxnOp>) -> Txn {
        Txn {
            compares: vec![],
            success: ops,
            failure: vec![],
        }
    }

    #[test]
    fn put_creates_then_updates_with_versions() {
        let mut m = Mem::new();
        let a = m.run(only(vec![put("a", "1")]));
        assert_eq!(a.revision, 2);
        assert_eq!(m.kvs[b"a".as_slice()].create_revision, 2);
        assert_eq!(m.kvs[b"a".as_slice()].version, 1);
        let b = m.run(only(vec![put("a", "2")]));
        assert_eq!(b.revision, 3);
        let kv = &m.kvs[b"a".as_slice()];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        let TxnOpResult::Put(p) = &b.result.responses[0] else {
            panic!("not a put")
        };
        assert_eq!(
            p.prev.as_ref().map(|p| p.value.clone()),
            Some(b"1".to_vec())
        );
        assert_eq!(
            b.events[0].prev_kv.as_ref().map(|p| p.mod_revision),
            Some(2)
        );
    }

    #[test]
    fn one_txn_with_several_writes_takes_one_revision() {
        let mut m = Mem::new();
        let a = m.run(only(vec![put("a", "1"), put("b", "1"), get("a")]));
        assert_eq!(a.revision, 2);
        assert_eq!(a.events.len(), 2);
        assert!(a.events.iter().all(|e| e.kv.mod_revision == 2));
        // The get sees the put earlier in the same transaction.
        assert!(matches!(&a.result.responses[2], TxnOpResult::Get(Some(kv)) if kv.value == b"1"));
    }

    #[test]
    fn delete_of_missing_key_changes_nothing() {
        let mut m = Mem::new();
        m.run(only(vec![put("a", "1")]));
        let d = m.run(only(vec![del("zzz")]));
        assert_eq!(d.revision, 2);
        assert!(d.events.is_empty() && d.writes.is_empty());
        assert!(matches!(
            &d.result.responses[0],
            TxnOpResult::Delete(DeleteResult {
                revision: 2,
                prev: None
            })
        ));
    }

    #[test]
    fn delete_emits_event_with_delete_revision_and_recreate_resets_version() {
        let mut m = Mem::new();
        m.run(only(vec![put("a", "1")]));
        m.run(only(vec![put("a", "2")]));
        let d = m.run(only(vec![del("a")]));
        assert_eq!(d.revision, 4);
        assert_eq!(d.events[0].kind, EventKind::Delete);
        assert_eq!(d.events[0].kv.mod_revision, 4);
        assert!(d.events[0].kv.value.is_empty());
        assert_eq!(d.events[0].prev_kv.as_ref().map(|p| p.version), Some(2));
        assert!(!m.kvs.contains_key(b"a".as_slice()));
        m.run(only(vec![put("a", "3")]));
        let kv = &m.kvs[b"a".as_slice()];
        assert_eq!((kv.create_revision, kv.version), (5, 1));
    }

    #[test]
    fn delete_range_sees_earlier_writes_and_takes_one_revision() {
        let mut m = Mem::new();
        m.run(only(vec![
            put("/a/1", "x"),
            put("/a/2", "x"),
            put("/b", "x"),
        ])); // rev 2
        let d = m.run(only(vec![
            put("/a/3", "y"),
            TxnOp::DeleteRange {
                key: "/a/".into(),
                range_end: "/a0".into(),
            },
            TxnOp::Range {
                key: vec![0],
                range_end: vec![0],
            },
        ]));
        assert_eq!(d.revision, 3);
        let TxnOpResult::DeleteRange(dr) = &d.result.responses[1] else {
            panic!("not a delete range")
        };
        assert_eq!(dr.revision, 3);
        let keys: Vec<_> = dr.deleted.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            vec![b"/a/1".to_vec(), b"/a/2".to_vec(), b"/a/3".to_vec()]
        );
        assert!(matches!(&d.result.responses[2], TxnOpResult::Range(kvs) if kvs.len() == 1));
        assert_eq!(d.events.len(), 4);
        assert_eq!(m.kvs.len(), 1);
        let none = m.run(only(vec![TxnOp::DeleteRange {
            key: "/zz".into(),
            range_end: vec![0],
        }]));
        assert_eq!(none.revision, 3);
    }

    #[test]
    fn stale_mod_revision_takes_failure_branch() {
        let mut m = Mem::new();
        m.run(only(vec![put("a", "1")])); // rev 2
        m.run(only(vec![put("a", "2")])); // rev 3
        let stale = Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                target: CompareTarget::ModRevision(2),
                op: CompareOp::Equal,
            }],
            success: vec![put("a", "lost-update")],
            failure: vec![get("a")],
        };
        let r = m.run(stale);
        assert!(!r.result.succeeded);
        assert_eq!(r.revision, 3);
        assert!(
            matches!(&r.result.responses[0], TxnOpResult::Get(Some(kv)) if kv.mod_revision == 3)
        );
        assert_eq!(m.kvs[b"a".as_slice()].value, b"2");
    }

    #[test]
    fn compares_treat_absent_key_as_zero_but_never_match_value() {
        let cmp = |target, op| Compare {
            key: b"x".to_vec(),
            target,
            op,
        };
        assert!(compare_holds(
            None,
            &cmp(CompareTarget::CreateRevision(0), CompareOp::Equal)
        ));
        assert!(compare_holds(
            None,
            &cmp(CompareTarget::Version(1), CompareOp::Less)
        ));
        assert!(!compare_holds(
            None,
            &cmp(CompareTarget::Value(vec![]), CompareOp::Equal)
        ));
        assert!(!compare_holds(
            None,
            &cmp(CompareTarget::Value(vec![]), CompareOp::NotEqual)
        ));
        let kv = KeyValue {
            key: b"x".to_vec(),
            value: b"b".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 7,
        };
        assert!(compare_holds(
            Some(&kv),
            &cmp(CompareTarget::Value(b"a".to_vec()), CompareOp::Greater)
        ));
        assert!(compare_holds(
            Some(&kv),
            &cmp(CompareTarget::ModRevision(5), CompareOp::Equal)
        ));
        assert!(compare_holds(
            Some(&kv),
            &cmp(CompareTarget::ModRevision(4), CompareOp::NotEqual)
        ));
        assert!(compare_holds(
            Some(&kv),
            &cmp(CompareTarget::Version(4), CompareOp::Less)
        ));
        assert!(compare_holds(
            Some(&kv),
            &cmp(CompareTarget::Lease(7), CompareOp::Equal)
        ));
        assert!(compare_holds(
            None,
            &cmp(CompareTarget::Lease(0), CompareOp::Equal)
        ));
    }

    #[test]
    fn a_put_with_an_unknown_lease_refuses_the_whole_transaction() {
        let mut m = Mem::new();
        m.run(only(vec![put("a", "1")]));
        let refused = m.try_run(only(vec![put("b", "1"), put_leased("a", "2", 99)]));
        assert_eq!(refused, Err(Refusal::LeaseNotFound { lease: 99 }));
        assert_eq!(m.revision, 2);
        assert_eq!(m.kvs[b"a".as_slice()].value, b"1");
        assert!(!m.kvs.contains_key(b"b".as_slice()));
        // Only the branch that runs is checked, as in etcd.
        let unchecked = Txn {
            compares: vec![],
            success: vec![put("c", "1")],
            failure: vec![put_leased("c", "1", 99)],
        };
        assert!(m.try_run(unchecked).is_ok());
    }

    #[test]
    fn overwrites_and_deletes_move_keys_between_leases() {
        let mut m = Mem::new();
        let a = m.run(only(vec![
            put_leased("a", "1", 7),
            put_leased("b", "1", 7),
            put("c", "1"),
        ]));
        assert_eq!(a.attached, vec![(7, b"a".to_vec()), (7, b"b".to_vec())]);
        assert!(a.detached.is_empty());
        assert_eq!(m.kvs[b"a".as_slice()].lease, 7);
        // Re-attach a to 8, detach b by a plain put, attach c, then delete it again in the
        // same transaction (c ends as it started: no change).
        let b = m.run(only(vec![
            put_leased("a", "2", 8),
            put("b", "2"),
            put_leased("c", "2", 8),
            del("c"),
        ]));
        assert_eq!(b.attached, vec![(8, b"a".to_vec())]);
        assert_eq!(b.detached, vec![(7, b"a".to_vec()), (7, b"b".to_vec())]);
        assert_eq!(b.events[0].prev_kv.as_ref().map(|p| p.lease), Some(7));
        // Same lease again: nothing moves. A range delete detaches.
        let c = m.run(only(vec![put_leased("a", "3", 8)]));
        assert!(c.attached.is_empty() && c.detached.is_empty());
        let d = m.run(only(vec![TxnOp::DeleteRange {
            key: vec![0],
            range_end: vec![0],
        }]));
        assert_eq!(d.detached, vec![(8, b"a".to_vec())]);
        assert_eq!(d.events.iter().map(|e| e.kv.lease).sum::<i64>(), 0);
    }

    #[test]
    fn nested_txn_compares_see_the_committed_state_and_ops_share_one_revision() {
        let mut m = Mem::new();
        m.run(only(vec![put("a", "1")])); // rev 2
        let is_one = |key: &str| Compare {
            key: key.into(),
            target: CompareTarget::Value(b"1".to_vec()),
            op: CompareOp::Equal,
        };
        // The outer put changes a to 2 first, yet the nested compare still sees a = 1 (etcd
        // evaluates every compare before any op), so the nested success branch runs; the
        // nested get sees the outer put.
        let nested = Txn {
            compares: vec![is_one("a")],
            success: vec![put("b", "x"), get("a")],
            failure: vec![put("b", "y")],
        };
        let r = m.run(only(vec![put("a", "2"), TxnOp::Txn(nested), del("zz")]));
        assert_eq!(r.revision, 3);
        assert!(r.events.iter().all(|e| e.kv.mod_revision == 3));
        let TxnOpResult::Txn(inner) = &r.result.responses[1] else {
            panic!("not a nested txn result: {:?}", r.result.responses[1])
        };
        assert!(inner.succeeded);
        assert_eq!(inner.revision, 3);
        assert!(matches!(&inner.responses[1], TxnOpResult::Get(Some(kv)) if kv.value == b"2"));
        assert!(matches!(
            &r.result.responses[2],
            TxnOpResult::Delete(DeleteResult {
                revision: 3,
                prev: None
            })
        ));
        assert_eq!(m.kvs[b"b".as_slice()].value, b"x");
        // A nested branch naming an unknown lease refuses the whole transaction.
        let leased = Txn {
            compares: vec![],
            success: vec![put_leased("c", "1", 999)],
            failure: vec![],
        };
        assert_eq!(
            m.try_run(only(vec![put("d", "1"), TxnOp::Txn(leased)])),
            Err(Refusal::LeaseNotFound { lease: 999 })
        );
        assert!(!m.kvs.contains_key(b"d".as_slice()));
    }
}
