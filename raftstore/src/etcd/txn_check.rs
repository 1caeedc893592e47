//! The request checks etcd's KV server makes before a request reaches the store, with etcd's
//! error texts: keys must be given, a transaction has at most [`MAX_TXN_OPS`] operations per
//! branch, and no branch path may write a key twice (two puts, or a put inside a deleted range),
//! nested transactions included (etcd's `checkTxnRequest` and `checkIntervals`).
//!
//! Pure functions of the request; the store itself allows repeated writes in one transaction
//! (later ops see earlier ones), which Capstan's own callers rely on.

use std::collections::BTreeSet;

use tonic::Status;

use super::pb::{self, request_op::Request as R};
use crate::key_range::KeyRange;

/// etcd's default `--max-txn-ops`.
pub(super) const MAX_TXN_OPS: usize = 128;

/// Refuses an empty key, as etcd does for ranges, puts and deletes.
pub(super) fn require_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("etcdserver: key is not provided"));
    }
    Ok(())
}

fn duplicate_key() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

/// All of etcd's checks of a transaction request.
pub(super) fn check(req: &pb::TxnRequest) -> Result<(), Status> {
    check_request(req, MAX_TXN_OPS)?;
    // After the cheap checks, as etcd does, to avoid quadratic work on huge requests.
    intervals(&req.success)?;
    intervals(&req.failure)?;
    Ok(())
}

fn check_request(req: &pb::TxnRequest, max_ops: usize) -> Result<(), Status> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(Status::invalid_argument(
            "etcdserver: too many operations in txn request",
        ));
    }
    for compare in &req.compare {
        require_key(&compare.key)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(R::RequestRange(r)) => require_key(&r.key)?,
            Some(R::RequestPut(p)) => require_key(&p.key)?,
            Some(R::RequestDeleteRange(d)) => require_key(&d.key)?,
            Some(R::RequestTxn(t)) => check_request(t, max_ops - ops)?,
            None => return Err(Status::invalid_argument("etcdserver: key not found")),
        }
    }
    Ok(())
}

/// The keys put and the ranges deleted by `ops` (nested transactions included), or the
/// duplicate-key error if a path writes a key twice.
fn intervals(ops: &[pb::RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Vec<KeyRange>), Status> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(R::RequestDeleteRange(d)) => {
                Some(KeyRange::new(d.key.clone(), d.range_end.clone()))
            }
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], key: &[u8]| dels.iter().any(|r| r.contains(key));
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(R::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = intervals(&t.success)?;
        let (puts_else, dels_else) = intervals(&t.failure)?;
        for key in &puts_then {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(duplicate_key());
            }
            puts.insert(key.clone());
        }
        for key in puts_else {
            // The two branches of one transaction never both run.
            if (puts.contains(&key) && !puts_then.contains(&key)) || deleted(&dels, &key) {
                return Err(duplicate_key());
            }
            puts.insert(key);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(R::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(duplicate_key());
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(R::RequestPut(pb::PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    fn del(key: &str, range_end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(R::RequestDeleteRange(pb::DeleteRangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(R::RequestTxn(pb::TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn txn(success: Vec<pb::RequestOp>) -> pb::TxnRequest {
        pb::TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    fn is_duplicate(r: Result<(), Status>) -> bool {
        matches!(r, Err(s) if s.message() == "etcdserver: duplicate key given in txn request")
    }

    #[test]
    fn a_path_may_not_write_a_key_twice() {
        assert!(check(&txn(vec![put("a"), put("b")])).is_ok());
        assert!(is_duplicate(check(&txn(vec![put("a"), put("a")]))));
        assert!(is_duplicate(check(&txn(vec![del("a", "c"), put("b")]))));
        assert!(check(&txn(vec![del("a", "c"), put("c")])).is_ok());
        // Then and else of one nested transaction never both run.
        assert!(check(&txn(vec![nested(vec![put("a")], vec![put("a")])])).is_ok());
        assert!(is_duplicate(check(&txn(vec![
            nested(vec![put("a")], vec![]),
            put("a")
        ]))));
        assert!(is_duplicate(check(&txn(vec![
            nested(vec![del("a", "")], vec![]),
            put("a")
        ]))));
        assert!(is_duplicate(check(&txn(vec![
            del("a", "b"),
            nested(vec![put("a")], vec![])
        ]))));
    }

    #[test]
    fn keys_are_required_and_branches_are_bounded() {
        let empty = txn(vec![put("")]);
        assert!(
            matches!(check(&empty), Err(s) if s.message() == "etcdserver: key is not provided")
        );
        let many = txn((0..=MAX_TXN_OPS).map(|i| put(&i.to_string())).collect());
        assert!(matches!(
            check(&many),
            Err(s) if s.message() == "etcdserver: too many operations in txn request"
        ));
        let blank = txn(vec![pb::RequestOp { request: None }]);
        assert!(check(&blank).is_err());
    }
}
