//! Leader-side execution of [`Proposal`]s and read-index requests, shared by the local
//! [`crate::Store`] path and the peer service (for requests forwarded by followers).
//!
//! Never forwards: a member that is not the leader answers [`crate::Error::NotLeader`], and the
//! caller decides where to go. This keeps forwarding one hop deep and loop-free.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;

use crate::error::Result;
use crate::types::{Node, Raft};
use crate::wire::{Proposal, ProposalOutcome};

/// Runs `proposal` on this member, which must be the leader.
pub(crate) async fn propose_local(raft: &Raft, proposal: Proposal) -> Result<ProposalOutcome> {
    let response = match proposal {
        Proposal::Write(request) => {
            let response = raft.client_write(request).await?;
            return Ok(ProposalOutcome::Write(response.data));
        }
        Proposal::AddLearner { id, peer_url } => {
            tracing::info!(node = id, peer_url = %peer_url, "adding learner");
            raft.add_learner(id, Node { addr: peer_url }, true).await?
        }
        Proposal::Promote { id } => {
            tracing::info!(node = id, "promoting learner to voter");
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await?
        }
        Proposal::Remove { id } => {
            let is_voter = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == id);
            tracing::info!(node = id, voter = is_voter, "removing member");
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            // retain = false: a removed voter is dropped from the nodes too, so replication to it
            // stops.
            raft.change_membership(change, false).await?
        }
    };
    Ok(ProposalOutcome::Membership {
        log_index: response.log_id.index,
    })
}

/// Confirms leadership with a quorum and returns the log index a linearizable read must wait
/// for (0 if the log is empty).
pub(crate) async fn read_index_local(raft: &Raft) -> Result<u64> {
    let (read_log_id, _applied) = raft.get_read_log_id().await?;
    Ok(read_log_id.map_or(0, |id| id.index))
}

/// The initial membership map: every member's id and peer URL.
pub(crate) fn initial_nodes<'a>(
    members: impl IntoIterator<Item = (u64, &'a str)>,
) -> BTreeMap<u64, Node> {
    members
        .into_iter()
        .map(|(id, url)| {
            (
                id,
                Node {
                    addr: url.to_string(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_nodes_carry_peer_urls() {
        let nodes = initial_nodes([(1, "http://a:1"), (2, "http://b:2")]);
        assert_eq!(nodes.get(&2).map(|n| n.addr.as_str()), Some("http://b:2"));
        assert_eq!(nodes.len(), 2);
    }
}
