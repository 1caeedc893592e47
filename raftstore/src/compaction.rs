//! Automatic compaction of the MVCC history, as etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention` do it: `periodic` keeps the last retention window of history,
//! `revision` keeps the last N revisions.
//!
//! The decision ([`Decider`]) is pure and driven by the caller's clock; [`Store::start_auto_compaction`]
//! runs it on a timer on every member, but only the member that currently leads proposes the
//! compaction, through the Raft log (so every member compacts at the same revision). Like etcd,
//! followers keep sampling revisions, so a new leader can compact at once with the same window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::Error;
use crate::store::Store;

/// How often etcd's revision compactor checks (`revInterval`).
pub const DEFAULT_REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// etcd caps the periodic compactor's interval at one hour.
const MAX_PERIODIC_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// etcd samples the revision ten times per compaction interval (`retryDivisor`).
const SAMPLES_PER_INTERVAL: u32 = 10;

/// When history is compacted automatically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactionPolicy {
    /// Keep every revision written during the last `retention`: once `retention` has passed,
    /// and then every `min(retention, 1h)`, compact to the revision the store had `retention`
    /// ago (etcd's `periodic` mode).
    Periodic {
        /// How much history (in time) to keep.
        retention: Duration,
    },
    /// Every `interval`, compact to `current revision - keep` (etcd's `revision` mode; etcd
    /// checks every 5 minutes, see [`DEFAULT_REVISION_INTERVAL`]).
    Revision {
        /// How many revisions to keep.
        keep: i64,
        /// How often to check.
        interval: Duration,
    },
}

/// A compaction policy given by flags that etcd would refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `--auto-compaction-mode` is neither `periodic` nor `revision`.
    #[error("--auto-compaction-mode {0:?}: must be \"periodic\" or \"revision\"")]
    UnknownMode(String),
    /// `--auto-compaction-retention` cannot be read for the mode.
    #[error("--auto-compaction-retention {value:?}: {reason}")]
    BadRetention {
        /// The flag's value.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl CompactionPolicy {
    /// The policy for etcd's flags: `mode` is `periodic` or `revision`; `retention` is, for
    /// `periodic`, whole hours (`"1"`) or a duration (`"30m"`, `"1h30m"`, `"90s"`), for
    /// `revision` a number of revisions. A zero retention disables compaction (`None`), as in
    /// etcd, where it is the default.
    pub fn from_flags(mode: &str, retention: &str) -> Result<Option<Self>, PolicyError> {
        let bad = |reason| PolicyError::BadRetention {
            value: retention.to_string(),
            reason,
        };
        match mode {
            "periodic" => {
                let retention = match retention.trim().parse::<u64>() {
                    Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                    Err(_) => parse_duration(retention.trim()).ok_or_else(|| {
                        bad("expected whole hours or a duration such as 30m, 1h30m or 90s")
                    })?,
                };
                Ok((!retention.is_zero()).then_some(CompactionPolicy::Periodic { retention }))
            }
            "revision" => {
                let keep = retention
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad("expected a non-negative number of revisions"))?;
                Ok((keep > 0).then_some(CompactionPolicy::Revision {
                    keep,
                    interval: DEFAULT_REVISION_INTERVAL,
                }))
            }
            other => Err(PolicyError::UnknownMode(other.to_string())),
        }
    }

    /// How often the driver samples the revision and asks the [`Decider`].
    pub fn tick_interval(&self) -> Duration {
        match self {
            CompactionPolicy::Periodic { retention } => {
                (*retention).min(MAX_PERIODIC_INTERVAL) / SAMPLES_PER_INTERVAL
            }
            CompactionPolicy::Revision { interval, .. } => *interval,
        }
    }
}

/// Parses a Go-style duration made of `<number><unit>` parts (`ms`, `s`, `m`, `h`), e.g.
/// `1h30m` or `1.5h`.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..split].parse().ok()?;
        rest = &rest[split..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// The pure compaction decision: fed the clock and the store's state on every tick, it says
/// which revision to compact to, if any. The caller reports how the compaction went.
#[derive(Debug)]
pub struct Decider {
    policy: CompactionPolicy,
    /// Periodic mode: `(time, revision)` samples, oldest first, covering the retention window.
    samples: VecDeque<(Instant, i64)>,
    /// Periodic mode: when the last compaction succeeded (or the decider started).
    last_success: Instant,
    /// Periodic mode: whether a compaction has succeeded since start (the first one waits for
    /// a whole retention window, later ones for the compaction interval).
    compacted_once: bool,
    /// Revision mode: the last target that succeeded, so it is not proposed twice.
    last_target: i64,
}

impl Decider {
    /// A decider for `policy` starting at `now`.
    pub fn new(policy: CompactionPolicy, now: Instant) -> Self {
        Decider {
            policy,
            samples: VecDeque::new(),
            last_success: now,
            compacted_once: false,
            last_target: 0,
        }
    }

    /// Records the store's `revision` at `now` and returns the revision to compact to, if it is
    /// time and this member leads. `compacted` is the store's current compaction revision:
    /// a target at or below it is already done.
    pub fn tick(
        &mut self,
        now: Instant,
        revision: i64,
        compacted: i64,
        is_leader: bool,
    ) -> Option<i64> {
        match self.policy {
            CompactionPolicy::Periodic { retention } => {
                self.samples.push_back((now, revision));
                let cutoff = now.checked_sub(retention)?;
                // Keep the newest sample at or before the cutoff: it is the revision the store
                // had `retention` ago.
                while self.samples.len() > 1 && self.samples[1].0 <= cutoff {
                    self.samples.pop_front();
                }
                let wait = if self.compacted_once {
                    retention.min(MAX_PERIODIC_INTERVAL)
                } else {
                    retention
                };
                if !is_leader || now.duration_since(self.last_success) < wait {
                    return None;
                }
                let (at, target) = *self.samples.front()?;
                if at > cutoff {
                    return None;
                }
                if target <= compacted {
                    // Nothing new to drop; count it as done, as etcd does on ErrCompacted.
                    self.succeeded(now, target);
                    return None;
                }
                Some(target)
            }
            CompactionPolicy::Revision { keep, .. } => {
                let target = revision - keep;
                if !is_leader || target <= 0 || target == self.last_target || target <= compacted {
                    return None;
                }
                Some(target)
            }
        }
    }

    /// Reports that compacting to `target` succeeded at `now` (or was already done).
    pub fn succeeded(&mut self, now: Instant, target: i64) {
        self.last_success = now;
        self.compacted_once = true;
        self.last_target = target;
    }
}

/// The running automatic compactor of one member (see [`Store::start_auto_compaction`]). It
/// stops when this handle is dropped or the store shuts down.
#[derive(Debug)]
pub struct AutoCompactor {
    task: JoinHandle<()>,
}

impl Drop for AutoCompactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Store {
    /// Starts compacting history automatically by `policy`. Runs on every member; only the
    /// current leader proposes compactions (through the Raft log).
    pub fn start_auto_compaction(&self, policy: CompactionPolicy) -> AutoCompactor {
        tracing::info!(node = self.node_id(), ?policy, "auto compaction enabled");
        AutoCompactor {
            task: tokio::spawn(run(self.clone(), policy)),
        }
    }
}

async fn run(store: Store, policy: CompactionPolicy) {
    let node = store.node_id();
    let mut ticker = tokio::time::interval(policy.tick_interval().max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut decider = Decider::new(policy, Instant::now());
    loop {
        ticker.tick().await;
        if store.check_open().is_err() {
            return;
        }
        let is_leader = store.members().leader == Some(node);
        let now = Instant::now();
        let Some(target) = decider.tick(now, store.revision(), store.compact_revision(), is_leader)
        else {
            continue;
        };
        match store.compact(target).await {
            Ok(compact_revision) => {
                tracing::info!(node, compact_revision, "auto compaction done");
                decider.succeeded(now, target);
            }
            Err(Error::Compacted { .. }) => decider.succeeded(now, target),
            Err(Error::Shutdown) => return,
            // Leadership moved or a quorum is missing: try again on the next tick.
            Err(e) => tracing::warn!(node, target, error = %e, "auto compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn flags_follow_etcd_units_and_zero_disables() {
        let periodic = |r: Duration| Ok(Some(CompactionPolicy::Periodic { retention: r }));
        assert_eq!(
            CompactionPolicy::from_flags("periodic", "1"),
            periodic(secs(3600))
        );
        assert_eq!(
            CompactionPolicy::from_flags("periodic", "30m"),
            periodic(secs(1800))
        );
        assert_eq!(
            CompactionPolicy::from_flags("periodic", "1h30m"),
            periodic(secs(5400))
        );
        assert_eq!(
            CompactionPolicy::from_flags("periodic", "1.5s"),
            periodic(Duration::from_millis(1500))
        );
        assert_eq!(CompactionPolicy::from_flags("periodic", "0"), Ok(None));
        assert_eq!(
            CompactionPolicy::from_flags("revision", "1000"),
            Ok(Some(CompactionPolicy::Revision {
                keep: 1000,
                interval: DEFAULT_REVISION_INTERVAL
            }))
        );
        assert_eq!(CompactionPolicy::from_flags("revision", "0"), Ok(None));
        for (mode, retention) in [
            ("periodic", "10x"),
            ("periodic", "h"),
            ("periodic", ""),
            ("revision", "1h"),
            ("revision", "-3"),
        ] {
            assert!(
                matches!(
                    CompactionPolicy::from_flags(mode, retention),
                    Err(PolicyError::BadRetention { .. })
                ),
                "{mode} {retention} accepted"
            );
        }
        assert_eq!(
            CompactionPolicy::from_flags("hourly", "1"),
            Err(PolicyError::UnknownMode("hourly".into()))
        );
    }

    #[test]
    fn periodic_ticks_ten_times_per_interval_capped_at_an_hour() {
        let p = CompactionPolicy::Periodic {
            retention: secs(100),
        };
        assert_eq!(p.tick_interval(), secs(10));
        let p = CompactionPolicy::Periodic {
            retention: secs(24 * 3600),
        };
        assert_eq!(p.tick_interval(), secs(360));
    }

    #[test]
    fn periodic_compacts_to_the_revision_of_one_retention_ago() {
        let t0 = Instant::now();
        let mut d = Decider::new(
            CompactionPolicy::Periodic {
                retention: secs(100),
            },
            t0,
        );
        // One tick every 10 s; the revision grows by 5 per tick.
        let at = |i: u64| t0 + secs(10 * i);
        let rev = |i: u64| 1 + 5 * i as i64;
        for i in 0..10 {
            assert_eq!(
                d.tick(at(i), rev(i), 0, true),
                None,
                "too early at tick {i}"
            );
        }
        // 100 s after start: the revision sampled at start.
        assert_eq!(d.tick(at(10), rev(10), 0, true), Some(rev(0)));
        d.succeeded(at(10), rev(0));
        // Later compactions come one interval (here = retention) apart, each to the revision
        // of 100 s before.
        for i in 11..20 {
            assert_eq!(d.tick(at(i), rev(i), rev(0), true), None, "tick {i}");
        }
        assert_eq!(d.tick(at(20), rev(20), rev(0), true), Some(rev(10)));
    }

    #[test]
    fn periodic_waits_while_following_but_keeps_sampling_and_retries_failures() {
        let t0 = Instant::now();
        let mut d = Decider::new(
            CompactionPolicy::Periodic {
                retention: secs(100),
            },
            t0,
        );
        for i in 0..=12 {
            assert_eq!(d.tick(t0 + secs(10 * i), 10 + i as i64, 0, false), None);
        }
        // Becoming leader: the window sampled as a follower is used at once.
        assert_eq!(d.tick(t0 + secs(130), 23, 0, true), Some(13));
        // The compaction failed (not reported as success): the next tick tries again.
        assert_eq!(d.tick(t0 + secs(140), 24, 0, true), Some(14));
        // Already compacted past the target: nothing to do, and it counts as done.
        assert_eq!(d.tick(t0 + secs(150), 25, 40, true), None);
        assert_eq!(d.tick(t0 + secs(160), 26, 40, true), None);
    }

    #[test]
    fn revision_mode_keeps_the_last_n_revisions_and_never_repeats_a_target() {
        let t0 = Instant::now();
        let policy = CompactionPolicy::Revision {
            keep: 10,
            interval: secs(1),
        };
        let mut d = Decider::new(policy, t0);
        assert_eq!(d.tick(t0, 8, 0, true), None, "fewer revisions than kept");
        assert_eq!(d.tick(t0, 25, 0, false), None, "followers never propose");
        assert_eq!(d.tick(t0, 25, 0, true), Some(15));
        d.succeeded(t0, 15);
        assert_eq!(d.tick(t0, 25, 15, true), None, "same target again");
        assert_eq!(d.tick(t0, 40, 15, true), Some(30));
    }
}
