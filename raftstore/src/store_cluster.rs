//! The cluster side of [`Store`]: sending writes and membership changes to the leader, read
//! index for linearizable reads on any member, joining a running cluster, membership changes,
//! and the member listing (from the replicated membership, so the same on every member).
//!
//! Routing decisions use this member's view of the leader (openraft metrics); the leader-side
//! work itself is in [`crate::proposal`], the decisions in [`crate::member`]. This module owns
//! no state.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::member::{self, Member};
use crate::network::FORWARD_TIMEOUT;
use crate::proposal::propose_local;
use crate::store::{wait_error, Store};
use crate::types::{Node, NodeId, RaftRequest};
use crate::wire::{Proposal, ProposalOutcome};
use crate::write_batch::compacts;

/// Pause before retrying after a "not leader" answer, so an election can finish.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long [`Store::open_cluster`] keeps asking a running cluster to add a joining member.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between attempts to reach the cluster while joining.
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(200);

type Metrics = openraft::RaftMetrics<NodeId, Node>;

/// One member as listed by [`Store::members`], from the replicated membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's Raft id.
    pub id: NodeId,
    /// Its name; empty until the member has started and published it.
    pub name: String,
    /// Where its peer service listens.
    pub peer_url: String,
    /// Where it serves the etcd client API (published by the member; may be empty).
    pub client_urls: Vec<String>,
    /// Voter (counts for quorum) or learner (only replicates).
    pub voter: bool,
}

/// The members of an openraft membership, by id.
pub(crate) fn members_of(membership: &openraft::Membership<NodeId, Node>) -> Vec<MemberInfo> {
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| MemberInfo {
            id: *id,
            name: node.name.clone(),
            peer_url: node.peer_url.clone(),
            client_urls: node.client_urls.clone(),
            voter: voters.contains(id),
        })
        .collect()
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
    /// This member learnt that it was removed from the cluster (it should be stopped: the rest
    /// of the cluster no longer talks to it).
    pub removed: bool,
}

impl ClusterStatus {
    /// This member's entry in the membership (`None` before it was added or after removal).
    pub fn me(&self) -> Option<&MemberInfo> {
        self.members.iter().find(|m| m.id == self.node_id)
    }

    /// Whether this member is a learner (a member that is not a voter).
    pub fn is_learner(&self) -> bool {
        self.me().is_some_and(|m| !m.voter)
    }
}

fn status_of(m: &Metrics, removed: bool) -> ClusterStatus {
    let members = members_of(m.membership_config.membership());
    // A leader that removed itself still holds its own vote but has stepped down.
    let leader = m
        .current_leader
        .filter(|l| *l != m.id || m.state == openraft::ServerState::Leader);
    ClusterStatus {
        node_id: m.id,
        leader,
        term: m.current_term,
        applied_index: m.last_applied.map_or(0, |id| id.index),
        members,
        snapshot_index: m.snapshot.map_or(0, |id| id.index),
        purged_index: m.purged.map_or(0, |id| id.index),
        removed,
    }
}

/// Follows leader, term and membership changes of one member (see [`Store::status_watch`]).
pub struct StatusWatch {
    rx: watch::Receiver<Metrics>,
    removed: watch::Receiver<bool>,
    /// Leader, term, members and removal last reported.
    last: Option<(Option<NodeId>, u64, Vec<MemberInfo>, bool)>,
}

impl StatusWatch {
    /// Waits for the next change of leader, term, membership or removal and returns the new
    /// status; `None` once the store has shut down.
    pub async fn changed(&mut self) -> Option<ClusterStatus> {
        loop {
            let removed = *self.removed.borrow_and_update();
            let status = status_of(&self.rx.borrow_and_update(), removed);
            // Applies and snapshots alone are not a change worth reporting.
            let key = (
                status.leader,
                status.term,
                status.members.clone(),
                status.removed,
            );
            if self.last.as_ref() != Some(&key) {
                self.last = Some(key);
                return Some(status);
            }
            tokio::select! {
                changed = self.rx.changed() => if changed.is_err() { return None },
                changed = self.removed.changed() => if changed.is_err() { return None },
            }
        }
    }
}

impl Store {
    /// This member's view of the cluster: members with peer URLs, leader and term.
    pub fn members(&self) -> ClusterStatus {
        status_of(
            &self.inner.raft.metrics().borrow(),
            *self.inner.removed.borrow(),
        )
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
            removed: self.inner.removed.subscribe(),
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
        m.current_leader.ok_or(Error::NotLeader {
            leader: None,
            leader_url: None,
        })
    }

    /// Waits until this member is a voter (a joining member is promoted by the leader once it
    /// has caught up).
    pub async fn wait_until_voter(&self, timeout: Duration) -> Result<()> {
        let me = self.inner.node_id;
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.membership_config
                        .membership()
                        .voter_ids()
                        .any(|v| v == me)
                },
                "this member is a voter",
            )
            .await
            .map_err(|e| wait_error(e, "this member to become a voter"))?;
        Ok(())
    }

    /// Adds the member reachable at `peer_url` under the id derived from it (see
    /// [`crate::member_id`]) and returns that id and the members afterwards. As a learner it
    /// stays one until promoted; otherwise the leader promotes it as soon as it has caught up
    /// (a voter that never ran would count for quorum without being able to vote). Returns as
    /// soon as the change is committed: the new member need not run yet. Adding the same member
    /// twice is refused with [`crate::MemberError::PeerUrlExists`], as in etcd. Works from any
    /// member.
    pub async fn add_member(
        &self,
        peer_url: &str,
        as_learner: bool,
    ) -> Result<(NodeId, Vec<MemberInfo>)> {
        let peer_url = member::normalize_peer_url(peer_url)?;
        let id = member::member_id(&peer_url)?;
        let member = Member {
            promote_when_caught_up: !as_learner,
            ..Member::new(peer_url)
        };
        let proposal = Proposal::AddMember {
            id,
            member,
            rejoin: false,
        };
        let (_, members) = self.change(proposal).await?;
        Ok((id, members))
    }

    /// Adds `id` as a learner reachable at `peer_url` (an explicit id, for members started with
    /// [`crate::ClusterConfig::joining`]); returns the log index of the change once it is
    /// committed. The learner catches up in the background. Works from any member.
    pub async fn add_learner(&self, id: NodeId, peer_url: &str) -> Result<u64> {
        let member = Member::new(member::normalize_peer_url(peer_url)?);
        let proposal = Proposal::AddMember {
            id,
            member,
            rejoin: false,
        };
        let (log_index, _) = self.change(proposal).await?;
        Ok(log_index)
    }

    /// Makes the learner `id` a voter; refused with [`crate::MemberError::LearnerNotReady`]
    /// until it holds 90% of the leader's log (as etcd). Works from any member.
    pub async fn promote(&self, id: NodeId) -> Result<u64> {
        Ok(self.change(Proposal::Promote { id }).await?.0)
    }

    /// Removes member `id` (voter or learner) from the cluster. Works from any member; a leader
    /// that removes itself steps down once the change is committed and the rest elect a new
    /// leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<u64> {
        Ok(self.change(Proposal::Remove { id }).await?.0)
    }

    /// Runs a membership proposal on the leader; returns the log index of the change and the
    /// members afterwards.
    pub(crate) async fn change(&self, proposal: Proposal) -> Result<(u64, Vec<MemberInfo>)> {
        match self.propose(proposal).await? {
            ProposalOutcome::Membership { log_index, members } => Ok((log_index, members)),
            ProposalOutcome::Write(_) | ProposalOutcome::Writes(_) | ProposalOutcome::Lease(_) => {
                Err(Error::UnexpectedResponse(
                    "membership change returned a write outcome",
                ))
            }
        }
    }

    /// Asks the cluster reachable at `url` (any member's peer URL) to add this member as
    /// `member`, following "not leader" answers to the leader, until [`JOIN_TIMEOUT`].
    pub(crate) async fn join_via(&self, url: &str, member: Member) -> Result<()> {
        let me = self.inner.node_id;
        let proposal = Proposal::AddMember {
            id: me,
            member,
            rejoin: true,
        };
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let mut target = member::normalize_peer_url(url)?;
        loop {
            let id = member::member_id(&target).unwrap_or_default();
            tracing::info!(node = me, via = %target, "asking the cluster to add this member");
            let attempt = self.inner.channels.forward(id, &target, &proposal).await;
            let retry = match attempt {
                Ok(_) => {
                    tracing::info!(node = me, "added to the cluster; catching up as a learner");
                    return Ok(());
                }
                Err(Error::NotLeader {
                    leader_url: Some(leader),
                    ..
                }) if leader != target => {
                    target = leader;
                    continue;
                }
                Err(
                    e @ (Error::NotLeader { .. }
                    | Error::PeerUnreachable { .. }
                    | Error::Membership(_)),
                ) => e,
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                tracing::warn!(node = me, via = %url, error = %retry, "giving up joining the cluster");
                return Err(retry);
            }
            self.check_open()?;
            tokio::time::sleep(JOIN_RETRY_PAUSE).await;
        }
    }

    /// Asks the cluster for its membership through the members this one last knew of (following
    /// "not leader" answers to the leader); `None` if nobody answered.
    pub(crate) async fn ask_membership(
        &self,
        peers: &[(NodeId, String)],
    ) -> Option<Vec<MemberInfo>> {
        for (id, url) in peers {
            let mut target = (*id, url.clone());
            // One redirect to the leader at most.
            for _ in 0..2 {
                match self
                    .inner
                    .channels
                    .forward(target.0, &target.1, &Proposal::Members)
                    .await
                {
                    Ok(ProposalOutcome::Membership { members, .. }) => return Some(members),
                    Err(Error::NotLeader {
                        leader: Some(leader),
                        leader_url: Some(url),
                    }) => target = (leader, url),
                    Ok(_) | Err(_) => break,
                }
            }
        }
        None
    }

    /// Records that this member was removed from the cluster (see [`ClusterStatus::removed`]).
    pub(crate) fn mark_removed(&self) {
        if !self.inner.removed.send_replace(true) {
            tracing::warn!(
                node = self.inner.node_id,
                "this member was removed from the cluster; it should be stopped"
            );
        }
    }

    /// The leader this member knows of and its peer URL.
    fn leader(&self) -> Option<(NodeId, String)> {
        crate::read_index::leader_of(&self.inner.raft)
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
                    propose_local(
                        &self.inner.raft,
                        &self.inner.lessor,
                        &self.inner.writes,
                        proposal.clone(),
                    )
                    .await
                }
                Some((leader, url)) => {
                    tracing::debug!(node = me, leader, "forwarding proposal to leader");
                    match &proposal {
                        // Batched with concurrent writes: one peer call (see `forward_batch`).
                        Proposal::Write(RaftRequest::Txn(txn)) if !compacts(txn) => self
                            .inner
                            .forwards
                            .write(txn.clone())
                            .await
                            .map(ProposalOutcome::Write),
                        _ => self.inner.channels.forward(leader, &url, &proposal).await,
                    }
                }
                None => Err(Error::NotLeader {
                    leader: None,
                    leader_url: None,
                }),
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
        let deadline = Instant::now() + FORWARD_TIMEOUT;
        loop {
            // Batched: concurrent reads share one leadership round (see `read_index`).
            match self.inner.reads.fetch().await {
                Ok(index) => {
                    // Usually applied already; otherwise wait for openraft to report it.
                    if index > self.inner.sm.applied_index() {
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
