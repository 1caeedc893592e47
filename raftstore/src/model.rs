//! The etcd-like data model the store exposes: key-values with MVCC revisions, transactions with
//! compares, and watch events.
//!
//! These are plain data types with no behaviour and no I/O. Everything that goes through the Raft
//! log (requests, responses, events kept in history) derives serde so it can be bincode-encoded. Byte fields go through `serde_bytes`: bincode then
//! copies them as one length and a slice instead of visiting every byte (the encoding is the
//! same bytes either way, so data written before stays readable).

use serde::{Deserialize, Serialize};

use crate::lease::LeaseId;

/// A key with its value and MVCC metadata, as stored at its last modification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value (empty in the `kv` of a delete event).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write to this key; this is the object's version for optimistic
    /// concurrency.
    pub mod_revision: i64,
    /// Number of puts since creation: 1 on create, +1 per put.
    pub version: i64,
    /// The lease the key is attached to (0: none); revoking or expiring it deletes the key.
    pub lease: LeaseId,
}

/// Outcome of a put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The store revision the put was written at.
    pub revision: i64,
    /// The key-value before the put, if the key existed.
    pub prev: Option<KeyValue>,
}

/// Outcome of a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The revision of the delete, or the unchanged store revision if nothing was deleted.
    pub revision: i64,
    /// The deleted key-value; `None` means the key did not exist and nothing changed.
    pub prev: Option<KeyValue>,
}

/// Outcome of a range read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    /// Matching key-values, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// The store revision at which the read was taken.
    pub revision: i64,
}

/// An atomic compare-then-act transaction: if all `compares` hold, `success` runs, else `failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Conditions that must all hold for the `success` branch.
    pub compares: Vec<Compare>,
    /// Operations run when all compares hold.
    pub success: Vec<TxnOp>,
    /// Operations run when any compare fails.
    pub failure: Vec<TxnOp>,
}

/// One condition of a [`Txn`]: `key`'s `target` field compared with `op` against a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key whose current state is compared.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Which field is compared, and the value to compare it with.
    pub target: CompareTarget,
    /// The comparison: `actual <op> expected`.
    pub op: CompareOp,
}

/// The field of a key a [`Compare`] looks at, with the expected value. For an absent key the
/// revisions and version compare as 0 and the value as empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// Compare the key's `mod_revision`.
    ModRevision(i64),
    /// Compare the key's `create_revision`.
    CreateRevision(i64),
    /// Compare the key's `version`.
    Version(i64),
    /// Compare the key's value bytes (lexicographically).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Compare the id of the lease the key is attached to (0: none).
    Lease(LeaseId),
}

/// How a [`Compare`] relates the actual value to the expected one (`actual <op> expected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    /// `actual == expected`.
    Equal,
    /// `actual != expected`.
    NotEqual,
    /// `actual > expected`.
    Greater,
    /// `actual < expected`.
    Less,
}

/// One operation inside a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    /// Write `value` to `key`, detaching it from any lease.
    Put {
        /// The key to write.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value to write.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Write `value` to `key` attached to `lease` (0: no lease, like [`TxnOp::Put`]). The whole
    /// transaction is refused with [`Refusal::LeaseNotFound`] if the branch that runs names a
    /// lease that does not exist.
    PutWithLease {
        /// The key to write.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value to write.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// The lease to attach the key to.
        lease: LeaseId,
    },
    /// Delete `key` if present.
    Delete {
        /// The key to delete.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Read `key` as seen at this point of the transaction.
    Get {
        /// The key to read.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Delete every key in the etcd-style range `[key, range_end)` (see [`crate::KeyRange`]).
    DeleteRange {
        /// First key of the range.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// End of the range: empty means only `key`, `\0` means every key `>= key`.
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
    /// Read every key in the etcd-style range `[key, range_end)` as seen at this point of the
    /// transaction, sorted by key.
    Range {
        /// First key of the range.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// End of the range: empty means only `key`, `\0` means every key `>= key`.
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
    /// Drop the history before `revision` (etcd's compaction): watches and past-revision reads
    /// before it fail with [`crate::Error::Compacted`] afterwards; `revision` itself stays
    /// readable. Ignored if `revision` is not above the current compaction point or above the
    /// store revision.
    Compact {
        /// The new compaction revision.
        revision: i64,
    },
    /// A nested transaction (etcd's `RequestTxn` inside a branch). As in etcd, its compares see
    /// the state before the outer transaction, while its ops see the writes of earlier ops;
    /// the whole transaction still takes at most one revision.
    Txn(Txn),
}

/// The result of one [`TxnOp`], in the same position as the op.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    /// Result of a [`TxnOp::Put`] or [`TxnOp::PutWithLease`].
    Put(PutResult),
    /// Result of a [`TxnOp::Delete`].
    Delete(DeleteResult),
    /// Result of a [`TxnOp::Get`].
    Get(Option<KeyValue>),
    /// Result of a [`TxnOp::DeleteRange`].
    DeleteRange(DeleteRangeResult),
    /// Result of a [`TxnOp::Range`]: the key-values in the range, sorted by key.
    Range(Vec<KeyValue>),
    /// Result of a [`TxnOp::Compact`]: the compaction revision in force afterwards.
    Compact {
        /// History before this revision is gone.
        compact_revision: i64,
    },
    /// Result of a [`TxnOp::Txn`].
    Txn(TxnResult),
}

/// Outcome of a range delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResult {
    /// The revision of the delete, or the unchanged store revision if nothing was deleted.
    pub revision: i64,
    /// The deleted key-values, sorted by key.
    pub deleted: Vec<KeyValue>,
}

/// Outcome of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether all compares held (so the `success` branch ran).
    pub succeeded: bool,
    /// The store revision after the transaction (bumped by one only if something changed).
    pub revision: i64,
    /// One result per op of the branch that ran.
    pub responses: Vec<TxnOpResult>,
}

/// Whether a watch event is a write or a deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change to one key, as seen by watchers and kept in history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change. For a delete: the key, an empty value, `mod_revision` =
    /// the delete's revision, other fields 0.
    pub kv: KeyValue,
    /// The key-value before the change, if the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// A request the state machine refused without changing anything. Every member refuses the same
/// entries, so the refusal is part of the replicated outcome, not a local failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// A put or a revoke named a lease that does not exist (never granted, revoked or expired).
    #[error("lease {lease} not found")]
    LeaseNotFound {
        /// The unknown lease.
        lease: LeaseId,
    },
    /// A grant named a lease id that is already in use.
    #[error("lease {lease} already exists")]
    LeaseExists {
        /// The existing lease.
        lease: LeaseId,
    },
}
