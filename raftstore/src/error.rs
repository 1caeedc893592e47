//! The crate's single error type and what each variant asks the caller to do.
//!
//! Openraft's generic errors are translated here and only here: API errors that mean "go
//! elsewhere" become [`Error::NotLeader`], everything fatal becomes [`Error::Raft`].

use openraft::error::{
    CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader, InitializeError, RaftError,
};

use crate::types::{Node, NodeId};

/// Everything that can go wrong in the store.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// This member is not the leader; retry against `leader` (if known) or later.
    #[error("not the leader; current leader: {leader:?} at {leader_url:?}")]
    NotLeader {
        /// The leader this member knows of, if any.
        leader: Option<NodeId>,
        /// The leader's peer URL, if known.
        leader_url: Option<String>,
    },
    /// The requested start revision is no longer in history; list afresh and watch from the
    /// returned revision.
    #[error("requested revision is compacted; history starts at {compact_revision}")]
    Compacted {
        /// History before this revision is gone; this revision's state is still readable.
        compact_revision: i64,
    },
    /// A read asked for a revision the store has not reached yet; retry later or ask for an
    /// older one.
    #[error("required revision {revision} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        revision: i64,
        /// The store's current revision.
        current: i64,
    },
    /// The on-disk store failed; not retryable without operator attention.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A record could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A record on disk or on the wire could not be decoded (corruption or version skew).
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The data directory could not be created or read.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Raft stopped or failed fatally; the store must be reopened.
    #[error("raft: {0}")]
    Raft(Box<openraft::error::Fatal<NodeId>>),
    /// The cluster configuration is invalid; fix it and start again.
    #[error("invalid cluster config: {0}")]
    InvalidConfig(String),
    /// A membership change was refused (unknown member, change already in progress, ...);
    /// fix the request or retry once the previous change finished.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// A membership request was refused by the member checks (unknown member, learner not
    /// caught up, URL in use, ...); see [`crate::MemberError`] for what to fix.
    #[error("membership change refused: {0}")]
    Member(#[from] crate::member::MemberError),
    /// A peer (usually the leader a request was forwarded to) could not be reached or did not
    /// answer in time. A forwarded write may or may not have been applied: retry only if it is
    /// idempotent (e.g. a compare-and-swap on the revision).
    #[error("peer {peer} unreachable: {reason}")]
    PeerUnreachable {
        /// The peer.
        peer: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// A peer answered with an error it could not classify; see the message.
    #[error("peer {peer} failed: {message}")]
    Remote {
        /// The peer.
        peer: NodeId,
        /// Its error, as text.
        message: String,
    },
    /// The peer service could not listen; pick another address or free the port.
    #[error("cannot listen on {addr:?}: {source}")]
    Listen {
        /// The address, if known.
        addr: Option<std::net::SocketAddr>,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Raft could not be configured or initialised.
    #[error("raft setup: {0}")]
    RaftSetup(String),
    /// Openraft reported a storage failure from inside its core.
    #[error("raft storage: {0}")]
    RaftStorage(Box<openraft::StorageError<NodeId>>),
    /// The store did not become leader within the start-up deadline; retry opening.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// How long it waited.
        waited_ms: u64,
    },
    /// The store was shut down; the handle is no longer usable.
    #[error("store is shut down")]
    Shutdown,
    /// Data on disk is not in the expected shape; needs operator attention.
    #[error("corrupt store: {0}")]
    Corrupt(&'static str),
    /// A write returned a response that does not match the request (a bug).
    #[error("unexpected response: {0}")]
    UnexpectedResponse(&'static str),
    /// The lease does not exist (never granted, revoked or expired); grant a new one.
    #[error("lease {lease} not found")]
    LeaseNotFound {
        /// The unknown lease id.
        lease: i64,
    },
    /// A grant asked for a lease id that is in use; pick another id (or 0 for any).
    #[error("lease {lease} already exists")]
    LeaseExists {
        /// The lease id asked for.
        lease: i64,
    },
    /// A grant asked for a TTL above the maximum; ask for less.
    #[error("lease TTL {ttl} s is above the maximum of {max} s")]
    LeaseTtlTooLarge {
        /// The TTL asked for, in seconds.
        ttl: i64,
        /// The largest TTL allowed, in seconds.
        max: i64,
    },
    /// A lease request is malformed; fix the named field.
    #[error("invalid lease request: {field}: {reason}")]
    InvalidLease {
        /// The offending field, as etcd names it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<crate::model::Refusal> for Error {
    fn from(r: crate::model::Refusal) -> Self {
        match r {
            crate::model::Refusal::LeaseNotFound { lease } => Error::LeaseNotFound { lease },
            crate::model::Refusal::LeaseExists { lease } => Error::LeaseExists { lease },
        }
    }
}

impl From<sled::transaction::TransactionError<sled::Error>> for Error {
    fn from(e: sled::transaction::TransactionError<sled::Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e)
            | sled::transaction::TransactionError::Storage(e) => Error::Storage(e),
        }
    }
}

impl From<Fatal<NodeId>> for Error {
    fn from(e: Fatal<NodeId>) -> Self {
        match e {
            Fatal::Stopped => Error::Shutdown,
            other => Error::Raft(Box::new(other)),
        }
    }
}

impl From<ForwardToLeader<NodeId, Node>> for Error {
    fn from(e: ForwardToLeader<NodeId, Node>) -> Self {
        Error::NotLeader {
            leader: e.leader_id,
            leader_url: e.leader_node.map(|n| n.peer_url),
        }
    }
}

impl From<RaftError<NodeId, ClientWriteError<NodeId, Node>>> for Error {
    fn from(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => f.into(),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Error::Membership(e.to_string())
            }
            RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>> for Error {
    fn from(e: RaftError<NodeId, CheckIsLeaderError<NodeId, Node>>) -> Self {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => f.into(),
            // Leadership could not be confirmed by a quorum: not a usable leader right now.
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => Error::NotLeader {
                leader: None,
                leader_url: None,
            },
            RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<RaftError<NodeId, InitializeError<NodeId, Node>>> for Error {
    fn from(e: RaftError<NodeId, InitializeError<NodeId, Node>>) -> Self {
        match e {
            RaftError::APIError(e) => Error::RaftSetup(e.to_string()),
            RaftError::Fatal(f) => f.into(),
        }
    }
}

impl From<openraft::StorageError<NodeId>> for Error {
    fn from(e: openraft::StorageError<NodeId>) -> Self {
        Error::RaftStorage(Box::new(e))
    }
}

/// Result with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
