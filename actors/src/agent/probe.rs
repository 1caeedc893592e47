//! Kubelet's probe rules as a pure state machine, one [`ContainerProber`] per running container
//! attempt: when each probe (startup, liveness, readiness) is due (`initialDelaySeconds` from the
//! container's start, then every `periodSeconds`), how consecutive results turn into a status
//! (`successThreshold` / `failureThreshold`), how an unfinished startup probe holds liveness and
//! readiness back, and when the container must be restarted. It performs no I/O and reads no
//! clock: callers pass `now`. Running a probe is [`super::prober`]'s job.

use std::time::{Duration, Instant};

use api::v1;

/// The three probe kinds of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `startupProbe`: holds the other probes back until it succeeds once.
    Startup,
    /// `livenessProbe`: restarts the container when it fails.
    Liveness,
    /// `readinessProbe`: decides whether the container is ready.
    Readiness,
}

impl ProbeKind {
    /// The kind as kubelet names it in messages (`Startup`, `Liveness`, `Readiness`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    /// The container's probe of this kind, if it has one.
    pub fn of(self, c: &v1::Container) -> Option<&v1::Probe> {
        match self {
            ProbeKind::Startup => c.startup_probe.as_ref(),
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
        }
    }
}

/// The result of running one probe once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed.
    Success,
    /// The check failed (including timeouts and unsupported actions).
    Failure {
        /// Why, for the pod's status.
        message: String,
    },
}

/// Timing and thresholds of a probe, with Kubernetes' lower bounds applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Delay after the container started before the first probe.
    pub initial_delay: Duration,
    /// Interval between probes (at least 1 s).
    pub period: Duration,
    /// Time a single probe may take (at least 1 s).
    pub timeout: Duration,
    /// Consecutive successes that make the status success (at least 1).
    pub success_threshold: u32,
    /// Consecutive failures that make the status failure (at least 1).
    pub failure_threshold: u32,
}

impl ProbeTiming {
    /// Timing of `p`; zero or negative fields get Kubernetes' defaults (API defaulting usually
    /// has filled them in already).
    pub fn of(p: &v1::Probe) -> ProbeTiming {
        let secs =
            |v: i32, default: u64| Duration::from_secs(if v > 0 { v as u64 } else { default });
        let count = |v: i32, default: u32| if v > 0 { v as u32 } else { default };
        ProbeTiming {
            initial_delay: Duration::from_secs(p.initial_delay_seconds.max(0) as u64),
            period: secs(p.period_seconds, 10),
            timeout: secs(p.timeout_seconds, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// What the container's probes say right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerHealth {
    /// `started`: the startup probe succeeded (or there is none).
    pub started: bool,
    /// `ready`: started, and the readiness probe's status is success (or there is none).
    pub ready: bool,
    /// Why the container is not ready or not started, if a probe said so.
    pub message: Option<String>,
}

impl ContainerHealth {
    /// Health of a running container no probe result is known for yet: not started while a
    /// startup probe exists, not ready while a startup or readiness probe exists.
    pub fn initial(c: &v1::Container) -> ContainerHealth {
        let started = c.startup_probe.is_none();
        ContainerHealth {
            started,
            ready: started && c.readiness_probe.is_none(),
            message: None,
        }
    }
}

/// The container must be restarted: its liveness or startup probe reached `failureThreshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    /// The probe that failed.
    pub kind: ProbeKind,
    /// Kubelet-style reason, e.g. `Liveness probe failed: connection refused`.
    pub message: String,
}

/// One probe of one container attempt.
#[derive(Debug, Clone)]
struct Tracker {
    kind: ProbeKind,
    timing: ProbeTiming,
    /// The published status; `None` is kubelet's Unknown.
    status: Option<bool>,
    /// The last raw result and how many times in a row it came.
    last: Option<bool>,
    run: u32,
    message: Option<String>,
    next_at: Instant,
    /// A probe is running; its result is expected before this instant.
    in_flight: Option<Instant>,
    /// Failed for good (liveness/startup): no more probing of this attempt.
    on_hold: bool,
}

impl Tracker {
    fn new(kind: ProbeKind, timing: ProbeTiming, started_at: Instant) -> Tracker {
        Tracker {
            kind,
            timing,
            // Kubelet's initial values: readiness Failure, liveness Success, startup Unknown.
            status: match kind {
                ProbeKind::Readiness => Some(false),
                ProbeKind::Liveness => Some(true),
                ProbeKind::Startup => None,
            },
            last: None,
            run: 0,
            message: None,
            next_at: started_at + timing.initial_delay,
            in_flight: None,
            on_hold: false,
        }
    }

    fn busy(&self, now: Instant) -> bool {
        self.in_flight.is_some_and(|until| now < until)
    }

    /// Applies one result; true when the status just became failure.
    fn record(&mut self, ok: bool) -> bool {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.timing.success_threshold
        } else {
            self.timing.failure_threshold
        };
        if self.run < threshold {
            return false;
        }
        self.status = Some(ok);
        if !ok && self.kind != ProbeKind::Readiness {
            self.on_hold = true;
            self.run = 0;
            return true;
        }
        false
    }
}

/// The probes of one attempt of one container (a restarted container gets a new prober).
#[derive(Debug, Clone)]
pub struct ContainerProber {
    container_id: String,
    started: bool,
    trackers: Vec<Tracker>,
}

impl ContainerProber {
    /// Probes of container `c`, attempt `container_id`, whose process started at `started_at`.
    pub fn new(c: &v1::Container, container_id: &str, started_at: Instant) -> ContainerProber {
        let trackers = [
            ProbeKind::Startup,
            ProbeKind::Liveness,
            ProbeKind::Readiness,
        ]
        .into_iter()
        .filter_map(|k| {
            k.of(c)
                .map(|p| Tracker::new(k, ProbeTiming::of(p), started_at))
        })
        .collect();
        ContainerProber {
            container_id: container_id.to_string(),
            started: c.startup_probe.is_none(),
            trackers,
        }
    }

    /// Runtime id of the attempt these probes belong to.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// Whether a tracker may run now: the startup probe only until it succeeded, the others
    /// only after it did.
    fn gated(&self, t: &Tracker) -> bool {
        !t.on_hold
            && match t.kind {
                ProbeKind::Startup => !self.started,
                _ => self.started,
            }
    }

    /// The probes to run now; each is marked in flight and its next run scheduled a period on.
    pub fn due(&mut self, now: Instant) -> Vec<ProbeKind> {
        let started = self.started;
        let mut out = Vec::new();
        for t in &mut self.trackers {
            let open = !t.on_hold
                && match t.kind {
                    ProbeKind::Startup => !started,
                    _ => started,
                };
            if open && !t.busy(now) && t.next_at <= now {
                // A result lost in transit must not stop the probe for good.
                t.in_flight = Some(now + t.timing.timeout + t.timing.period);
                t.next_at = now + t.timing.period;
                out.push(t.kind);
            }
        }
        out
    }

    /// When the next probe falls due, if any may run again.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.trackers
            .iter()
            .filter(|t| self.gated(t))
            .map(|t| match t.in_flight {
                // Busy: the result reschedules; otherwise retry once the result counts as lost.
                Some(until) if now < until => until.max(t.next_at),
                _ => t.next_at,
            })
            .min()
    }

    /// Records a result of probe `kind`. Returns the restart verdict when a liveness or startup
    /// probe just reached its failure threshold (the attempt is then on hold for good).
    pub fn record(&mut self, kind: ProbeKind, outcome: &ProbeOutcome) -> Option<Restart> {
        let started = self.started;
        let t = self.trackers.iter_mut().find(|t| t.kind == kind)?;
        t.in_flight = None;
        if t.on_hold || (kind == ProbeKind::Startup) == started {
            // A late result of a probe that no longer runs (startup done, or held back).
            return None;
        }
        let ok = matches!(outcome, ProbeOutcome::Success);
        t.message = match outcome {
            ProbeOutcome::Success => None,
            ProbeOutcome::Failure { message } => {
                Some(format!("{} probe failed: {message}", kind.as_str()))
            }
        };
        let failed = t.record(ok);
        if kind == ProbeKind::Startup && t.status == Some(true) {
            self.started = true;
        }
        failed.then(|| Restart {
            kind,
            message: t.message.clone().unwrap_or_default(),
        })
    }

    /// The container's `started` / `ready` as the probes have them now.
    pub fn health(&self) -> ContainerHealth {
        let readiness = self
            .trackers
            .iter()
            .find(|t| t.kind == ProbeKind::Readiness);
        let ready = self.started && readiness.is_none_or(|t| t.status == Some(true));
        let message = if !self.started {
            self.trackers
                .iter()
                .find(|t| t.kind == ProbeKind::Startup)
                .and_then(|t| t.message.clone())
        } else if !ready {
            readiness.and_then(|t| t.message.clone())
        } else {
            None
        };
        ContainerHealth {
            started: self.started,
            ready,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> v1::Probe {
        v1::Probe {
            initial_delay_seconds: delay,
            period_seconds: period,
            timeout_seconds: 1,
            success_threshold: success,
            failure_threshold: failure,
            tcp_socket: Some(v1::TcpSocketAction::default()),
            ..Default::default()
        }
    }

    fn fail() -> ProbeOutcome {
        ProbeOutcome::Failure {
            message: "connection refused".into(),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_container_without_probes_is_started_and_ready_at_once() {
        let c = v1::Container::default();
        let mut p = ContainerProber::new(&c, "id-0", Instant::now());
        assert!(p.due(Instant::now()).is_empty());
        assert_eq!(p.health(), ContainerHealth::initial(&c));
        assert!(p.health().ready && p.health().started);
    }

    #[test]
    fn readiness_is_false_until_the_first_success_after_the_initial_delay() {
        let t0 = Instant::now();
        let c = v1::Container {
            readiness_probe: Some(probe(5, 2, 1, 3)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        assert!(!ContainerHealth::initial(&c).ready);
        assert!(!p.health().ready && p.health().started);
        assert!(
            p.due(t0 + secs(4)).is_empty(),
            "initialDelaySeconds holds it"
        );
        assert_eq!(p.next_due(t0), Some(t0 + secs(5)));
        assert_eq!(p.due(t0 + secs(5)), vec![ProbeKind::Readiness]);
        assert!(
            p.due(t0 + secs(5)).is_empty(),
            "one probe in flight at a time"
        );
        assert_eq!(p.record(ProbeKind::Readiness, &ProbeOutcome::Success), None);
        assert!(p.health().ready);
        assert_eq!(
            p.next_due(t0 + secs(5)),
            Some(t0 + secs(7)),
            "periodSeconds"
        );
    }

    #[test]
    fn readiness_turns_false_only_after_failure_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let c = v1::Container {
            readiness_probe: Some(probe(0, 1, 2, 3)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        assert!(!p.health().ready, "successThreshold 2 needs two in a row");
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        assert!(p.health().ready);
        p.record(ProbeKind::Readiness, &fail());
        p.record(ProbeKind::Readiness, &fail());
        assert!(p.health().ready, "two failures of three");
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        p.record(ProbeKind::Readiness, &fail());
        p.record(ProbeKind::Readiness, &fail());
        assert!(p.health().ready, "a success in between resets the count");
        assert_eq!(
            p.record(ProbeKind::Readiness, &fail()),
            None,
            "readiness never restarts"
        );
        let h = p.health();
        assert!(!h.ready);
        assert_eq!(
            h.message.as_deref(),
            Some("Readiness probe failed: connection refused")
        );
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        assert!(!p.health().ready);
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        assert!(
            p.health().ready,
            "and recovers after successThreshold successes"
        );
    }

    #[test]
    fn liveness_failure_threshold_restarts_the_container_once_and_holds_it() {
        let t0 = Instant::now();
        let c = v1::Container {
            liveness_probe: Some(probe(0, 1, 1, 2)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        assert!(p.health().ready, "liveness alone does not gate readiness");
        assert_eq!(p.due(t0), vec![ProbeKind::Liveness]);
        assert_eq!(p.record(ProbeKind::Liveness, &fail()), None);
        assert_eq!(p.due(t0 + secs(1)), vec![ProbeKind::Liveness]);
        let restart = p.record(ProbeKind::Liveness, &fail());
        assert_eq!(
            restart,
            Some(Restart {
                kind: ProbeKind::Liveness,
                message: "Liveness probe failed: connection refused".into()
            })
        );
        assert!(
            p.due(t0 + secs(10)).is_empty(),
            "on hold until the next attempt"
        );
        assert_eq!(p.next_due(t0 + secs(10)), None);
        assert_eq!(p.record(ProbeKind::Liveness, &fail()), None);
    }

    #[test]
    fn the_startup_probe_holds_liveness_and_readiness_back_until_it_succeeds() {
        let t0 = Instant::now();
        let c = v1::Container {
            startup_probe: Some(probe(0, 1, 1, 10)),
            liveness_probe: Some(probe(0, 1, 1, 1)),
            readiness_probe: Some(probe(0, 1, 1, 1)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        assert!(!ContainerHealth::initial(&c).started);
        for s in 0..3 {
            assert_eq!(p.due(t0 + secs(s)), vec![ProbeKind::Startup]);
            assert_eq!(p.record(ProbeKind::Startup, &fail()), None);
            assert!(!p.health().started && !p.health().ready);
        }
        assert_eq!(
            p.record(ProbeKind::Liveness, &fail()),
            None,
            "a liveness result while not started is ignored"
        );
        assert_eq!(p.due(t0 + secs(3)), vec![ProbeKind::Startup]);
        p.record(ProbeKind::Startup, &ProbeOutcome::Success);
        let h = p.health();
        assert!(h.started && !h.ready, "started, readiness still unknown");
        assert_eq!(
            p.due(t0 + secs(3)),
            vec![ProbeKind::Liveness, ProbeKind::Readiness],
            "the startup probe stops once it succeeded"
        );
        p.record(ProbeKind::Readiness, &ProbeOutcome::Success);
        assert!(p.health().ready);
    }

    #[test]
    fn a_startup_probe_that_reaches_its_failure_threshold_restarts_the_container() {
        let t0 = Instant::now();
        let c = v1::Container {
            startup_probe: Some(probe(0, 1, 1, 2)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        assert_eq!(p.record(ProbeKind::Startup, &fail()), None);
        let r = p.record(ProbeKind::Startup, &fail());
        assert_eq!(r.map(|r| r.kind), Some(ProbeKind::Startup));
        assert!(!p.health().started);
        assert_eq!(
            p.health().message.as_deref(),
            Some("Startup probe failed: connection refused")
        );
    }

    #[test]
    fn a_lost_result_does_not_stop_probing() {
        let t0 = Instant::now();
        let c = v1::Container {
            readiness_probe: Some(probe(0, 2, 1, 1)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        assert_eq!(p.due(t0), vec![ProbeKind::Readiness]);
        assert!(p.due(t0 + secs(2)).is_empty(), "still in flight");
        assert_eq!(p.next_due(t0), Some(t0 + secs(3)), "timeout + period");
        assert_eq!(p.due(t0 + secs(3)), vec![ProbeKind::Readiness]);
    }

    #[test]
    fn probes_fall_due_after_the_initial_delay_then_every_period() {
        let t0 = Instant::now();
        let c = v1::Container {
            liveness_probe: Some(probe(1, 3, 1, 3)),
            ..Default::default()
        };
        let mut p = ContainerProber::new(&c, "id-0", t0);
        let mut runs = Vec::new();
        for s in 1..=10 {
            let now = t0 + secs(s);
            for k in p.due(now) {
                runs.push((now - t0).as_secs());
                p.record(k, &ProbeOutcome::Success);
            }
        }
        assert_eq!(runs, vec![1, 4, 7, 10]);
    }
}
