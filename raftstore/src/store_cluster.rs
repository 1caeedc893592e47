//! The cluster side of [`Store`]: sending writes and membership changes to the leader, read
//! index for linearizable reads on any member, membership changes, and the member listing.
//!
//! Routing decisions use this member's view of the leader (openraft metrics); the leader-side
//! work itself is in [`crate::proposal`]. This module owns no state.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::network::FORWARD_TIMEOUT;
use crate::proposal::{propose_local, read_index_local};
use crate::store::{wait_error, Store};
use crate::types::NodeId;
use crate::wire::{Proposal, ProposalOutcome};

/// Pause before retrying after a "not leader" answer, so an election can finish.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

type Metrics = openraft::RaftMetrics<NodeId, crate::types::Node>;

/// One member as listed by [`Store::members`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's Raft id.
    pub id: NodeId,
    /// Where its peer service listens.
    pub peer_url: String,
    /// Voter (counts for quorum) or learner (only replicates).
    pub voter: bool,
}

/// This member's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This member's id.
    pub node_id: NodeId,
    /// The leader this member knows of.
    pub leader: Option<NodeId>,
    /// This member's current term.
    pub term: u64,
    /// Index of the last log entry applied here.
    pub applied_index: u64,
    /// All members (voters and learners), by id.
    pub members: Vec<MemberInfo>,
    /// Last log index covered by this member's current snapshot (0: none).
    pub snapshot_index: u64,
    /// Last log index removed from this member's log (0: none).
    pub purged_index: u64,
}

fn status_of(m: &Metrics) -> ClusterStatus {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            id: *id,
            peer_url: node.addr.clone(),
            voter: voters.contains(id),
        })
        .collect();
    ClusterStatus {
        node_id: m.id,
        leader: m.current_leader,
        term: m.current_term,
        applied_index: m.last_applied.map_or(0, |id| id.index),
        members,
        snapshot_index: m.snapshot.map_or(0, |id| id.index),
        purged_index: m.purged.map_or(0, |id| id.index),
    }
}

/// Follows leader, term and membership changes of one member (see [`Store::status_watch`]).
pub struct StatusWatch {
    rx: watch::Receiver<Metrics>,
    /// Leader, term and members last reported.
    last: Option<(Option<NodeId>, u64, Vec<MemberInfo>)>,
}

impl StatusWatch {
    /// Waits for the next change of leader, term or membership and returns the new status;
    /// `None` once the store has shut down.
    pub async fn changed(&mut self) -> Option<ClusterStatus> {
        loop {
            let status = status_of(&self.rx.borrow_and_update());
            // Applies and snapshots alone are not a change worth reporting.
            let key = (status.leader, status.term, status.members.clone());
            if self.last.as_ref() != Some(&key) {
                self.last = Some(key);
                return Some(status);
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl Store {
    /// This member's view of the cluster: members with peer URLs, leader and term.
    pub fn members(&self) -> ClusterStatus {
        status_of(&self.inner.raft.metrics().borrow())
    }

    /// Index of the last entry in this member's Raft log (0: empty).
    pub fn last_log_index(&self) -> u64 {
        self.inner
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0)
    }

    /// A watch on leader, term and membership changes; the first `changed()` returns at once.
    pub fn status_watch(&self) -> StatusWatch {
        StatusWatch {
            rx: self.inner.raft.metrics(),
            last: None,
        }
    }

    /// Waits until this member knows a leader and returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let m = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .map_err(|e| wait_error(e, "a leader"))?;
        m.current_leader.ok_or(Error::NotLeader { leader: None })
    }

    /// Adds `id` as a learner reachable at `peer_url` and returns once it has caught up with
    /// the leader (by log replication or a snapshot). Works from any member.
    pub async fn add_learner(&self, id: NodeId, peer_url: &str) -> Result<u64> {
        let proposal = Proposal::AddLearner {
            id,
            peer_url: peer_url.to_string(),
        };
        self.membership_change(proposal).await
    }

    /// Makes the learner `id` a voter. Works from any member.
    pub async fn promote(&self, id: NodeId) -> Result<u64> {
        self.membership_change(Proposal::Promote { id }).await
    }

    /// Removes member `id` (voter or learner) from the cluster. Works from any member.
    pub async fn remove_member(&self, id: NodeId) -> Result<u64> {
        self.membership_change(Proposal::Remove { id }).await
    }

    async fn membership_change(&self, proposal: Proposal) -> Result<u64> {
        match self.propose(proposal).await? {
            ProposalOutcome::Membership { log_index } => Ok(log_index),
            ProposalOutcome::Write(_) => Err(Error::UnexpectedResponse(
                "membership change returned a write outcome",
            )),
        }
    }

    /// The leader this member knows of and its peer URL.
    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader?;
        let url = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((leader, url))
    }

    /// Waits until a leader is known or `deadline` passes.
    async fn await_leader(&self, deadline: Instant) -> Result<()> {
        tokio::time::sleep(RETRY_PAUSE).await;
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_for_leader(left).await.map(|_| ())
    }

    /// Runs `proposal` on the leader: locally if this member leads, else over the peer service.
    /// A "not leader" answer is retried (after the next election) until [`FORWARD_TIMEOUT`];
    /// an unreachable leader is not, since the write may have been applied.
    pub(crate) async fn propose(&self, proposal: Proposal) -> Result<ProposalOutcome> {
        self.check_open()?;
        let me = self.inner.node_id;
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == me => {
                    propose_local(&self.inner.raft, proposal.clone()).await
                }
                Some((leader, url)) => {
                    tracing::debug!(node = me, leader, "forwarding proposal to leader");
                    self.inner.channels.forward(leader, &url, &proposal).await
                }
                None => Err(Error::NotLeader { leader: None }),
            };
            match attempt {
                Err(Error::NotLeader { .. }) if Instant::now() < deadline => {
                    self.check_open()?;
                    self.await_leader(deadline).await?;
                }
                other => return other,
            }
        }
    }

    /// Makes the next local read linearizable: gets the read index from the leader (after it
    /// confirmed its leadership with a quorum) and waits until this member applied it.
    pub(crate) async fn linearize(&self) -> Result<()> {
        let me = self.inner.node_id;
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        loop {
            let attempt = match self.leader() {
                Some((leader, _)) if leader == me => read_index_local(&self.inner.raft).await,
                Some((leader, url)) => self.inner.channels.read_index(leader, &url).await,
                None => Err(Error::NotLeader { leader: None }),
            };
            match attempt {
                Ok(index) => {
                    if index > 0 {
                        let left = deadline.saturating_duration_since(Instant::now());
                        self.inner
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(index), "linearizable read")
                            .await
                            .map_err(|e| wait_error(e, "the read index to be applied"))?;
                    }
                    return Ok(());
                }
                // Reads are idempotent: retry through elections and unreachable leaders.
                Err(Error::NotLeader { .. } | Error::PeerUnreachable { .. })
                    if Instant::now() < deadline =>
                {
                    self.check_open()?;
                    self.await_leader(deadline).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
