//! Lease bookkeeping that needs no I/O: the replicated lease record, the rules for a grant (id,
//! minimum and maximum TTL), lease id generation, and the leader's in-memory expiry deadlines.
//!
//! Leases themselves are replicated state (the state machine keeps them in sled); deadlines are
//! not. Only the leader keeps deadlines, and a new leader starts every lease afresh at now + TTL
//! the first time it looks at it, as etcd does, so a fail-over extends leases and never expires
//! one early. Time is always passed in, so all of this is tested without sleeping.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::types::NodeId;

/// A lease id, as in etcd: positive for a lease, 0 for "no lease".
pub type LeaseId = i64;

/// The lease id meaning "not attached to a lease".
pub const NO_LEASE: LeaseId = 0;

/// The largest TTL a lease may be granted, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// After proposing the revocation of an expired lease, propose it again only after this long
/// if it is still there (the first proposal failed or is slow).
const REVOKE_RETRY: Duration = Duration::from_secs(2);

/// A lease as replicated on every member: its id and granted TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease id (> 0).
    pub id: LeaseId,
    /// The granted TTL in seconds (already raised to the minimum).
    pub ttl: i64,
}

/// A lease's time to live as the leader sees it (see [`crate::Store::lease_time_to_live`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLive {
    /// The lease id.
    pub id: LeaseId,
    /// The TTL it was granted, in seconds.
    pub granted_ttl: i64,
    /// Time left until the leader revokes it, unless it is kept alive.
    pub remaining: Duration,
    /// The keys attached to it, sorted (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// The minimum lease TTL in seconds for an election timeout: etcd's rule, 1.5 election timeouts
/// rounded up to whole seconds, so a lease outlives the leader election that follows the loss of
/// its leader. The upper bound of the randomised timeout is used; at least 1 s.
pub(crate) fn min_ttl(election_timeout_max: Duration) -> i64 {
    let millis = election_timeout_max.as_millis().saturating_mul(3) / 2;
    let secs = millis.div_ceil(1000);
    i64::try_from(secs)
        .unwrap_or(MAX_LEASE_TTL)
        .clamp(1, MAX_LEASE_TTL)
}

/// Checks a grant request before it goes anywhere: a negative id or a TTL above
/// [`MAX_LEASE_TTL`] is refused. Returns the TTL to grant: at least `min_ttl` (a smaller or
/// non-positive TTL is raised to it, as etcd does).
pub(crate) fn grant_ttl(id: LeaseId, ttl: i64, min_ttl: i64) -> Result<i64> {
    if id < 0 {
        return Err(Error::InvalidLease {
            field: "ID",
            reason: format!("lease id {id} is negative; use 0 to let the leader choose one"),
        });
    }
    if ttl > MAX_LEASE_TTL {
        return Err(Error::LeaseTtlTooLarge {
            ttl,
            max: MAX_LEASE_TTL,
        });
    }
    Ok(ttl.max(min_ttl))
}

/// Lease ids chosen by a leader, shaped like etcd's request ids: the member id in the top 16
/// bits, then milliseconds since the epoch at start-up and a counter. Ids of different members
/// never collide, nor do ids of one member across restarts (the clock moves on); all are > 0.
#[derive(Clone, Debug)]
pub(crate) struct LeaseIdGen {
    prefix: u64,
    suffix: u64,
}

impl LeaseIdGen {
    const SUFFIX_BITS: u32 = 48;
    const COUNTER_BITS: u32 = 8;

    /// A generator for member `node` started at `unix_millis`.
    pub(crate) fn new(node: NodeId, unix_millis: u64) -> Self {
        let time_bits = Self::SUFFIX_BITS - Self::COUNTER_BITS;
        LeaseIdGen {
            prefix: (node & 0xffff) << Self::SUFFIX_BITS,
            suffix: (unix_millis & ((1 << time_bits) - 1)) << Self::COUNTER_BITS,
        }
    }

    /// The next id.
    pub(crate) fn next_id(&mut self) -> LeaseId {
        loop {
            self.suffix = self.suffix.wrapping_add(1);
            let id =
                (self.prefix | (self.suffix & ((1 << Self::SUFFIX_BITS) - 1))) & (i64::MAX as u64);
            if let Ok(id) = LeaseId::try_from(id) {
                if id > 0 {
                    return id;
                }
            }
        }
    }
}

/// One lease's deadline on the leader.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    /// When the lease expires unless kept alive.
    at: Instant,
    /// Set once its revocation was proposed: propose again only after this.
    retry_revoke_at: Option<Instant>,
}

/// The leader's expiry deadlines, for the term it leads in. A lease with no entry yet gets
/// now + TTL when first looked at; entries are dropped on a term change or a step-down.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    term: Option<u64>,
    entries: HashMap<LeaseId, Deadline>,
}

impl Deadlines {
    /// Notes that this member leads in `term`; a new term starts every lease afresh. Returns
    /// whether it did.
    pub(crate) fn lead(&mut self, term: u64) -> bool {
        if self.term == Some(term) {
            return false;
        }
        self.term = Some(term);
        self.entries.clear();
        true
    }

    /// Notes that this member does not lead: deadlines are meaningless until it leads again.
    pub(crate) fn step_down(&mut self) {
        self.term = None;
        self.entries.clear();
    }

    fn entry(&mut self, lease: Lease, now: Instant) -> &mut Deadline {
        self.entries.entry(lease.id).or_insert_with(|| Deadline {
            at: now + ttl_duration(lease.ttl),
            retry_revoke_at: None,
        })
    }

    /// A lease was just granted: it expires at now + TTL.
    pub(crate) fn granted(&mut self, lease: Lease, now: Instant) {
        self.entries.insert(
            lease.id,
            Deadline {
                at: now + ttl_duration(lease.ttl),
                retry_revoke_at: None,
            },
        );
    }

    /// Renews `lease` to now + TTL and returns the TTL, or `None` if it already expired (it is
    /// being revoked; a keep-alive must not bring it back).
    pub(crate) fn keep_alive(&mut self, lease: Lease, now: Instant) -> Option<i64> {
        let entry = self.entry(lease, now);
        if entry.at <= now {
            return None;
        }
        entry.at = now + ttl_duration(lease.ttl);
        Some(lease.ttl)
    }

    /// Time left for `lease`, or `None` if it already expired.
    pub(crate) fn remaining(&mut self, lease: Lease, now: Instant) -> Option<Duration> {
        let entry = self.entry(lease, now);
        (entry.at > now).then(|| entry.at - now)
    }

    /// Brings the table in line with the replicated `leases` (new ones start at now + TTL,
    /// revoked ones are dropped) and returns the ids whose revocation should be proposed now:
    /// expired, and not proposed within the last [`REVOKE_RETRY`]. Sorted by id.
    pub(crate) fn due(&mut self, leases: &[Lease], now: Instant) -> Vec<LeaseId> {
        let live: BTreeSet<LeaseId> = leases.iter().map(|l| l.id).collect();
        self.entries.retain(|id, _| live.contains(id));
        let mut due = Vec::new();
        for lease in leases {
            let entry = self.entry(*lease, now);
            let retry_ok = entry.retry_revoke_at.is_none_or(|at| at <= now);
            if entry.at <= now && retry_ok {
                entry.retry_revoke_at = Some(now + REVOKE_RETRY);
                due.push(lease.id);
            }
        }
        due.sort_unstable();
        due
    }

    /// Drops `id` (revoked).
    pub(crate) fn forget(&mut self, id: LeaseId) {
        self.entries.remove(&id);
    }
}

/// A TTL in seconds as a duration (non-positive: zero).
fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn lease(id: LeaseId, ttl: i64) -> Lease {
        Lease { id, ttl }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(Duration::from_millis(1000)), 2); // etcd's default: 2 s
        assert_eq!(min_ttl(Duration::from_millis(600)), 1);
        assert_eq!(min_ttl(Duration::from_millis(2000)), 3);
        assert_eq!(min_ttl(Duration::from_millis(2100)), 4);
        assert_eq!(min_ttl(Duration::ZERO), 1);
    }

    #[test]
    fn grant_raises_small_ttls_and_refuses_huge_ttls_and_negative_ids() {
        assert_eq!(grant_ttl(0, 1, 2).ok(), Some(2));
        assert_eq!(grant_ttl(0, -5, 2).ok(), Some(2));
        assert_eq!(grant_ttl(7, 60, 2).ok(), Some(60));
        assert!(matches!(
            grant_ttl(0, MAX_LEASE_TTL + 1, 2),
            Err(Error::LeaseTtlTooLarge { .. })
        ));
        assert!(matches!(
            grant_ttl(-1, 10, 2),
            Err(Error::InvalidLease { field: "ID", .. })
        ));
    }

    #[test]
    fn generated_ids_are_positive_unique_and_differ_between_members() {
        let mut a = LeaseIdGen::new(1, 1_700_000_000_000);
        let mut b = LeaseIdGen::new(2, 1_700_000_000_000);
        let mut seen = BTreeSet::new();
        for _ in 0..1000 {
            for id in [a.next_id(), b.next_id()] {
                assert!(id > 0);
                assert!(seen.insert(id), "duplicate id {id}");
            }
        }
        // A member id with the top bit of the 16 set must still give positive ids.
        let mut high = LeaseIdGen::new(0xffff, u64::MAX);
        assert!((0..300).all(|_| high.next_id() > 0));
        // A restart later on gives ids after the earlier ones.
        let mut later = LeaseIdGen::new(1, 1_700_000_001_000);
        assert!(later.next_id() > a.next_id());
    }

    #[test]
    fn a_lease_expires_ttl_after_grant_unless_kept_alive() {
        let mut d = Deadlines::default();
        d.lead(1);
        let t0 = Instant::now();
        let l = lease(5, 10);
        d.granted(l, t0);
        assert_eq!(d.remaining(l, t0 + secs(4)), Some(secs(6)));
        assert!(d.due(&[l], t0 + secs(9)).is_empty());
        assert_eq!(d.keep_alive(l, t0 + secs(9)), Some(10));
        assert!(d.due(&[l], t0 + secs(18)).is_empty());
        assert_eq!(d.due(&[l], t0 + secs(19)), vec![5]);
    }

    #[test]
    fn an_expired_lease_is_not_revived_and_its_revocation_is_retried_later() {
        let mut d = Deadlines::default();
        d.lead(1);
        let t0 = Instant::now();
        let l = lease(5, 2);
        d.granted(l, t0);
        assert_eq!(d.due(&[l], t0 + secs(2)), vec![5]);
        assert_eq!(d.keep_alive(l, t0 + secs(2)), None);
        assert_eq!(d.remaining(l, t0 + secs(2)), None);
        // Proposed once; not again until the retry delay passed.
        assert!(d.due(&[l], t0 + secs(3)).is_empty());
        assert_eq!(d.due(&[l], t0 + secs(2) + REVOKE_RETRY), vec![5]);
        d.forget(5);
        assert!(d.due(&[], t0 + secs(10)).is_empty());
    }

    #[test]
    fn a_new_term_restarts_every_lease_at_now_plus_ttl() {
        let mut d = Deadlines::default();
        assert!(d.lead(1));
        let t0 = Instant::now();
        let (a, b) = (lease(1, 5), lease(2, 60));
        d.granted(a, t0);
        d.granted(b, t0);
        assert!(!d.lead(1), "same term keeps deadlines");
        d.step_down();
        // Leadership comes back in a later term, 4 s on: lease 1 would have had 1 s left.
        assert!(d.lead(3));
        let t1 = t0 + secs(4);
        assert!(d.due(&[a, b], t1).is_empty());
        assert_eq!(d.remaining(a, t1), Some(secs(5)));
        assert!(d.due(&[a, b], t1 + secs(4)).is_empty());
        assert_eq!(d.due(&[a, b], t1 + secs(5)), vec![1]);
    }

    #[test]
    fn due_adopts_new_leases_and_drops_revoked_ones() {
        let mut d = Deadlines::default();
        d.lead(1);
        let t0 = Instant::now();
        let (a, b) = (lease(1, 1), lease(2, 1));
        // Granted through another path (e.g. applied before this member led): first seen now.
        assert!(d.due(&[a, b], t0).is_empty());
        // Lease 2 was revoked by a client meanwhile: never proposed for revocation.
        assert_eq!(d.due(&[a], t0 + secs(1)), vec![1]);
        assert_eq!(
            d.remaining(b, t0 + secs(1)),
            Some(secs(1)),
            "b starts afresh"
        );
    }
}
