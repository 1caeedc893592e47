//! Openraft type configuration and the request/response that travel through the Raft log.
//!
//! Every KV write is a [`Txn`]: a plain put or delete is a transaction without compares. Lease
//! grants and revokes are their own requests, since they change the lease table (and a revoke
//! deletes the lease's keys at one revision).

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::lease::LeaseId;
use crate::model::{Refusal, Txn, TxnResult};

/// Raft member id.
pub type NodeId = u64;

/// A member's replicated record in the membership config: name, peer URL, client URLs.
pub type Node = crate::member::Member;

openraft::declare_raft_types!(
    /// Capstan's openraft type configuration.
    pub TypeConfig:
        D = RaftRequest,
        R = RaftResponse,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A Raft log entry of this store.
pub type Entry = openraft::Entry<TypeConfig>;
/// A Raft log id of this store.
pub type LogId = openraft::LogId<NodeId>;
/// The membership as stored by the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Snapshot metadata of this store.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// Openraft's storage error, as returned from the storage traits.
pub type StorageError = openraft::StorageError<NodeId>;
/// The openraft `Raft` handle of this store.
pub type Raft = openraft::Raft<TypeConfig>;

/// The application payload of a normal log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRequest {
    /// A KV transaction (every put, delete, range delete, txn and compaction).
    Txn(Txn),
    /// Create lease `id` (> 0) with a TTL of `ttl` seconds; refused if `id` exists. The id and
    /// the TTL (raised to the minimum) are fixed by the leader before proposing.
    LeaseGrant {
        /// The new lease's id.
        id: LeaseId,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// Delete lease `id` and every key attached to it, at one revision; refused if unknown.
    LeaseRevoke {
        /// The lease to revoke.
        id: LeaseId,
    },
    /// Several transactions in one log entry, applied in order, each at its own revision, as if
    /// each had its own entry: the leader packs concurrent writes so that one fsync commits
    /// them all (see `write_batch`). Never holds a compaction (those go alone).
    Batch(Vec<Txn>),
}

impl std::fmt::Display for RaftRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftRequest::Txn(txn) => write!(
                f,
                "txn(compares={}, success={}, failure={})",
                txn.compares.len(),
                txn.success.len(),
                txn.failure.len()
            ),
            RaftRequest::LeaseGrant { id, ttl } => write!(f, "lease_grant(id={id}, ttl={ttl})"),
            RaftRequest::LeaseRevoke { id } => write!(f, "lease_revoke(id={id})"),
            RaftRequest::Batch(txns) => write!(f, "batch(txns={})", txns.len()),
        }
    }
}

/// What applying one log entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftResponse {
    /// A blank or membership entry: nothing for a client.
    #[default]
    Empty,
    /// The transaction result of a [`RaftRequest::Txn`].
    Txn(TxnResult),
    /// The lease of a [`RaftRequest::LeaseGrant`] exists now.
    LeaseGranted {
        /// The lease's id.
        id: LeaseId,
        /// Its TTL in seconds.
        ttl: i64,
    },
    /// The lease of a [`RaftRequest::LeaseRevoke`] and its keys are gone.
    LeaseRevoked {
        /// The store revision afterwards (the deletion's revision if it had keys).
        revision: i64,
    },
    /// The state machine refused the request and changed nothing.
    Refused(Refusal),
    /// One [`RaftResponse::Txn`] or [`RaftResponse::Refused`] per transaction of a
    /// [`RaftRequest::Batch`], in order.
    Batch(Vec<RaftResponse>),
}
