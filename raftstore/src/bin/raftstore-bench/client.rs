//! The etcd v3 client every measurement uses, for raftstore and etcd alike: tonic clients
//! generated (by `build.rs`) from raftstore's vendored `etcdserverpb` protos, plus the few
//! calls the benchmark needs. Keeping one client for both systems is what makes the figures
//! comparable.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{BenchError, Result};

/// The generated etcd protobuf types and clients.
#[allow(missing_docs, dead_code, clippy::all, clippy::pedantic)]
pub mod pb {
    /// etcd's `mvccpb` package.
    pub mod mvccpb {
        include!(concat!(env!("OUT_DIR"), "/etcd-client/mvccpb.rs"));
    }
    /// etcd's `etcdserverpb` package.
    pub mod etcdserverpb {
        include!(concat!(env!("OUT_DIR"), "/etcd-client/etcdserverpb.rs"));
    }
}

pub use pb::etcdserverpb as rpc;
use rpc::kv_client::KvClient;
use rpc::maintenance_client::MaintenanceClient;

/// How long one call may take before the benchmark counts it as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens one HTTP/2 connection to `url`.
pub async fn connect(url: &str) -> Result<Channel> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|source| BenchError::Connect {
            url: url.to_string(),
            source,
        })?;
    endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| BenchError::Connect {
            url: url.to_string(),
            source,
        })
}

/// `n` connections spread round-robin over `urls` (which must not be empty).
pub async fn connect_many(urls: &[String], n: usize) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for i in 0..n {
        channels.push(connect(&urls[i % urls.len()]).await?);
    }
    Ok(channels)
}

/// A put of `value` under `key`; returns the revision it created.
pub async fn put(kv: &mut KvClient<Channel>, key: Vec<u8>, value: Vec<u8>) -> Result<i64> {
    let response = kv
        .put(rpc::PutRequest {
            key,
            value,
            ..Default::default()
        })
        .await
        .map_err(BenchError::rpc("put"))?
        .into_inner();
    Ok(response.header.map_or(0, |h| h.revision))
}

/// A linearizable single-key get; returns whether the key exists.
pub async fn get(kv: &mut KvClient<Channel>, key: Vec<u8>) -> Result<bool> {
    let response = kv
        .range(rpc::RangeRequest {
            key,
            ..Default::default()
        })
        .await
        .map_err(BenchError::rpc("range"))?
        .into_inner();
    Ok(!response.kvs.is_empty())
}

/// The value of `key` in the answering member's own state (a serializable get).
pub async fn local_value(kv: &mut KvClient<Channel>, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
    let response = kv
        .range(rpc::RangeRequest {
            key,
            serializable: true,
            ..Default::default()
        })
        .await
        .map_err(BenchError::rpc("range"))?
        .into_inner();
    Ok(response.kvs.into_iter().next().map(|kv| kv.value))
}

/// A compare-and-swap: if `key`'s mod revision is `expected`, put `value`. Returns whether it
/// swapped and the key's mod revision afterwards.
pub async fn compare_and_swap(
    kv: &mut KvClient<Channel>,
    key: Vec<u8>,
    expected: i64,
    value: Vec<u8>,
) -> Result<(bool, i64)> {
    use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
    use rpc::request_op::Request;
    use rpc::response_op::Response;
    let request = rpc::TxnRequest {
        compare: vec![rpc::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(expected)),
            range_end: Vec::new(),
        }],
        success: vec![rpc::RequestOp {
            request: Some(Request::RequestPut(rpc::PutRequest {
                key: key.clone(),
                value,
                ..Default::default()
            })),
        }],
        failure: vec![rpc::RequestOp {
            request: Some(Request::RequestRange(rpc::RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    };
    let response = kv
        .txn(request)
        .await
        .map_err(BenchError::rpc("txn"))?
        .into_inner();
    if response.succeeded {
        return Ok((true, response.header.map_or(0, |h| h.revision)));
    }
    let current = response
        .responses
        .into_iter()
        .find_map(|r| match r.response {
            Some(Response::ResponseRange(range)) => range.kvs.first().map(|kv| kv.mod_revision),
            _ => None,
        })
        .unwrap_or(0);
    Ok((false, current))
}

/// What one member says about itself: its id and the leader it knows (0: none).
pub async fn status(channel: Channel) -> Result<(u64, u64)> {
    let response = MaintenanceClient::new(channel)
        .status(rpc::StatusRequest {})
        .await
        .map_err(BenchError::rpc("status"))?
        .into_inner();
    Ok((response.header.map_or(0, |h| h.member_id), response.leader))
}
