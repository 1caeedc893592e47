//! The etcd `KV` service: Range, Put, DeleteRange, Txn and Compact on top of [`Store`].
//!
//! Owns the translation between etcd's requests and the store's [`Txn`] model (nested
//! transactions included, after etcd's request checks in `txn_check`), and the etcd-side
//! presentation of ranges (sorting, limits, `keys_only`, `count_only`, revision filters), which
//! is pure and unit-tested here. Not supported: a range at a past revision inside a transaction
//! and compares over a key range (refused, never answered wrongly). A put with a lease
//! attaches the key to it (an unknown lease fails the request with etcd's "requested lease not
//! found").

use tonic::{Request, Response, Status};

use super::pb::{self, mvccpb, range_request::SortOrder, range_request::SortTarget};
use super::{header, status, txn_check, unsupported};
use crate::key_range::KeyRange;
use crate::model::{
    Compare, CompareOp, CompareTarget, KeyValue, Txn, TxnOp, TxnOpResult, TxnResult,
};
use crate::store::{ReadConsistency, Store};

pub(crate) struct KvService {
    pub(crate) store: Store,
}

/// A store key-value as etcd's `mvccpb.KeyValue`.
pub(crate) fn kv_to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// Applies a range request's filters, sort, limit and projections to the key-values of its
/// range (sorted by key), as etcd's `applierV3backend.Range` does: `count` is the number of keys
/// in the range before the revision filters and the limit; `count_only` returns no keys and
/// never `more`; ties keep key order in either sort direction.
fn present(req: &pb::RangeRequest, mut kvs: Vec<KeyValue>) -> (Vec<mvccpb::KeyValue>, bool, i64) {
    let count = i64::try_from(kvs.len()).unwrap_or(i64::MAX);
    if req.count_only {
        return (Vec::new(), false, count);
    }
    kvs.retain(|kv| {
        (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
    });
    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    // etcd: a sort target other than the key implies ascending order.
    if order == SortOrder::None && target != SortTarget::Key {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let by = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        // Stable in both directions, so equal elements stay in key order (as etcd's output
        // does for ranges of this size).
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| by(b, a));
        } else {
            kvs.sort_by(by);
        }
    }
    let limit = usize::try_from(req.limit).unwrap_or(0);
    let more = limit > 0 && kvs.len() > limit;
    if more {
        kvs.truncate(limit);
    }
    let kvs = kvs
        .into_iter()
        .map(|mut kv| {
            if req.keys_only {
                kv.value.clear();
            }
            kv_to_pb(kv)
        })
        .collect();
    (kvs, more, count)
}

fn range_of(key: &[u8], range_end: &[u8]) -> KeyRange {
    KeyRange::new(key.to_vec(), range_end.to_vec())
}

fn put_op(req: &pb::PutRequest) -> Result<TxnOp, Status> {
    if req.ignore_value || req.ignore_lease {
        return Err(unsupported("put with ignore_value or ignore_lease"));
    }
    Ok(TxnOp::PutWithLease {
        key: req.key.clone(),
        value: req.value.clone(),
        lease: req.lease,
    })
}

fn delete_op(req: &pb::DeleteRangeRequest) -> TxnOp {
    TxnOp::DeleteRange {
        key: req.key.clone(),
        range_end: req.range_end.clone(),
    }
}

fn compare(c: &pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget as T, TargetUnion as U};
    if !c.range_end.is_empty() {
        return Err(unsupported("compare on a key range"));
    }
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Err(_) => return Err(Status::invalid_argument("unknown compare result")),
    };
    let union = c.target_union.clone();
    let target = match (T::try_from(c.target), union) {
        (Ok(T::Version), Some(U::Version(v))) => CompareTarget::Version(v),
        (Ok(T::Version), None) => CompareTarget::Version(0),
        (Ok(T::Create), Some(U::CreateRevision(v))) => CompareTarget::CreateRevision(v),
        (Ok(T::Create), None) => CompareTarget::CreateRevision(0),
        (Ok(T::Mod), Some(U::ModRevision(v))) => CompareTarget::ModRevision(v),
        (Ok(T::Mod), None) => CompareTarget::ModRevision(0),
        (Ok(T::Value), Some(U::Value(v))) => CompareTarget::Value(v),
        (Ok(T::Value), None) => CompareTarget::Value(Vec::new()),
        (Ok(T::Lease), Some(U::Lease(v))) => CompareTarget::Lease(v),
        (Ok(T::Lease), None) => CompareTarget::Lease(0),
        _ => {
            return Err(Status::invalid_argument(
                "compare target and value disagree",
            ))
        }
    };
    Ok(Compare {
        key: c.key.clone(),
        target,
        op,
    })
}

/// An etcd transaction (already checked with [`txn_check::check`]) as a store [`Txn`].
fn txn_of(req: &pb::TxnRequest) -> Result<Txn, Status> {
    Ok(Txn {
        compares: req.compare.iter().map(compare).collect::<Result<_, _>>()?,
        success: branch(&req.success)?,
        failure: branch(&req.failure)?,
    })
}

/// One txn branch as store ops.
fn branch(ops: &[pb::RequestOp]) -> Result<Vec<TxnOp>, Status> {
    use pb::request_op::Request as R;
    ops.iter()
        .map(|op| {
            Ok(match &op.request {
                None => return Err(Status::invalid_argument("empty txn op")),
                Some(R::RequestRange(r)) => {
                    if r.revision > 0 {
                        return Err(unsupported("range at a past revision inside a txn"));
                    }
                    TxnOp::Range {
                        key: r.key.clone(),
                        range_end: r.range_end.clone(),
                    }
                }
                Some(R::RequestPut(p)) => put_op(p)?,
                Some(R::RequestDeleteRange(d)) => delete_op(d),
                Some(R::RequestTxn(t)) => TxnOp::Txn(txn_of(t)?),
            })
        })
        .collect()
}

/// The response to `req` from the store's `result`: each op of the branch that ran is shaped
/// by its own request (range options, `prev_kv`, nested transactions).
fn txn_response(store: &Store, req: &pb::TxnRequest, result: TxnResult) -> pb::TxnResponse {
    let ran = if result.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let responses = ran
        .iter()
        .zip(result.responses)
        .map(|(op, r)| match &op.request {
            Some(request) => op_response(store, result.revision, request, r),
            None => pb::ResponseOp { response: None },
        })
        .collect();
    pb::TxnResponse {
        header: header(store, result.revision),
        succeeded: result.succeeded,
        responses,
    }
}

fn op_response(
    store: &Store,
    revision: i64,
    request: &pb::request_op::Request,
    result: TxnOpResult,
) -> pb::ResponseOp {
    use pb::request_op::Request as R;
    use pb::response_op::Response as S;
    let h = header(store, revision);
    let response = match (request, result) {
        (R::RequestRange(r), TxnOpResult::Range(kvs)) => {
            let (kvs, more, count) = present(r, kvs);
            S::ResponseRange(pb::RangeResponse {
                header: h,
                kvs,
                more,
                count,
            })
        }
        (R::RequestPut(p), TxnOpResult::Put(put)) => S::ResponsePut(pb::PutResponse {
            header: h,
            prev_kv: if p.prev_kv {
                put.prev.map(kv_to_pb)
            } else {
                None
            },
        }),
        (R::RequestDeleteRange(d), TxnOpResult::DeleteRange(del)) => {
            S::ResponseDeleteRange(delete_response(h, d.prev_kv, del.deleted))
        }
        (R::RequestTxn(t), TxnOpResult::Txn(nested)) => {
            S::ResponseTxn(txn_response(store, t, nested))
        }
        // The store answers every op with the matching result; anything else is a bug that
        // we surface as an empty response rather than a panic.
        _ => return pb::ResponseOp { response: None },
    };
    pb::ResponseOp {
        response: Some(response),
    }
}

fn delete_response(
    header: Option<pb::ResponseHeader>,
    prev_kv: bool,
    deleted: Vec<KeyValue>,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: i64::try_from(deleted.len()).unwrap_or(i64::MAX),
        prev_kvs: if prev_kv {
            deleted.into_iter().map(kv_to_pb).collect()
        } else {
            Vec::new()
        },
    }
}

impl KvService {
    async fn single(&self, op: TxnOp) -> Result<(i64, TxnOpResult), Status> {
        let result = self
            .store
            .txn(Txn {
                compares: vec![],
                success: vec![op],
                failure: vec![],
            })
            .await
            .map_err(status)?;
        let revision = result.revision;
        let first = result
            .responses
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("txn returned no result"))?;
        Ok((revision, first))
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = request.into_inner();
        txn_check::require_key(&req.key)?;
        let consistency = if req.serializable {
            ReadConsistency::Serializable
        } else {
            ReadConsistency::Linearizable
        };
        let result = self
            .store
            .range(
                &range_of(&req.key, &req.range_end),
                req.revision,
                consistency,
            )
            .await
            .map_err(status)?;
        let (kvs, more, count) = present(&req, result.kvs);
        Ok(Response::new(pb::RangeResponse {
            header: header(&self.store, result.revision),
            kvs,
            more,
            count,
        }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = request.into_inner();
        txn_check::require_key(&req.key)?;
        let (revision, result) = self.single(put_op(&req)?).await?;
        let TxnOpResult::Put(put) = result else {
            return Err(Status::internal("put did not return a put result"));
        };
        Ok(Response::new(pb::PutResponse {
            header: header(&self.store, revision),
            prev_kv: if req.prev_kv {
                put.prev.map(kv_to_pb)
            } else {
                None
            },
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        txn_check::require_key(&req.key)?;
        let (revision, result) = self.single(delete_op(&req)).await?;
        let TxnOpResult::DeleteRange(del) = result else {
            return Err(Status::internal("delete did not return a delete result"));
        };
        Ok(Response::new(delete_response(
            header(&self.store, revision),
            req.prev_kv,
            del.deleted,
        )))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = request.into_inner();
        txn_check::check(&req)?;
        let result = self.store.txn(txn_of(&req)?).await.map_err(status)?;
        Ok(Response::new(txn_response(&self.store, &req, result)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let req = request.into_inner();
        // `physical` asks to wait until the history is really gone: it always is once this
        // returns, since the Raft entry deletes it in the same transaction that records the
        // compaction, flushed before the response.
        self.store.compact(req.revision).await.map_err(status)?;
        Ok(Response::new(pb::CompactionResponse {
            header: header(&self.store, self.store.revision()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn puts_carry_their_lease_and_lease_compares_translate() -> Result<(), Status> {
        let put = pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 42,
            ..Default::default()
        };
        assert_eq!(
            put_op(&put)?,
            TxnOp::PutWithLease {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 42
            }
        );
        let cmp = pb::Compare {
            key: b"k".to_vec(),
            target: pb::compare::CompareTarget::Lease as i32,
            result: pb::compare::CompareResult::Equal as i32,
            target_union: Some(pb::compare::TargetUnion::Lease(42)),
            ..Default::default()
        };
        assert_eq!(compare(&cmp)?.target, CompareTarget::Lease(42));
        let mut stored = kv("k", "v", 2);
        stored.lease = 42;
        assert_eq!(kv_to_pb(stored).lease, 42);
        Ok(())
    }

    #[test]
    fn present_sorts_limits_and_projects_like_etcd() {
        let kvs = vec![kv("a", "3", 4), kv("b", "1", 2), kv("c", "2", 3)];
        let req = pb::RangeRequest {
            limit: 2,
            sort_target: SortTarget::Mod as i32,
            sort_order: SortOrder::Descend as i32,
            keys_only: true,
            ..Default::default()
        };
        let (out, more, count) = present(&req, kvs.clone());
        assert_eq!((more, count), (true, 3));
        let keys: Vec<_> = out.iter().map(|k| k.key.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"c".to_vec()]);
        assert!(out.iter().all(|k| k.value.is_empty()));
        // A non-key target without an order sorts ascending.
        let req = pb::RangeRequest {
            sort_target: SortTarget::Value as i32,
            count_only: true,
            ..Default::default()
        };
        let (out, more, count) = present(&req, kvs.clone());
        assert!(out.is_empty() && !more && count == 3);
        let req = pb::RangeRequest {
            min_mod_revision: 3,
            ..Default::default()
        };
        let (out, _, count) = present(&req, kvs.clone());
        // etcd counts the range before the revision filters.
        assert_eq!((out.len(), count), (2, 3));
        let req = pb::RangeRequest {
            count_only: true,
            limit: 1,
            ..Default::default()
        };
        assert!(!present(&req, kvs).1, "count_only never has more");
    }

    #[test]
    fn equal_sort_keys_stay_in_key_order_in_both_directions() {
        let kvs = vec![kv("a", "x", 2), kv("b", "x", 3), kv("c", "y", 4)];
        let keys = |order: SortOrder| {
            let req = pb::RangeRequest {
                sort_target: SortTarget::Version as i32,
                sort_order: order as i32,
                ..Default::default()
            };
            present(&req, kvs.clone())
                .0
                .into_iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect::<Vec<_>>()
        };
        // All versions are 1: etcd prints them in key order, ascending or descending.
        assert_eq!(keys(SortOrder::Descend), ["a", "b", "c"]);
        assert_eq!(keys(SortOrder::Ascend), ["a", "b", "c"]);
    }
}
