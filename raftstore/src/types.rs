//! Openraft type configuration and the request/response that travel through the Raft log.
//!
//! Every write is a [`Txn`]: a plain put or delete is a transaction without compares. This keeps
//! a single apply path and a single wire format for the later peer service.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::{Txn, TxnResult};

/// Raft member id.
pub type NodeId = u64;

/// Raft member address record (empty for the single-member skeleton).
pub type Node = openraft::BasicNode;

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
pub struct RaftRequest {
    /// The transaction to apply.
    pub txn: Txn,
}

impl std::fmt::Display for RaftRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "txn(compares={}, success={}, failure={})",
            self.txn.compares.len(),
            self.txn.success.len(),
            self.txn.failure.len()
        )
    }
}

/// What applying one log entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftResponse {
    /// The transaction result; `None` for blank and membership entries.
    pub txn: Option<TxnResult>,
}
