//! Pure MVCC apply logic: evaluates a [`Txn`] against the current key-values and computes the
//! writes, the watch events and the result, without touching storage.
//!
//! Rules (etcd's): one transaction that changes anything takes exactly one new revision
//! (`current + 1`); a transaction that changes nothing (only gets, failed deletes) keeps the
//! revision. Later ops in a transaction see the writes of earlier ones. This module must stay free
//! of I/O so it can be tested exhaustively; the state machine feeds it a [`KvRead`].

use std::collections::BTreeMap;

use crate::key_range::KeyRange;
use crate::model::{
    Compare, CompareOp, CompareTarget, DeleteRangeResult, DeleteResult, EventKind, KeyValue,
    PutResult, Txn, TxnOp, TxnOpResult, TxnResult, WatchEvent,
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
}

/// Applies `txn` on top of `reader`'s state at `current_revision`.
pub(crate) fn apply_txn<R: KvRead>(
    reader: &R,
    current_revision: i64,
    txn: &Txn,
) -> Result<Applied, R::Error> {
    let new_revision = current_revision + 1;
    let mut overlay: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
    let lookup = |overlay: &BTreeMap<Vec<u8>, Option<KeyValue>>, key: &[u8]| match overlay.get(key)
    {
        Some(staged) => Ok(staged.clone()),
        None => reader.get(key),
    };

    let mut succeeded = true;
    for compare in &txn.compares {
        let actual = reader.get(&compare.key)?;
        if !compare_holds(actual.as_ref(), compare) {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };

    let mut events = Vec::new();
    let mut compact = None;
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            TxnOp::Put { key, value } => {
                let prev = lookup(&overlay, key)?;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(new_revision, |p| p.create_revision),
                    mod_revision: new_revision,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                };
                overlay.insert(key.clone(), Some(kv.clone()));
                events.push(WatchEvent {
                    kind: EventKind::Put,
                    kv,
                    prev_kv: prev.clone(),
                });
                responses.push(TxnOpResult::Put(PutResult {
                    revision: new_revision,
                    prev,
                }));
            }
            TxnOp::Delete { key } => {
                let prev = lookup(&overlay, key)?;
                if let Some(p) = &prev {
                    overlay.insert(key.clone(), None);
                    events.push(delete_event(key, new_revision, p.clone()));
                }
                // The revision is patched below once we know whether anything changed.
                responses.push(TxnOpResult::Delete(DeleteResult { revision: 0, prev }));
            }
            TxnOp::Get { key } => responses.push(TxnOpResult::Get(lookup(&overlay, key)?)),
            TxnOp::Range { key, range_end } => {
                let range = KeyRange::new(key.clone(), range_end.clone());
                responses.push(TxnOpResult::Range(range_with_overlay(
                    reader, &overlay, &range,
                )?));
            }
            TxnOp::Compact { revision } => {
                compact = Some(*revision);
                responses.push(TxnOpResult::Compact {
                    compact_revision: 0,
                });
            }
            TxnOp::DeleteRange { key, range_end } => {
                let range = KeyRange::new(key.clone(), range_end.clone());
                let deleted = range_with_overlay(reader, &overlay, &range)?;
                for prev in &deleted {
                    overlay.insert(prev.key.clone(), None);
                    events.push(delete_event(&prev.key, new_revision, prev.clone()));
                }
                responses.push(TxnOpResult::DeleteRange(DeleteRangeResult {
                    revision: 0,
                    deleted,
                }));
            }
        }
    }

    let changed = !events.is_empty();
    let revision = if changed {
        new_revision
    } else {
        current_revision
    };
    for response in &mut responses {
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
            _ => {}
        }
    }
    let writes = overlay
        .into_iter()
        .map(|(key, staged)| match staged {
            Some(kv) => KvWrite::Put(kv),
            None => KvWrite::Delete(key),
        })
        .collect();
    Ok(Applied {
        result: TxnResult {
            succeeded,
            revision,
            responses,
        },
        writes: if changed { writes } else { Vec::new() },
        events,
        revision,
        compact,
    })
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
            }
        }
        fn run(&mut self, txn: Txn) -> Applied {
            let Ok(applied) = apply_txn(self, self.revision, &txn);
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
            applied
        }
    }

    fn put(k: &str, v: &str) -> TxnOp {
        TxnOp::Put {
            key: k.into(),
            value: v.into(),
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
    }
}
