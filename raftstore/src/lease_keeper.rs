//! The leader's side of leases: granting (choosing the id and raising the TTL before the entry
//! is proposed), keep-alive and time-to-live against the leader's in-memory deadlines, and the
//! expiry task that proposes the revocation of expired leases through the Raft log.
//!
//! Only a member that leads acts on deadlines: the expiry task of a follower does nothing, and
//! keep-alive / time-to-live calls reaching a follower are refused with
//! [`Error::NotLeader`] (the caller forwards them). Expiry goes through the log as a revoke, so
//! every member deletes the same keys at the same revision. The bookkeeping rules themselves are
//! in [`crate::lease`]; this module adds the clock, Raft and the state machine.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use openraft::ServerState;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::lease::{self, Deadlines, Lease, LeaseId, LeaseIdGen, LeaseTimeToLive, NO_LEASE};
use crate::state_machine::SmShared;
use crate::types::{NodeId, Raft, RaftRequest, RaftResponse};
use crate::wire::{LeaseCall, LeaseReply};

/// How often the leader looks for expired leases; expiry is at most this late.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// How many expired leases are revoked at once.
const REVOKE_CONCURRENCY: usize = 16;

/// One member's lease state that is not replicated: the leader's deadlines and its id generator.
/// It refers to the state machine weakly: the store owns that, and shutdown waits for every
/// strong reference to go.
pub(crate) struct Lessor {
    node: NodeId,
    min_ttl: i64,
    sm: Weak<SmShared>,
    deadlines: Mutex<Deadlines>,
    ids: Mutex<LeaseIdGen>,
}

impl std::fmt::Debug for Lessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lessor")
            .field("node", &self.node)
            .field("min_ttl", &self.min_ttl)
            .finish_non_exhaustive()
    }
}

impl Lessor {
    /// The lease state of member `node` whose Raft election timeout is at most
    /// `election_timeout_max` (which sets the minimum TTL, see [`lease::min_ttl`]).
    pub(crate) fn new(node: NodeId, election_timeout_max: Duration, sm: &Arc<SmShared>) -> Self {
        let unix_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Lessor {
            node,
            min_ttl: lease::min_ttl(election_timeout_max),
            sm: Arc::downgrade(sm),
            deadlines: Mutex::new(Deadlines::default()),
            ids: Mutex::new(LeaseIdGen::new(node, unix_millis)),
        }
    }

    /// The smallest TTL a lease is granted, in seconds.
    pub(crate) fn min_ttl(&self) -> i64 {
        self.min_ttl
    }

    fn sm(&self) -> Result<Arc<SmShared>> {
        self.sm.upgrade().ok_or(Error::Shutdown)
    }

    /// Answers `call` on this member, which must lead ([`Error::NotLeader`] otherwise).
    pub(crate) async fn serve(&self, raft: &Raft, call: LeaseCall) -> Result<LeaseReply> {
        let sm = self.sm()?;
        match call {
            LeaseCall::Grant { id, ttl } => self
                .grant(raft, &sm, id, ttl)
                .await
                .map(LeaseReply::Granted),
            LeaseCall::KeepAlive { id } => self
                .keep_alive(raft, &sm, id)
                .await
                .map(|ttl| LeaseReply::KeptAlive { ttl }),
            LeaseCall::TimeToLive { id, keys } => self
                .time_to_live(raft, &sm, id, keys)
                .await
                .map(LeaseReply::TimeToLive),
        }
    }

    fn deadlines(&self) -> MutexGuard<'_, Deadlines> {
        // Every critical section leaves the table consistent, so a poisoned lock is still usable.
        self.deadlines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// An id no lease has yet (as far as this member has applied).
    fn fresh_id(&self, sm: &SmShared) -> Result<LeaseId> {
        loop {
            let id = self
                .ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .next_id();
            if sm.lease(id)?.is_none() {
                return Ok(id);
            }
        }
    }

    /// Grants a lease through the log; this member must lead. `id` 0 lets this member choose
    /// one; the TTL is checked and raised to the minimum here, so every member applies the same.
    async fn grant(&self, raft: &Raft, sm: &SmShared, id: LeaseId, ttl: i64) -> Result<Lease> {
        let ttl = lease::grant_ttl(id, ttl, self.min_ttl)?;
        let id = if id == NO_LEASE {
            self.fresh_id(sm)?
        } else {
            id
        };
        let response = raft
            .client_write(RaftRequest::LeaseGrant { id, ttl })
            .await?
            .data;
        match response {
            RaftResponse::LeaseGranted { id, ttl } => {
                let granted = Lease { id, ttl };
                if let Ok(term) = leader_term(raft, self.node) {
                    let mut deadlines = self.deadlines();
                    deadlines.lead(term);
                    deadlines.granted(granted, Instant::now());
                }
                tracing::info!(node = self.node, lease = id, ttl, "lease granted");
                Ok(granted)
            }
            RaftResponse::Refused(refusal) => Err(refusal.into()),
            _ => Err(Error::UnexpectedResponse(
                "lease grant did not return a grant result",
            )),
        }
    }

    /// Renews lease `id` to now + TTL on this member, which must lead; returns the TTL.
    /// [`Error::LeaseNotFound`] if it does not exist or already expired.
    async fn keep_alive(&self, raft: &Raft, sm: &SmShared, id: LeaseId) -> Result<i64> {
        let term = leader_term(raft, self.node)?;
        let lease = find(raft, sm, id).await?;
        let mut deadlines = self.deadlines();
        deadlines.lead(term);
        deadlines
            .keep_alive(lease, Instant::now())
            .ok_or(Error::LeaseNotFound { lease: id })
    }

    /// Lease `id`'s granted and remaining TTL (and its keys if `keys`) on this member, which
    /// must lead. [`Error::LeaseNotFound`] if it does not exist or already expired.
    async fn time_to_live(
        &self,
        raft: &Raft,
        sm: &SmShared,
        id: LeaseId,
        keys: bool,
    ) -> Result<LeaseTimeToLive> {
        let term = leader_term(raft, self.node)?;
        let lease = find(raft, sm, id).await?;
        let remaining = {
            let mut deadlines = self.deadlines();
            deadlines.lead(term);
            deadlines.remaining(lease, Instant::now())
        }
        .ok_or(Error::LeaseNotFound { lease: id })?;
        Ok(LeaseTimeToLive {
            id,
            granted_ttl: lease.ttl,
            remaining,
            keys: if keys { sm.lease_keys(id)? } else { Vec::new() },
        })
    }
}

/// The term this member leads in, or [`Error::NotLeader`].
fn leader_term(raft: &Raft, node: NodeId) -> Result<u64> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    if m.state == ServerState::Leader && m.current_leader == Some(node) {
        return Ok(m.current_term);
    }
    let leader_url = m.current_leader.and_then(|leader| {
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.peer_url.clone())
    });
    Err(Error::NotLeader {
        leader: m.current_leader,
        leader_url,
    })
}

/// Lease `id` from the state machine. If it is not there, a grant committed under an earlier
/// leader may not be applied here yet: wait for everything committed, then look again.
async fn find(raft: &Raft, sm: &SmShared, id: LeaseId) -> Result<Lease> {
    if id <= NO_LEASE {
        return Err(Error::LeaseNotFound { lease: id });
    }
    if let Some(found) = sm.lease(id)? {
        return Ok(found);
    }
    raft.ensure_linearizable().await?;
    sm.lease(id)?.ok_or(Error::LeaseNotFound { lease: id })
}

/// The task that revokes expired leases while this member leads.
pub(crate) struct ExpiryTask {
    task: JoinHandle<()>,
}

impl ExpiryTask {
    /// Starts looking for expired leases every [`EXPIRY_TICK`].
    pub(crate) fn spawn(raft: Raft, sm: Arc<SmShared>, lessor: Arc<Lessor>) -> Self {
        ExpiryTask {
            task: tokio::spawn(expire_loop(raft, sm, lessor)),
        }
    }

    /// Stops the task and waits until it has let go of Raft and the state machine. A revoke
    /// in flight is abandoned: it either commits or the next leader revokes the lease again.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn expire_loop(raft: Raft, sm: Arc<SmShared>, lessor: Arc<Lessor>) {
    let node = lessor.node;
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(term) = leader_term(&raft, node) else {
            lessor.deadlines().step_down();
            continue;
        };
        let leases = match sm.leases() {
            Ok(leases) => leases,
            Err(e) => {
                tracing::error!(node, error = %e, "cannot read the lease table; expiry paused");
                continue;
            }
        };
        let due = {
            let mut deadlines = lessor.deadlines();
            if deadlines.lead(term) {
                tracing::info!(
                    node,
                    term,
                    leases = leases.len(),
                    "leading: every lease expires at now + TTL at the earliest"
                );
            }
            deadlines.due(&leases, Instant::now())
        };
        futures::stream::iter(due)
            .for_each_concurrent(REVOKE_CONCURRENCY, |id| revoke_expired(&raft, &lessor, id))
            .await;
    }
}

/// Proposes the revocation of the expired lease `id`. On failure the lease stays due and is
/// proposed again later (or by the next leader).
async fn revoke_expired(raft: &Raft, lessor: &Lessor, id: LeaseId) {
    match raft.client_write(RaftRequest::LeaseRevoke { id }).await {
        Ok(written) => {
            match written.data {
                RaftResponse::LeaseRevoked { revision } => {
                    tracing::info!(
                        node = lessor.node,
                        lease = id,
                        revision,
                        "lease expired; revoked"
                    );
                }
                other => {
                    tracing::debug!(node = lessor.node, lease = id, response = ?other, "expired lease was already gone");
                }
            }
            lessor.deadlines().forget(id);
        }
        Err(e) => {
            let e = Error::from(e);
            tracing::warn!(node = lessor.node, lease = id, error = %e, "revoking an expired lease failed; will retry");
        }
    }
}
