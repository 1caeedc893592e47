//! The leader-election decision: given what this server knows about the lease (as last read, and
//! since when it has looked the same), its own role and the time, decide whether to acquire,
//! renew, keep following, retry, or give up leadership. Pure: no I/O, time is passed in.
//!
//! Expiry is judged on this server's own monotonic clock, as client-go does: a standby counts a
//! lease as expired once it has seen the same version of it for the lease's duration, so clock
//! skew between servers does not matter. A leader gives up once `renew_deadline` (shorter than
//! the lease duration) has passed since the start of its last successful renewal, so it stops
//! acting before any standby can see its lease expire.

use std::time::{Duration, Instant};

use super::ElectionConfig;

/// One version of the lease as this server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `spec.holderIdentity` (empty: released, nobody holds it).
    pub holder: String,
    /// `spec.leaseDurationSeconds`: how long the holder promised to stay valid unrenewed.
    pub duration: Duration,
    /// The lease's resourceVersion; any write changes it.
    pub resource_version: String,
    /// When this server first saw this resourceVersion (its own clock).
    pub observed_at: Instant,
}

/// What the last read of the lease returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseRead {
    /// The read failed or timed out: nothing is known.
    Unknown,
    /// There is no Lease object.
    Absent,
    /// The lease as read.
    Present(Observed),
}

/// This server's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not leading: the control plane does not run here.
    Standby,
    /// Leading since the last successful write of the lease, whose request was sent at
    /// `renewed_at` (the send time, not the reply time, so the deadline is conservative).
    Leading {
        /// Send time of the last successful acquisition or renewal.
        renewed_at: Instant,
    },
}

/// Why a leader stops leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// No renewal succeeded within the renew deadline.
    RenewDeadlinePassed,
    /// Another server holds the lease now.
    TakenBy(String),
    /// The lease was deleted or released by someone else.
    Released,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LossReason::RenewDeadlinePassed => write!(f, "renew deadline passed"),
            LossReason::TakenBy(h) => write!(f, "lease taken over by {h}"),
            LossReason::Released => write!(f, "lease deleted or released by someone else"),
        }
    }
}

/// What the elector does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take the lease (create it, or compare-and-swap it to this server) and start leading.
    Acquire,
    /// Renew this server's lease.
    Renew,
    /// Another server holds a live lease: stand by and read again after `recheck_in`.
    Follow {
        /// The current holder.
        holder: String,
        /// When to look again (the retry period, or sooner if the lease expires sooner).
        recheck_in: Duration,
    },
    /// Nothing could be read; keep the current role and try again after `recheck_in`.
    Retry {
        /// When to try again.
        recheck_in: Duration,
    },
    /// Stop the control plane now and stand by.
    Lost(LossReason),
}

/// When this server first saw the lease's current version: unchanged resourceVersion keeps
/// the earlier observation time, a new one starts the clock again.
pub fn observed_at(previous: Option<&Observed>, resource_version: &str, now: Instant) -> Instant {
    match previous {
        Some(p) if p.resource_version == resource_version => p.observed_at,
        _ => now,
    }
}

/// The deadline by which a leader that renewed at `renewed_at` must have renewed again.
pub fn renew_deadline_at(cfg: &ElectionConfig, renewed_at: Instant) -> Instant {
    renewed_at + cfg.renew_deadline
}

/// Decides the next step for server `me` in `role`, given the last read of the lease.
pub fn decide(
    cfg: &ElectionConfig,
    me: &str,
    role: Role,
    lease: &LeaseRead,
    now: Instant,
) -> Decision {
    match role {
        Role::Leading { renewed_at } => {
            let deadline = renew_deadline_at(cfg, renewed_at);
            if now >= deadline {
                return Decision::Lost(LossReason::RenewDeadlinePassed);
            }
            match lease {
                LeaseRead::Unknown => Decision::Retry {
                    recheck_in: cfg.retry_period.min(deadline - now),
                },
                LeaseRead::Absent => Decision::Lost(LossReason::Released),
                LeaseRead::Present(o) if o.holder == me => Decision::Renew,
                LeaseRead::Present(o) if o.holder.is_empty() => {
                    Decision::Lost(LossReason::Released)
                }
                LeaseRead::Present(o) => Decision::Lost(LossReason::TakenBy(o.holder.clone())),
            }
        }
        Role::Standby => match lease {
            LeaseRead::Unknown => Decision::Retry {
                recheck_in: cfg.retry_period,
            },
            LeaseRead::Absent => Decision::Acquire,
            // Released, or held by this server before a restart: nobody else can be acting
            // on it, so take it at once (with a new fencing token).
            LeaseRead::Present(o) if o.holder.is_empty() || o.holder == me => Decision::Acquire,
            LeaseRead::Present(o) => {
                let expires = o.observed_at + o.duration;
                if now >= expires {
                    Decision::Acquire
                } else {
                    Decision::Follow {
                        holder: o.holder.clone(),
                        recheck_in: cfg.retry_period.min(expires - now),
                    }
                }
            }
        },
    }
}

/// How long to wait before the next round after `decision`, for a server now in `role`: the
/// retry period, but never past a leader's renew deadline (so a missed deadline is noticed
/// on time).
pub fn next_round_in(
    cfg: &ElectionConfig,
    role: Role,
    decision: &Decision,
    now: Instant,
) -> Duration {
    let base = match decision {
        Decision::Follow { recheck_in, .. } | Decision::Retry { recheck_in } => *recheck_in,
        Decision::Lost(_) => Duration::ZERO,
        Decision::Acquire | Decision::Renew => cfg.retry_period,
    };
    match role {
        Role::Leading { renewed_at } => {
            base.min(renew_deadline_at(cfg, renewed_at).saturating_duration_since(now))
        }
        Role::Standby => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ElectionConfig {
        ElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: &str, rv: &str, observed_at: Instant) -> LeaseRead {
        LeaseRead::Present(Observed {
            holder: holder.into(),
            duration: Duration::from_secs(15),
            resource_version: rv.into(),
            observed_at,
        })
    }

    #[test]
    fn a_missing_or_released_lease_is_acquired_at_once() {
        let now = Instant::now();
        assert_eq!(
            decide(&cfg(), "a", Role::Standby, &LeaseRead::Absent, now),
            Decision::Acquire
        );
        assert_eq!(
            decide(&cfg(), "a", Role::Standby, &held_by("", "7", now), now),
            Decision::Acquire
        );
    }

    #[test]
    fn a_standby_follows_a_live_holder_and_takes_over_only_after_the_lease_duration() {
        let t0 = Instant::now();
        let lease = held_by("b", "7", t0);
        let d = decide(
            &cfg(),
            "a",
            Role::Standby,
            &lease,
            t0 + Duration::from_secs(14),
        );
        assert_eq!(
            d,
            Decision::Follow {
                holder: "b".into(),
                recheck_in: Duration::from_secs(1)
            },
            "recheck when the lease would expire, not a full retry period later"
        );
        let d = decide(
            &cfg(),
            "a",
            Role::Standby,
            &lease,
            t0 + Duration::from_secs(15),
        );
        assert_eq!(d, Decision::Acquire);
    }

    #[test]
    fn a_renewal_seen_by_the_standby_restarts_its_expiry_clock() {
        let t0 = Instant::now();
        let first = Observed {
            holder: "b".into(),
            duration: Duration::from_secs(15),
            resource_version: "7".into(),
            observed_at: t0,
        };
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(observed_at(Some(&first), "7", t1), t0, "same version");
        let renewed_at = observed_at(Some(&first), "9", t1);
        assert_eq!(renewed_at, t1, "a renewal is a new version");
        let lease = held_by("b", "9", renewed_at);
        assert!(matches!(
            decide(
                &cfg(),
                "a",
                Role::Standby,
                &lease,
                t0 + Duration::from_secs(16)
            ),
            Decision::Follow { .. }
        ));
        assert_eq!(
            observed_at(None, "9", t1),
            t1,
            "first sight starts the clock"
        );
    }

    #[test]
    fn the_holders_own_lease_duration_governs_expiry() {
        let t0 = Instant::now();
        let short = LeaseRead::Present(Observed {
            holder: "b".into(),
            duration: Duration::from_secs(3),
            resource_version: "7".into(),
            observed_at: t0,
        });
        assert_eq!(
            decide(
                &cfg(),
                "a",
                Role::Standby,
                &short,
                t0 + Duration::from_secs(3)
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn a_server_that_held_the_lease_before_a_restart_takes_it_back_at_once() {
        let now = Instant::now();
        assert_eq!(
            decide(&cfg(), "a", Role::Standby, &held_by("a", "7", now), now),
            Decision::Acquire
        );
    }

    #[test]
    fn a_leader_renews_its_own_lease() {
        let t0 = Instant::now();
        let role = Role::Leading { renewed_at: t0 };
        let now = t0 + Duration::from_secs(2);
        assert_eq!(
            decide(&cfg(), "a", role, &held_by("a", "7", t0), now),
            Decision::Renew
        );
    }

    #[test]
    fn a_leader_that_cannot_renew_before_the_deadline_gives_up_even_without_a_read() {
        let t0 = Instant::now();
        let role = Role::Leading { renewed_at: t0 };
        let before = t0 + Duration::from_secs(9);
        assert_eq!(
            decide(&cfg(), "a", role, &LeaseRead::Unknown, before),
            Decision::Retry {
                recheck_in: Duration::from_secs(1)
            }
        );
        let at = t0 + Duration::from_secs(10);
        for read in [LeaseRead::Unknown, held_by("a", "7", t0)] {
            assert_eq!(
                decide(&cfg(), "a", role, &read, at),
                Decision::Lost(LossReason::RenewDeadlinePassed)
            );
        }
    }

    #[test]
    fn a_leader_that_sees_another_holder_or_no_lease_stops_at_once() {
        let t0 = Instant::now();
        let role = Role::Leading { renewed_at: t0 };
        assert_eq!(
            decide(&cfg(), "a", role, &held_by("b", "8", t0), t0),
            Decision::Lost(LossReason::TakenBy("b".into()))
        );
        assert_eq!(
            decide(&cfg(), "a", role, &LeaseRead::Absent, t0),
            Decision::Lost(LossReason::Released)
        );
        assert_eq!(
            decide(&cfg(), "a", role, &held_by("", "8", t0), t0),
            Decision::Lost(LossReason::Released)
        );
    }

    #[test]
    fn an_unreadable_lease_keeps_a_standby_waiting() {
        let now = Instant::now();
        assert_eq!(
            decide(&cfg(), "a", Role::Standby, &LeaseRead::Unknown, now),
            Decision::Retry {
                recheck_in: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn a_leaders_next_round_never_comes_after_its_renew_deadline() {
        let t0 = Instant::now();
        let role = Role::Leading { renewed_at: t0 };
        let now = t0 + Duration::from_millis(9_500);
        assert_eq!(
            next_round_in(&cfg(), role, &Decision::Renew, now),
            Duration::from_millis(500)
        );
        assert_eq!(
            next_round_in(&cfg(), Role::Standby, &Decision::Renew, now),
            Duration::from_secs(2)
        );
        assert_eq!(
            next_round_in(
                &cfg(),
                Role::Standby,
                &Decision::Lost(LossReason::Released),
                now
            ),
            Duration::ZERO
        );
    }
}
