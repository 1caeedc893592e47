//! Restart decisions for supervised children: exponential back-off and a restart budget, as
//! OTP's one_for_one supervisors have. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a supervisor restarts a failed child.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Delay before the first restart.
    pub base_delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
    /// At most this many restarts within `window`; one more escalates to the parent.
    pub budget: usize,
    /// The window the budget counts restarts in.
    pub window: Duration,
    /// A child that ran this long without failing starts again from `base_delay`.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            budget: 10,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

/// What to do after a child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart the child after this delay.
    RestartAfter(Duration),
    /// The budget is spent: stop restarting and fail upwards.
    Escalate,
}

/// The restart history of one child.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    restarts: VecDeque<Instant>,
    consecutive: u32,
    last_start: Option<Instant>,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new(policy: RestartPolicy) -> Self {
        RestartTracker {
            policy,
            restarts: VecDeque::new(),
            consecutive: 0,
            last_start: None,
        }
    }

    /// Records that the child was (re)started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.last_start = Some(now);
    }

    /// Records a failure at `now` and decides what to do.
    pub fn failed(&mut self, now: Instant) -> RestartDecision {
        if self
            .last_start
            .is_some_and(|s| now.duration_since(s) >= self.policy.reset_after)
        {
            self.consecutive = 0;
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.policy.budget {
            return RestartDecision::Escalate;
        }
        self.restarts.push_back(now);
        let factor = 2u32.saturating_pow(self.consecutive.min(16));
        self.consecutive += 1;
        let delay = self
            .policy
            .base_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay);
        RestartDecision::RestartAfter(delay)
    }

    /// Restarts counted in the current window.
    pub fn recent_restarts(&self) -> usize {
        self.restarts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            budget: 5,
            window: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| match t.failed(now + Duration::from_millis(i)) {
                RestartDecision::RestartAfter(d) => d.as_millis(),
                RestartDecision::Escalate => 0,
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 800]);
    }

    #[test]
    fn a_spent_budget_escalates_and_old_restarts_leave_the_window() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        for _ in 0..5 {
            assert!(matches!(t.failed(now), RestartDecision::RestartAfter(_)));
        }
        assert_eq!(t.failed(now), RestartDecision::Escalate);
        let later = now + Duration::from_secs(11);
        assert!(matches!(t.failed(later), RestartDecision::RestartAfter(_)));
        assert_eq!(t.recent_restarts(), 1);
    }

    #[test]
    fn a_long_good_run_resets_the_back_off() {
        let mut t = RestartTracker::new(policy());
        let now = Instant::now();
        t.failed(now);
        t.failed(now);
        t.started(now);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            t.failed(later),
            RestartDecision::RestartAfter(Duration::from_millis(100))
        );
    }
}
