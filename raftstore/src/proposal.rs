//! Leader-side execution of [`Proposal`]s and read-index requests, shared by the local
//! [`crate::Store`] path and the peer service (for requests forwarded by followers).
//!
//! Never forwards: a member that is not the leader answers [`crate::Error::NotLeader`], and the
//! caller decides where to go. This keeps forwarding one hop deep and loop-free.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::time::Instant;

use crate::error::Result;
use crate::lease_keeper::Lessor;
use crate::member::{self, AddDecision, MembershipView, RemoveKind};
use crate::store_cluster::members_of;
use crate::types::{Node, NodeId, Raft, RaftRequest};
use crate::wire::{Proposal, ProposalOutcome};
use crate::write_batch::WriteBatcher;

/// How long a membership change waits for the previous one to commit before giving up.
const CHANGE_IN_PROGRESS_WAIT: Duration = Duration::from_secs(5);

/// Runs `proposal` on this member, which must be the leader; `lessor` answers lease calls.
pub(crate) async fn propose_local(
    raft: &Raft,
    lessor: &Lessor,
    writes: &Arc<WriteBatcher>,
    proposal: Proposal,
) -> Result<ProposalOutcome> {
    match proposal {
        // Batched with concurrent transactions: one entry, one fsync (see `write_batch`).
        Proposal::Write(RaftRequest::Txn(txn)) => {
            Ok(ProposalOutcome::Write(writes.write(txn).await?))
        }
        Proposal::Write(request) => {
            let response = raft.client_write(request).await?;
            Ok(ProposalOutcome::Write(response.data))
        }
        // A follower's batch: joins the same batching, each transaction answered on its own.
        Proposal::Writes(txns) => Ok(ProposalOutcome::Writes(writes.write_all(txns).await)),
        Proposal::Lease(call) => lessor.serve(raft, call).await.map(ProposalOutcome::Lease),
        membership => change_members(raft, membership).await,
    }
}

/// Runs a membership proposal on the leader after the member checks of [`crate::member`]; a
/// request that changes nothing (re-adding the same member, publishing what is recorded)
/// commits nothing and reports the current membership.
async fn change_members(raft: &Raft, proposal: Proposal) -> Result<ProposalOutcome> {
    let (view, matched, leader_index) = leader_view(raft)?;
    let (changes, retain) = match proposal {
        Proposal::Write(_) | Proposal::Writes(_) | Proposal::Lease(_) => {
            return Err(crate::Error::UnexpectedResponse(
                "a write reached the membership path",
            ))
        }
        Proposal::AddMember { id, member, rejoin } => {
            match member::decide_add(&view, id, &member, rejoin)? {
                AddDecision::AlreadyMember => return current(raft),
                AddDecision::Add => {
                    tracing::info!(node = id, member = %member, voter = member.promote_when_caught_up, "adding member as learner");
                    (
                        ChangeMembers::AddNodes(BTreeMap::from([(id, member)])),
                        true,
                    )
                }
            }
        }
        Proposal::Members => return current(raft),
        Proposal::Promote { id } => {
            let matched = matched.get(&id).copied().flatten();
            member::decide_promote(&view, id, matched, leader_index)?;
            tracing::info!(node = id, "promoting learner to voter");
            (ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        }
        Proposal::Remove { id } => {
            let kind = member::decide_remove(&view, id)?;
            tracing::info!(
                node = id,
                voter = kind == RemoveKind::Voter,
                "removing member"
            );
            // retain = false: a removed voter is dropped from the nodes too, so replication to
            // it stops. A leader that removes itself steps down once the change is applied.
            let change = match kind {
                RemoveKind::Voter => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                RemoveKind::Learner => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
            };
            (change, false)
        }
        Proposal::Publish {
            id,
            name,
            client_urls,
        } => match member::publish_update(&view, id, &name, &client_urls) {
            None => return current(raft),
            Some(updated) => {
                tracing::info!(node = id, name = %name, client_urls = ?client_urls, "member publishes its name and client URLs");
                // SetNodes replaces the record; the peer URL is kept, so no other node can
                // be mistaken for this one.
                (
                    ChangeMembers::SetNodes(BTreeMap::from([(id, updated)])),
                    true,
                )
            }
        },
    };
    let response = change_membership(raft, changes, retain).await?;
    let members = match &response.membership {
        Some(m) => members_of(m),
        None => members_of(raft.metrics().borrow().membership_config.membership()),
    };
    Ok(ProposalOutcome::Membership {
        log_index: response.log_id.index,
        members,
    })
}

/// Proposes `changes`, waiting (briefly) for a membership change still in flight to commit:
/// openraft takes one change at a time, and members publishing themselves at start-up would
/// otherwise make an operator's change fail spuriously.
async fn change_membership(
    raft: &Raft,
    changes: ChangeMembers<NodeId, Node>,
    retain: bool,
) -> Result<openraft::raft::ClientWriteResponse<crate::types::TypeConfig>> {
    let deadline = Instant::now() + CHANGE_IN_PROGRESS_WAIT;
    loop {
        match raft.change_membership(changes.clone(), retain).await {
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// The leader's membership, replication progress (matched log index per member) and last log
/// index; [`crate::Error::NotLeader`] if this member does not lead.
fn leader_view(raft: &Raft) -> Result<(MembershipView, BTreeMap<NodeId, Option<u64>>, u64)> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    if m.current_leader != Some(m.id) {
        let leader_url = m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.peer_url.clone())
        });
        return Err(crate::Error::NotLeader {
            leader: m.current_leader,
            leader_url,
        });
    }
    let view = MembershipView::of(m.membership_config.membership());
    let matched = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .map(|(id, log)| (*id, log.map(|l| l.index)))
                .collect()
        })
        .unwrap_or_default();
    Ok((view, matched, m.last_log_index.unwrap_or(0)))
}

/// The current membership as a no-op outcome.
fn current(raft: &Raft) -> Result<ProposalOutcome> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    Ok(ProposalOutcome::Membership {
        log_index: m.membership_config.log_id().map_or(0, |l| l.index),
        members: members_of(m.membership_config.membership()),
    })
}

/// Confirms leadership with a quorum and returns the log index a linearizable read must wait
/// for (0 if the log is empty).
pub(crate) async fn read_index_local(raft: &Raft) -> Result<u64> {
    let (read_log_id, _applied) = raft.get_read_log_id().await?;
    Ok(read_log_id.map_or(0, |id| id.index))
}

/// The initial membership map: every member's id and record.
pub(crate) fn initial_nodes(
    members: impl IntoIterator<Item = (NodeId, Node)>,
) -> BTreeMap<NodeId, Node> {
    members.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_nodes_carry_peer_urls() {
        let nodes = initial_nodes([(1, Node::new("http://a:1")), (2, Node::new("http://b:2"))]);
        assert_eq!(
            nodes.get(&2).map(|n| n.peer_url.as_str()),
            Some("http://b:2")
        );
        assert_eq!(nodes.len(), 2);
    }
}
