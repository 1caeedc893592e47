//! Applying a [`RaftRequest::Batch`](crate::RaftRequest::Batch): several transactions of one
//! log entry, in order, each at its own revision, exactly as if each had had its own entry.
//!
//! Each transaction reads the committed state with the batch's earlier writes on top, so a
//! later put to the same key sees the earlier one (version, create revision, previous value).
//! The result is what the state machine persists in one sled transaction: the final state of
//! every touched key, each revision's events, and the net lease attachments. Pure: all I/O is
//! the caller's (`state_machine`).

use std::collections::BTreeMap;

use crate::key_range::KeyRange;
use crate::lease::LeaseId;
use crate::model::{KeyValue, Txn, TxnOpResult, WatchEvent};
use crate::mvcc::{self, KvRead, KvWrite, LeaseRead};
use crate::types::RaftResponse;

/// What a batch changes, for the state machine to persist atomically.
#[derive(Debug, Default)]
pub(crate) struct BatchApplied {
    /// One response per transaction, in order.
    pub responses: Vec<RaftResponse>,
    /// The store revision after the batch.
    pub revision: i64,
    /// The final state of every key the batch changed, in key order.
    pub writes: Vec<KvWrite>,
    /// The events of each revision the batch created, in revision order.
    pub history: Vec<(i64, Vec<WatchEvent>)>,
    /// Keys attached to a lease after the batch that were not before, as (lease, key).
    pub attached: Vec<(LeaseId, Vec<u8>)>,
    /// Keys detached from a lease by the batch, as (lease, key).
    pub detached: Vec<(LeaseId, Vec<u8>)>,
}

/// The committed state with the batch's earlier writes on top.
struct Overlay<'a, R> {
    base: &'a R,
    pending: &'a BTreeMap<Vec<u8>, Option<KeyValue>>,
}

impl<R: KvRead> KvRead for Overlay<'_, R> {
    type Error = R::Error;

    fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, R::Error> {
        match self.pending.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.base.get(key),
        }
    }

    fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>, R::Error> {
        let mut merged: BTreeMap<Vec<u8>, KeyValue> = self
            .base
            .range(range)?
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        for (key, staged) in self.pending.iter().filter(|(k, _)| range.contains(k)) {
            match staged {
                Some(kv) => merged.insert(key.clone(), kv.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_values().collect())
    }
}

impl<R: LeaseRead> LeaseRead for Overlay<'_, R> {
    fn lease_exists(&self, id: LeaseId) -> Result<bool, R::Error> {
        // Batches hold no grants or revokes: the lease table is the committed one.
        self.base.lease_exists(id)
    }
}

/// Applies `txns` in order on top of `reader` at `revision`. A transaction the MVCC rules
/// refuse changes nothing and gets [`RaftResponse::Refused`]; the others go on. Batches never
/// compact (compactions are proposed alone): a compaction that slipped in is answered with
/// `compact_revision`, the one in force, as a compaction that is out of range would be.
pub(crate) fn apply_batch<R: LeaseRead>(
    reader: &R,
    revision: i64,
    compact_revision: i64,
    txns: &[Txn],
) -> Result<BatchApplied, R::Error> {
    let mut pending: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
    let mut links: BTreeMap<(LeaseId, Vec<u8>), bool> = BTreeMap::new();
    let mut out = BatchApplied {
        revision,
        ..BatchApplied::default()
    };
    for txn in txns {
        let view = Overlay {
            base: reader,
            pending: &pending,
        };
        let applied = match mvcc::apply_txn(&view, out.revision, txn)? {
            Ok(applied) => applied,
            Err(refusal) => {
                out.responses.push(RaftResponse::Refused(refusal));
                continue;
            }
        };
        for write in applied.writes {
            match write {
                KvWrite::Put(kv) => pending.insert(kv.key.clone(), Some(kv)),
                KvWrite::Delete(key) => pending.insert(key, None),
            };
        }
        // Within one transaction detaching comes first (a key moved between leases).
        for link in applied.detached {
            links.insert(link, false);
        }
        for link in applied.attached {
            links.insert(link, true);
        }
        if applied.revision != out.revision {
            out.history.push((applied.revision, applied.events));
            out.revision = applied.revision;
        }
        let mut result = applied.result;
        for r in &mut result.responses {
            if let TxnOpResult::Compact {
                compact_revision: c,
            } = r
            {
                *c = compact_revision;
            }
        }
        out.responses.push(RaftResponse::Txn(result));
    }
    out.writes = pending
        .into_iter()
        .map(|(key, staged)| match staged {
            Some(kv) => KvWrite::Put(kv),
            None => KvWrite::Delete(key),
        })
        .collect();
    for (link, attached) in links {
        if attached {
            out.attached.push(link);
        } else {
            out.detached.push(link);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::convert::Infallible;

    use super::*;
    use crate::model::{Compare, CompareOp, CompareTarget, TxnOp};

    /// An in-memory committed state.
    #[derive(Default)]
    struct Mem {
        kvs: BTreeMap<Vec<u8>, KeyValue>,
        leases: BTreeSet<LeaseId>,
    }

    impl KvRead for Mem {
        type Error = Infallible;
        fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Infallible> {
            Ok(self.kvs.get(key).cloned())
        }
        fn range(&self, range: &KeyRange) -> Result<Vec<KeyValue>, Infallible> {
            Ok(self
                .kvs
                .values()
                .filter(|kv| range.contains(&kv.key))
                .cloned()
                .collect())
        }
    }

    impl LeaseRead for Mem {
        fn lease_exists(&self, id: LeaseId) -> Result<bool, Infallible> {
            Ok(self.leases.contains(&id))
        }
    }

    impl Mem {
        /// Applies `txns` one entry at a time, as the state machine did before batching.
        fn apply_one_by_one(&mut self, revision: i64, txns: &[Txn]) -> (i64, Vec<RaftResponse>) {
            let mut revision = revision;
            let mut responses = Vec::new();
            for txn in txns {
                match mvcc::apply_txn(&*self, revision, txn) {
                    Ok(Ok(applied)) => {
                        for w in applied.writes {
                            match w {
                                KvWrite::Put(kv) => self.kvs.insert(kv.key.clone(), kv),
                                KvWrite::Delete(key) => self.kvs.remove(&key),
                            };
                        }
                        revision = applied.revision;
                        responses.push(RaftResponse::Txn(applied.result));
                    }
                    Ok(Err(refusal)) => responses.push(RaftResponse::Refused(refusal)),
                    Err(never) => match never {},
                }
            }
            (revision, responses)
        }
    }

    fn put(key: &str, value: &str) -> Txn {
        Txn {
            compares: vec![],
            success: vec![TxnOp::Put {
                key: key.into(),
                value: value.into(),
            }],
            failure: vec![],
        }
    }

    #[test]
    fn a_batch_gives_the_same_responses_and_state_as_one_entry_per_transaction() {
        let cas = Txn {
            compares: vec![Compare {
                key: b"/a".to_vec(),
                target: CompareTarget::Version(1),
                op: CompareOp::Equal,
            }],
            success: vec![TxnOp::Put {
                key: b"/b".to_vec(),
                value: b"swapped".to_vec(),
            }],
            failure: vec![TxnOp::Range {
                key: b"/a".to_vec(),
                range_end: vec![],
            }],
        };
        let read_all = Txn {
            compares: vec![],
            success: vec![TxnOp::Range {
                key: b"/".to_vec(),
                range_end: b"0".to_vec(),
            }],
            failure: vec![],
        };
        let delete = Txn {
            compares: vec![],
            success: vec![TxnOp::Delete {
                key: b"/a".to_vec(),
            }],
            failure: vec![],
        };
        let with_missing_lease = Txn {
            compares: vec![],
            success: vec![TxnOp::PutWithLease {
                key: b"/c".to_vec(),
                value: b"x".to_vec(),
                lease: 77,
            }],
            failure: vec![],
        };
        let txns = vec![
            put("/a", "1"),
            cas.clone(),
            put("/a", "2"),
            cas,
            read_all,
            with_missing_lease,
            delete,
            put("/a", "3"),
        ];
        let mut expected = Mem::default();
        expected.kvs.insert(
            b"/z".to_vec(),
            KeyValue {
                key: b"/z".to_vec(),
                value: b"old".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                lease: 0,
            },
        );
        let committed = Mem {
            kvs: expected.kvs.clone(),
            leases: BTreeSet::new(),
        };
        let (revision, responses) = expected.apply_one_by_one(5, &txns);

        let Ok(batch) = apply_batch(&committed, 5, 0, &txns);
        assert_eq!(batch.responses, responses);
        assert_eq!(batch.revision, revision);
        let mut after = committed.kvs.clone();
        for w in &batch.writes {
            match w {
                KvWrite::Put(kv) => after.insert(kv.key.clone(), kv.clone()),
                KvWrite::Delete(key) => after.remove(key),
            };
        }
        assert_eq!(after, expected.kvs);
        // One history entry per revision created, in order, each with its own events.
        let revisions: Vec<i64> = batch.history.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (6..=revision).collect::<Vec<_>>());
        assert!(batch
            .history
            .iter()
            .all(|(r, events)| events.iter().all(|e| e.kv.mod_revision == *r)));
    }

    #[test]
    fn lease_attachments_are_netted_over_the_batch() {
        let with_lease = |key: &str, lease: LeaseId| Txn {
            compares: vec![],
            success: vec![TxnOp::PutWithLease {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
            }],
            failure: vec![],
        };
        let mut committed = Mem::default();
        committed.leases.insert(7);
        committed.leases.insert(8);
        // /a: attached, then overwritten without a lease. /b: moved from lease 7 to 8.
        let txns = vec![
            with_lease("/a", 7),
            put("/a", "plain"),
            with_lease("/b", 7),
            with_lease("/b", 8),
        ];
        let Ok(batch) = apply_batch(&committed, 1, 0, &txns);
        assert_eq!(batch.attached, vec![(8, b"/b".to_vec())]);
        assert_eq!(
            batch.detached,
            vec![(7, b"/a".to_vec()), (7, b"/b".to_vec())]
        );
        let leases: Vec<(Vec<u8>, LeaseId)> = batch
            .writes
            .iter()
            .filter_map(|w| match w {
                KvWrite::Put(kv) => Some((kv.key.clone(), kv.lease)),
                KvWrite::Delete(_) => None,
            })
            .collect();
        assert_eq!(leases, vec![(b"/a".to_vec(), 0), (b"/b".to_vec(), 8)]);
    }
}
