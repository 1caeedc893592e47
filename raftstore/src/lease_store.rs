//! The lease half of the public [`Store`] API: grant, revoke, keep-alive, time-to-live and the
//! lease list (a put with a lease is [`Store::put_with_lease`]).
//!
//! Grants, keep-alives and time-to-live calls are answered by the leader, which chooses lease ids
//! and keeps the expiry deadlines; a follower forwards them like writes. A revoke is an ordinary
//! write through the Raft log. This module holds no state and decides nothing itself.

use crate::error::{Error, Result};
use crate::lease::{self, Lease, LeaseId, LeaseTimeToLive, NO_LEASE};
use crate::store::Store;
use crate::types::{RaftRequest, RaftResponse};
use crate::wire::{LeaseCall, LeaseReply, Proposal, ProposalOutcome};

impl Store {
    /// Grants a lease of `ttl` seconds and returns it. `id` 0 lets the leader choose a new
    /// positive id; another id must be unused ([`Error::LeaseExists`]). A TTL below
    /// [`Store::min_lease_ttl`] is raised to it, as etcd does; one above
    /// [`crate::MAX_LEASE_TTL`] is refused. The lease expires `ttl` seconds after the grant
    /// unless kept alive; expiry deletes every key attached to it.
    pub async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<Lease> {
        // Checked here too, so a bad request fails before it is forwarded.
        lease::grant_ttl(id, ttl, self.min_lease_ttl())?;
        match self.lease_call(LeaseCall::Grant { id, ttl }).await? {
            LeaseReply::Granted(granted) => Ok(granted),
            _ => Err(Error::UnexpectedResponse(
                "lease grant did not return a grant",
            )),
        }
    }

    /// Revokes lease `id`: deletes it and every key attached to it at one revision, which is
    /// returned (the unchanged store revision if it had no keys). [`Error::LeaseNotFound`] if
    /// it does not exist.
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<i64> {
        if id <= NO_LEASE {
            return Err(Error::LeaseNotFound { lease: id });
        }
        let request = RaftRequest::LeaseRevoke { id };
        match self.propose(Proposal::Write(request)).await? {
            ProposalOutcome::Write(RaftResponse::LeaseRevoked { revision }) => {
                tracing::info!(node = self.node_id(), lease = id, revision, "lease revoked");
                Ok(revision)
            }
            ProposalOutcome::Write(RaftResponse::Refused(refusal)) => Err(refusal.into()),
            _ => Err(Error::UnexpectedResponse(
                "lease revoke did not return a revoke result",
            )),
        }
    }

    /// Renews lease `id` so it expires its TTL from now (on the leader's clock) and returns the
    /// TTL in seconds. [`Error::LeaseNotFound`] if it does not exist or already expired.
    pub async fn lease_keep_alive(&self, id: LeaseId) -> Result<i64> {
        match self.lease_call(LeaseCall::KeepAlive { id }).await? {
            LeaseReply::KeptAlive { ttl } => Ok(ttl),
            _ => Err(Error::UnexpectedResponse(
                "lease keep-alive did not return a TTL",
            )),
        }
    }

    /// Lease `id`'s granted TTL and the time left until the leader expires it, with its keys if
    /// `keys`. [`Error::LeaseNotFound`] if it does not exist or already expired.
    pub async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLive> {
        match self.lease_call(LeaseCall::TimeToLive { id, keys }).await? {
            LeaseReply::TimeToLive(ttl) => Ok(ttl),
            _ => Err(Error::UnexpectedResponse(
                "lease time-to-live did not return a TTL",
            )),
        }
    }

    /// Every lease, sorted by id (a linearizable read of the replicated lease table).
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        self.check_open()?;
        self.linearize().await?;
        self.inner.sm.leases()
    }

    /// The smallest TTL a lease is granted, in seconds: 1.5 Raft election timeouts (the upper
    /// bound of the randomised timeout) rounded up, at least 1, following etcd; 2 s with the
    /// default tuning.
    pub fn min_lease_ttl(&self) -> i64 {
        self.inner.lessor.min_ttl()
    }

    async fn lease_call(&self, call: LeaseCall) -> Result<LeaseReply> {
        match self.propose(Proposal::Lease(call)).await? {
            ProposalOutcome::Lease(reply) => Ok(reply),
            _ => Err(Error::UnexpectedResponse(
                "lease call did not return a lease reply",
            )),
        }
    }
}
