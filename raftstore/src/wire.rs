//! What travels between members besides openraft's own messages: the generated
//! `capstan.raft.v1` service, proposals a follower forwards to the leader, and the error those
//! calls carry back. Everything is bincode inside a protobuf `bytes` field.
//!
//! This module only defines and encodes; it must not call Raft or open connections.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseId, LeaseTimeToLive};
use crate::member::{Member, MemberError};
use crate::model::Txn;
use crate::store_cluster::MemberInfo;
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
    /// A lease call that needs the leader's lease state.
    Lease(LeaseCall),
    /// Add `member` as a learner under `id` (promoted by the leader once caught up if
    /// `member.promote_when_caught_up`); returns once the change is committed, without waiting
    /// for the member to run or catch up.
    AddMember {
        /// The new member's id.
        id: NodeId,
        /// Its record (peer URL at least).
        member: Member,
        /// The member itself asks (a join, possibly retried): being a member already is
        /// success. Otherwise, as in etcd, a peer URL already in use is refused.
        rejoin: bool,
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
    /// The leader's current membership, changing nothing (a member that hears from no leader
    /// asks whether it was removed).
    Members,
    /// Member `id` publishes its name and client URLs (its peer URL stays as it is).
    Publish {
        /// The publishing member's id.
        id: NodeId,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
    /// Several KV transactions a follower received concurrently, forwarded in one call (see
    /// `forward_batch`); the leader answers each on its own. Never holds a compaction.
    Writes(Vec<Txn>),
}

/// A lease call only the leader can answer: it chooses ids and keeps the expiry deadlines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaseCall {
    /// Grant a lease (id 0: the leader chooses one); the leader raises the TTL to the minimum.
    Grant {
        /// The lease id asked for, or 0.
        id: LeaseId,
        /// The TTL asked for, in seconds.
        ttl: i64,
    },
    /// Renew a lease's deadline to now + TTL.
    KeepAlive {
        /// The lease.
        id: LeaseId,
    },
    /// Report a lease's granted and remaining TTL.
    TimeToLive {
        /// The lease.
        id: LeaseId,
        /// Whether to list the attached keys.
        keys: bool,
    },
}

/// The leader's answer to a [`LeaseCall`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum LeaseReply {
    /// The lease granted.
    Granted(Lease),
    /// The lease was renewed; its TTL in seconds.
    KeptAlive {
        /// The lease's TTL.
        ttl: i64,
    },
    /// The lease's time to live.
    TimeToLive(LeaseTimeToLive),
}

/// What a committed [`Proposal`] produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ProposalOutcome {
    /// The transaction's response.
    Write(RaftResponse),
    /// The leader's answer to a lease call.
    Lease(LeaseReply),
    /// The membership change was committed at this log index.
    Membership {
        /// Log index of the committed membership entry.
        log_index: u64,
        /// The members as of that entry, as the leader saw them.
        members: Vec<MemberInfo>,
    },
    /// One answer per transaction of a [`Proposal::Writes`], in order.
    Writes(Vec<std::result::Result<RaftResponse, WireError>>),
}

/// An error as it crosses the wire: only what the caller needs to decide what to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireError {
    /// The callee is not the leader (any more).
    NotLeader {
        /// The leader the callee knows of.
        leader: Option<NodeId>,
        /// The leader's peer URL, if known.
        leader_url: Option<String>,
    },
    /// The membership change was refused.
    Membership(String),
    /// The member checks refused the request.
    Member(MemberError),
    /// The lease named does not exist (or already expired).
    LeaseNotFound {
        /// The lease.
        lease: LeaseId,
    },
    /// The lease id asked for is in use.
    LeaseExists {
        /// The lease.
        lease: LeaseId,
    },
    /// The callee is shutting down.
    Shutdown,
    /// Anything else, as text.
    Failed(String),
}

impl From<Error> for WireError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotLeader { leader, leader_url } => WireError::NotLeader { leader, leader_url },
            Error::Membership(m) => WireError::Membership(m),
            Error::Member(m) => WireError::Member(m),
            Error::LeaseNotFound { lease } => WireError::LeaseNotFound { lease },
            Error::LeaseExists { lease } => WireError::LeaseExists { lease },
            Error::Shutdown => WireError::Shutdown,
            other => WireError::Failed(other.to_string()),
        }
    }
}

impl WireError {
    /// The local error for a wire error received from `peer`.
    pub(crate) fn into_error(self, peer: NodeId) -> Error {
        match self {
            WireError::NotLeader { leader, leader_url } => Error::NotLeader { leader, leader_url },
            WireError::Membership(m) => Error::Membership(m),
            WireError::Member(m) => Error::Member(m),
            WireError::LeaseNotFound { lease } => Error::LeaseNotFound { lease },
            WireError::LeaseExists { lease } => Error::LeaseExists { lease },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `e` across the wire as a forwarded call's error and back into a local error.
    fn round_trip(e: Error) -> Result<Error> {
        let sent: std::result::Result<(), WireError> = Err(WireError::from(e));
        let received: std::result::Result<(), WireError> = payload(&message(&sent)?)?;
        match received {
            Err(w) => Ok(w.into_error(7)),
            Ok(()) => Err(Error::UnexpectedResponse("error arrived as success")),
        }
    }

    #[test]
    fn a_not_leader_answer_carries_the_leaders_id_and_peer_url_to_the_caller() -> Result<()> {
        let back = round_trip(Error::NotLeader {
            leader: Some(3),
            leader_url: Some("http://10.0.0.3:2380".to_string()),
        })?;
        assert!(
            matches!(&back, Error::NotLeader { leader: Some(3), leader_url: Some(u) } if u == "http://10.0.0.3:2380"),
            "{back:?}"
        );
        Ok(())
    }

    #[test]
    fn refused_membership_requests_keep_their_reason_across_the_wire() -> Result<()> {
        let refusal = MemberError::LearnerNotReady {
            id: 4,
            matched: Some(5),
            leader_index: 100,
        };
        let back = round_trip(Error::Member(refusal.clone()))?;
        assert!(
            matches!(&back, Error::Member(m) if *m == refusal),
            "{back:?}"
        );
        Ok(())
    }
}
