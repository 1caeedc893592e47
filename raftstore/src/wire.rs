//! What travels between members besides openraft's own messages: the generated
//! `capstan.raft.v1` service, proposals a follower forwards to the leader, and the error those
//! calls carry back. Everything is bincode inside a protobuf `bytes` field.
//!
//! This module only defines and encodes; it must not call Raft or open connections.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::types::{NodeId, RaftRequest, RaftResponse};

/// The generated protobuf types, client and server of the peer service.
#[allow(missing_docs, clippy::all)]
pub(crate) mod proto {
    tonic::include_proto!("capstan.raft.v1");
}

/// Something only the leader can do, sent to it by whichever member received it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Proposal {
    /// A KV transaction.
    Write(RaftRequest),
    /// Add `id` as a learner reachable at `peer_url`; returns once it has caught up.
    AddLearner {
        /// The new member's id.
        id: NodeId,
        /// Where its peer service listens.
        peer_url: String,
    },
    /// Make the learner `id` a voter.
    Promote {
        /// The learner's id.
        id: NodeId,
    },
    /// Remove `id` (voter or learner) from the cluster.
    Remove {
        /// The member's id.
        id: NodeId,
    },
}

/// What a committed [`Proposal`] produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ProposalOutcome {
    /// The transaction's response.
    Write(RaftResponse),
    /// The membership change was committed at this log index.
    Membership {
        /// Log index of the committed membership entry.
        log_index: u64,
    },
}

/// An error as it crosses the wire: only what the caller needs to decide what to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    /// The callee is not the leader (any more).
    NotLeader {
        /// The leader the callee knows of.
        leader: Option<NodeId>,
    },
    /// The membership change was refused.
    Membership(String),
    /// The callee is shutting down.
    Shutdown,
    /// Anything else, as text.
    Failed(String),
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotLeader { leader } => WireError::NotLeader { leader },
            Error::Membership(m) => WireError::Membership(m),
            Error::Shutdown => WireError::Shutdown,
            other => WireError::Failed(other.to_string()),
        }
    }
}

impl WireError {
    /// The local error for a wire error received from `peer`.
    pub(crate) fn into_error(self, peer: NodeId) -> Error {
        match self {
            WireError::NotLeader { leader } => Error::NotLeader { leader },
            WireError::Membership(m) => Error::Membership(m),
            WireError::Shutdown => Error::PeerUnreachable {
                peer,
                reason: "peer is shutting down".to_string(),
            },
            WireError::Failed(m) => Error::Remote { peer, message: m },
        }
    }
}

/// Wraps a value into a peer message.
pub(crate) fn message<T: Serialize>(value: &T) -> Result<proto::RaftMessage> {
    Ok(proto::RaftMessage {
        data: codec::encode(value)?,
    })
}

/// Unwraps a peer message.
pub(crate) fn payload<T: serde::de::DeserializeOwned>(msg: &proto::RaftMessage) -> Result<T> {
    codec::decode(&msg.data)
}
