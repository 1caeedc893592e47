//! The node agent's decisions for one pod, as pure functions of the pod spec and the containers
//! the runtime reports: which container to start (restart policy and crash back-off) and what
//! the pod's status is (phase, conditions, container states, and `ready`/`started` as the
//! probes have them). No I/O; time is passed in.

use std::collections::HashMap;

use api::v1;
use chrono::{DateTime, Duration, Utc};
use runtime::{ContainerState, ContainerStatus};

use super::probe::ContainerHealth;

/// First crash back-off; doubles per restart.
pub const BACKOFF_BASE: Duration = Duration::seconds(10);
/// Crash back-off cap.
pub const BACKOFF_MAX: Duration = Duration::seconds(300);
/// A container that ran this long before exiting restarts without accumulated back-off.
pub const BACKOFF_RESET: Duration = Duration::minutes(10);

/// What the agent should do about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerAction {
    /// Start attempt `attempt` of the container.
    Start {
        /// Container name.
        name: String,
        /// Attempt number (= restart count after the start).
        attempt: u32,
    },
    /// Remove a record of an old attempt that no status refers to any more.
    Remove {
        /// Runtime container id.
        id: String,
    },
}

/// Why a container could not be started, shown as its waiting reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    /// Kubernetes-style reason, e.g. `ErrImageNeverPull`, `RunContainerError`.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

/// The attempts of one container, newest first.
fn attempts<'a>(records: &'a [ContainerStatus], name: &str) -> Vec<&'a ContainerStatus> {
    let mut v: Vec<_> = records
        .iter()
        .filter(|r| r.container_name == name)
        .collect();
    v.sort_by_key(|r| std::cmp::Reverse(r.attempt));
    v
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Whether the restart policy restarts a container that exited with `exit_code`.
fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Exit code, start and end of a finished attempt.
type Finished = (i32, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The exit code and timing of a finished attempt; `None` while it runs.
fn finished(r: &ContainerStatus) -> Option<Finished> {
    match &r.state {
        ContainerState::Exited {
            exit_code,
            started_at,
            finished_at,
            ..
        } => Some((
            *exit_code,
            started_at.as_deref().and_then(parse_time),
            parse_time(finished_at),
        )),
        ContainerState::Unknown { .. } => Some((137, None, None)),
        ContainerState::Created | ContainerState::Running { .. } => None,
    }
}

/// Delay before restart number `restarts + 1`, given how long the last attempt ran.
pub fn crash_backoff(restarts: u32, ran_for: Option<Duration>) -> Duration {
    if ran_for.is_some_and(|d| d >= BACKOFF_RESET) {
        return BACKOFF_BASE;
    }
    let factor = 2i32.saturating_pow(restarts.min(8));
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

/// When the latest attempt of a container may be restarted, if the policy restarts it at all.
fn restart_at(policy: &str, latest: &ContainerStatus) -> Option<DateTime<Utc>> {
    let (code, started, ended) = finished(latest)?;
    if !should_restart(policy, code) {
        return None;
    }
    let ran_for = match (started, ended) {
        (Some(s), Some(e)) => Some(e - s),
        _ => None,
    };
    let ended = ended.unwrap_or(DateTime::<Utc>::MIN_UTC);
    Some(ended + crash_backoff(latest.attempt, ran_for))
}

/// How far a pod's init containers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitProgress {
    /// Every init container exited 0 (or there are none): the app containers may run.
    Done,
    /// One is running, starting or waiting for its restart.
    Waiting,
    /// One failed and the restart policy is `Never`: the pod has failed.
    Failed,
}

/// Walks the init containers in order: the first that has not succeeded yet is started (or
/// restarted after a failure, with back-off, unless the policy is `Never`); nothing after it
/// runs until it exits 0.
fn init_progress(
    spec: &v1::PodSpec,
    records: &[ContainerStatus],
    now: DateTime<Utc>,
    actions: &mut Vec<ContainerAction>,
) -> InitProgress {
    for c in &spec.init_containers {
        let tries = attempts(records, &c.name);
        for old in tries.iter().skip(2) {
            actions.push(ContainerAction::Remove { id: old.id.clone() });
        }
        let Some(latest) = tries.first() else {
            actions.push(ContainerAction::Start {
                name: c.name.clone(),
                attempt: 0,
            });
            return InitProgress::Waiting;
        };
        match finished(latest) {
            None => return InitProgress::Waiting,
            Some((0, _, _)) => continue,
            Some(_) if spec.restart_policy == "Never" => return InitProgress::Failed,
            Some(_) => {
                // Init containers restart on failure only, whatever the pod's policy.
                if restart_at("OnFailure", latest).is_some_and(|at| at <= now) {
                    actions.push(ContainerAction::Start {
                        name: c.name.clone(),
                        attempt: latest.attempt + 1,
                    });
                }
                return InitProgress::Waiting;
            }
        }
    }
    InitProgress::Done
}

/// Decides the container actions for a pod. `records` are the runtime's containers of this pod.
/// Init containers run one at a time, in order, before any app container.
pub fn plan(
    spec: &v1::PodSpec,
    records: &[ContainerStatus],
    now: DateTime<Utc>,
) -> Vec<ContainerAction> {
    let mut actions = Vec::new();
    if init_progress(spec, records, now, &mut actions) != InitProgress::Done {
        return actions;
    }
    for c in &spec.containers {
        let tries = attempts(records, &c.name);
        match tries.first() {
            None => actions.push(ContainerAction::Start {
                name: c.name.clone(),
                attempt: 0,
            }),
            Some(latest) => {
                if restart_at(&spec.restart_policy, latest).is_some_and(|at| at <= now) {
                    actions.push(ContainerAction::Start {
                        name: c.name.clone(),
                        attempt: latest.attempt + 1,
                    });
                }
                // Keep the latest and the one before it (for lastState and `logs --previous`).
                for old in tries.iter().skip(2) {
                    actions.push(ContainerAction::Remove { id: old.id.clone() });
                }
            }
        }
    }
    actions
}

fn terminated(r: &ContainerStatus) -> Option<v1::ContainerStateTerminated> {
    match &r.state {
        ContainerState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => Some(v1::ContainerStateTerminated {
            exit_code: *exit_code,
            reason: reason.clone(),
            started_at: started_at.clone().unwrap_or_default(),
            finished_at: finished_at.clone(),
            ..Default::default()
        }),
        ContainerState::Unknown { reason } => Some(v1::ContainerStateTerminated {
            exit_code: 137,
            reason: "ContainerStatusUnknown".into(),
            message: reason.clone(),
            ..Default::default()
        }),
        _ => None,
    }
}

/// Per-container counts that decide the pod phase, as kubelet's `getPhase` has them.
#[derive(Default)]
struct Tally {
    waiting: usize,
    running: usize,
    stopped: usize,
    succeeded: usize,
}

/// Computes the pod's status from its containers. `previous` is the status in the API (its
/// start time and conditions' transition times are kept). `health` holds the probes' view of
/// running containers by name; a running container missing from it gets
/// [`ContainerHealth::initial`] (not ready while it has a readiness or startup probe).
pub fn pod_status(
    pod: &v1::Pod,
    records: &[ContainerStatus],
    start_failures: &HashMap<String, StartFailure>,
    health: &HashMap<String, ContainerHealth>,
    host_ip: &str,
    now: DateTime<Utc>,
) -> v1::PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let previous = pod.status.clone().unwrap_or_default();
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut tally = Tally::default();
    let mut unready: Vec<(String, Option<String>)> = Vec::new();
    let mut init_tally = Tally::default();
    let mut incomplete = Vec::new();
    let init_policy = if spec.restart_policy == "Never" {
        "Never"
    } else {
        "OnFailure"
    };
    let init_statuses: Vec<v1::ContainerStatus> = spec
        .init_containers
        .iter()
        .map(|c| {
            let cx = StatusContext {
                pod,
                records,
                start_failures,
                health,
                restart_policy: init_policy,
                now,
            };
            let mut st = container_status(&cx, c, &mut init_tally, &mut Vec::new());
            let done = st
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            st.ready = done;
            st.started = st.state.as_ref().is_some_and(|s| s.running.is_some());
            if !done {
                incomplete.push(c.name.clone());
            }
            st
        })
        .collect();
    let initialized = incomplete.is_empty();
    let init_failed = spec.restart_policy == "Never" && init_tally.stopped > init_tally.succeeded;
    let cx = StatusContext {
        pod,
        records,
        start_failures,
        health,
        restart_policy: &spec.restart_policy,
        now,
    };
    let statuses: Vec<v1::ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| {
            if initialized {
                return container_status(&cx, c, &mut tally, &mut unready);
            }
            tally.waiting += 1;
            v1::ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                state: Some(v1::ContainerState {
                    waiting: Some(v1::ContainerStateWaiting {
                        reason: "PodInitializing".into(),
                        message: String::new(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let phase = if init_failed && !matches!(previous.phase.as_str(), "Succeeded") {
        "Failed"
    } else if !initialized && !matches!(previous.phase.as_str(), "Succeeded" | "Failed") {
        "Pending"
    } else {
        phase(&spec, &tally, &previous.phase)
    };
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let mut status = v1::PodStatus {
        phase: phase.to_string(),
        conditions: previous.conditions.clone(),
        host_ip: host_ip.to_string(),
        pod_ip: previous.pod_ip.clone(),
        start_time: if previous.start_time.is_empty() {
            now_s.clone()
        } else {
            previous.start_time.clone()
        },
        container_statuses: statuses,
        init_container_statuses: init_statuses,
        ..Default::default()
    };
    let (ready, reason) = match (all_ready, phase) {
        (true, _) => ("True", ""),
        (false, "Succeeded" | "Failed") => ("False", "PodCompleted"),
        (false, _) => ("False", "ContainersNotReady"),
    };
    let message = unready_message(&unready, reason);
    let init = if initialized { "True" } else { "False" };
    crate::apiserver::registry::set_pod_condition(&mut status, "Initialized", init, &now_s);
    if let Some(c) = status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "Initialized")
    {
        (c.reason, c.message) = if initialized {
            (String::new(), String::new())
        } else {
            (
                "ContainersNotInitialized".into(),
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                ),
            )
        };
    }
    for cond in ["ContainersReady", "Ready"] {
        crate::apiserver::registry::set_pod_condition(&mut status, cond, ready, &now_s);
        if let Some(c) = status.conditions.iter_mut().find(|c| c.r#type == cond) {
            c.reason = reason.to_string();
            c.message = message.clone();
        }
    }
    status
}

/// What computing one container's status needs.
struct StatusContext<'a> {
    pod: &'a v1::Pod,
    records: &'a [ContainerStatus],
    start_failures: &'a HashMap<String, StartFailure>,
    health: &'a HashMap<String, ContainerHealth>,
    restart_policy: &'a str,
    now: DateTime<Utc>,
}

/// The status of container `c` from its attempts, counted into `tally`; a running container
/// that is not ready is added to `unready`.
fn container_status(
    cx: &StatusContext<'_>,
    c: &v1::Container,
    tally: &mut Tally,
    unready: &mut Vec<(String, Option<String>)>,
) -> v1::ContainerStatus {
    let StatusContext {
        pod,
        records,
        start_failures,
        health,
        now,
        ..
    } = *cx;
    let tries = attempts(records, &c.name);
    let mut st = v1::ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        ..Default::default()
    };
    let mut state = v1::ContainerState::default();
    match tries.first() {
        None => {
            tally.waiting += 1;
            let (reason, message) = match start_failures.get(&c.name) {
                Some(f) => (f.reason.clone(), f.message.clone()),
                None => ("ContainerCreating".to_string(), String::new()),
            };
            state.waiting = Some(v1::ContainerStateWaiting { reason, message });
        }
        Some(latest) => {
            st.container_id = format!("capstan://{}", latest.id);
            st.restart_count = latest.attempt as i32;
            st.last_state = tries
                .get(1)
                .and_then(|p| terminated(p))
                .map(|t| v1::ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                });
            match (&latest.state, terminated(latest)) {
                (ContainerState::Running { started_at, .. }, _) => {
                    tally.running += 1;
                    let h = health
                        .get(&c.name)
                        .cloned()
                        .unwrap_or_else(|| ContainerHealth::initial(c));
                    st.ready = h.ready;
                    st.started = h.started;
                    if !h.ready {
                        unready.push((c.name.clone(), h.message));
                    }
                    state.running = Some(v1::ContainerStateRunning {
                        started_at: started_at.clone(),
                    });
                }
                (ContainerState::Created, _) => {
                    tally.waiting += 1;
                    state.waiting = Some(v1::ContainerStateWaiting {
                        reason: "ContainerCreating".into(),
                        message: String::new(),
                    });
                }
                (_, Some(term)) => {
                    tally.stopped += 1;
                    if term.exit_code == 0 {
                        tally.succeeded += 1;
                    }
                    if let Some(at) = restart_at(cx.restart_policy, latest) {
                        let wait = (at - now).num_seconds().max(0);
                        let failure = start_failures.get(&c.name);
                        state.waiting = Some(v1::ContainerStateWaiting {
                            reason: failure
                                .map(|f| f.reason.clone())
                                .unwrap_or_else(|| "CrashLoopBackOff".into()),
                            message: failure.map(|f| f.message.clone()).unwrap_or_else(|| {
                                format!(
                                    "back-off {wait}s restarting failed container={} pod={}",
                                    c.name,
                                    pod_name(pod)
                                )
                            }),
                        });
                        st.last_state = Some(v1::ContainerState {
                            terminated: Some(term),
                            ..Default::default()
                        });
                    } else {
                        state.terminated = Some(term);
                    }
                }
                (_, None) => {}
            }
        }
    }
    st.state = Some(state);
    st
}

/// Kubelet's `containers with unready status: [a b]`, followed by what the probes said.
fn unready_message(unready: &[(String, Option<String>)], reason: &str) -> String {
    if reason != "ContainersNotReady" || unready.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = unready.iter().map(|(n, _)| n.as_str()).collect();
    let mut msg = format!("containers with unready status: [{}]", names.join(" "));
    for (name, why) in unready {
        if let Some(why) = why {
            msg.push_str(&format!("; {name}: {why}"));
        }
    }
    msg
}

fn pod_name(pod: &v1::Pod) -> String {
    pod.metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_default()
}

/// Kubelet's phase rules. A terminal phase never changes again.
fn phase(spec: &v1::PodSpec, t: &Tally, previous: &str) -> &'static str {
    if previous == "Succeeded" {
        return "Succeeded";
    }
    if previous == "Failed" {
        return "Failed";
    }
    if t.waiting > 0 {
        return if t.running > 0 || t.stopped > 0 {
            "Running"
        } else {
            "Pending"
        };
    }
    if t.running > 0 {
        return "Running";
    }
    if t.stopped == 0 {
        return "Pending";
    }
    match spec.restart_policy.as_str() {
        "Never" if t.stopped == t.succeeded => "Succeeded",
        "Never" => "Failed",
        "OnFailure" if t.stopped == t.succeeded => "Succeeded",
        _ => "Running",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: &str, names: &[&str]) -> v1::PodSpec {
        v1::PodSpec {
            restart_policy: policy.into(),
            containers: names
                .iter()
                .map(|n| v1::Container {
                    name: n.to_string(),
                    image: "busybox".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn rec(name: &str, attempt: u32, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: format!("uid-{name}-{attempt}"),
            pod_uid: "uid".into(),
            container_name: name.into(),
            attempt,
            image: "busybox".into(),
            state,
            log_path: Default::default(),
        }
    }

    fn exited(code: i32, started: &str, finished: &str) -> ContainerState {
        ContainerState::Exited {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: Some(started.into()),
            finished_at: finished.into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).expect("test time")
    }

    fn pod(spec: v1::PodSpec, phase: &str) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "p".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(spec),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_container_with_no_attempt_is_started_once() {
        let actions = plan(&spec("Always", &["a"]), &[], at("2026-01-01T00:00:00Z"));
        assert_eq!(
            actions,
            vec![ContainerAction::Start {
                name: "a".into(),
                attempt: 0
            }]
        );
        let running = rec(
            "a",
            0,
            ContainerState::Running {
                pid: 1,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        assert!(plan(
            &spec("Always", &["a"]),
            &[running],
            at("2026-01-01T00:00:09Z")
        )
        .is_empty());
    }

    #[test]
    fn restart_policy_decides_whether_an_exited_container_restarts() {
        let ok = rec(
            "a",
            0,
            exited(0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        let bad = rec(
            "a",
            0,
            exited(2, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        let later = at("2026-01-01T01:00:00Z");
        assert!(plan(&spec("Never", &["a"]), std::slice::from_ref(&bad), later).is_empty());
        assert!(plan(&spec("OnFailure", &["a"]), std::slice::from_ref(&ok), later).is_empty());
        assert_eq!(plan(&spec("OnFailure", &["a"]), &[bad], later).len(), 1);
        assert_eq!(
            plan(&spec("Always", &["a"]), &[ok], later),
            vec![ContainerAction::Start {
                name: "a".into(),
                attempt: 1
            }]
        );
    }

    #[test]
    fn crash_back_off_doubles_from_ten_seconds_to_five_minutes() {
        let secs: Vec<_> = (0..7)
            .map(|n| crash_backoff(n, None).num_seconds())
            .collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            crash_backoff(6, Some(Duration::minutes(11))).num_seconds(),
            10
        );
        let crashed = rec(
            "a",
            2,
            exited(1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        assert!(plan(
            &spec("Always", &["a"]),
            std::slice::from_ref(&crashed),
            at("2026-01-01T00:00:40Z")
        )
        .is_empty());
        assert_eq!(
            plan(
                &spec("Always", &["a"]),
                &[crashed],
                at("2026-01-01T00:00:41Z")
            )
            .len(),
            1
        );
    }

    #[test]
    fn only_the_two_newest_attempts_are_kept() {
        let recs: Vec<_> = (0..4)
            .map(|n| {
                rec(
                    "a",
                    n,
                    exited(1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
                )
            })
            .collect();
        let actions = plan(&spec("Never", &["a"]), &recs, at("2026-01-01T00:00:02Z"));
        assert_eq!(
            actions,
            vec![
                ContainerAction::Remove {
                    id: "uid-a-1".into()
                },
                ContainerAction::Remove {
                    id: "uid-a-0".into()
                }
            ]
        );
    }

    #[test]
    fn phases_follow_kubelet_rules() {
        let now = at("2026-01-01T00:00:05Z");
        let none = HashMap::new();
        let s = pod_status(
            &pod(spec("Never", &["a"]), "Pending"),
            &[],
            &none,
            &HashMap::new(),
            "127.0.0.1",
            now,
        );
        assert_eq!(s.phase, "Pending");
        let run = rec(
            "a",
            0,
            ContainerState::Running {
                pid: 9,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        let s = pod_status(
            &pod(spec("Never", &["a"]), "Pending"),
            &[run],
            &none,
            &HashMap::new(),
            "127.0.0.1",
            now,
        );
        assert_eq!(s.phase, "Running");
        assert!(s
            .conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True"));
        let done = rec(
            "a",
            0,
            exited(0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        let s = pod_status(
            &pod(spec("Never", &["a"]), "Running"),
            std::slice::from_ref(&done),
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(s.phase, "Succeeded");
        let term = s.container_statuses[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone());
        assert_eq!(
            term.map(|t| (t.exit_code, t.reason)),
            Some((0, "Completed".to_string()))
        );
        let failed = rec(
            "a",
            0,
            exited(3, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        let s = pod_status(
            &pod(spec("Never", &["a"]), "Running"),
            std::slice::from_ref(&failed),
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(s.phase, "Failed");
        let s = pod_status(
            &pod(spec("Always", &["a"]), "Running"),
            &[failed],
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(s.phase, "Running");
        let waiting = s.container_statuses[0]
            .state
            .as_ref()
            .and_then(|s| s.waiting.clone());
        assert_eq!(
            waiting.map(|w| w.reason),
            Some("CrashLoopBackOff".to_string())
        );
        let s = pod_status(
            &pod(spec("Always", &["a"]), "Succeeded"),
            &[],
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(s.phase, "Succeeded", "a terminal phase is final");
    }

    #[test]
    fn a_start_failure_shows_as_the_waiting_reason() {
        let failures = HashMap::from([(
            "a".to_string(),
            StartFailure {
                reason: "ErrImageNeverPull".into(),
                message: "no image".into(),
            },
        )]);
        let s = pod_status(
            &pod(spec("Always", &["a"]), "Pending"),
            &[],
            &failures,
            &HashMap::new(),
            "",
            at("2026-01-01T00:00:00Z"),
        );
        let waiting = s.container_statuses[0]
            .state
            .as_ref()
            .and_then(|s| s.waiting.clone());
        assert_eq!(
            waiting.map(|w| w.reason),
            Some("ErrImageNeverPull".to_string())
        );
        assert_eq!(s.phase, "Pending");
    }

    #[test]
    fn a_running_container_with_a_readiness_probe_is_not_ready_until_the_probe_says_so() {
        let mut sp = spec("Always", &["a"]);
        sp.containers[0].readiness_probe = Some(v1::Probe::default());
        let run = rec(
            "a",
            0,
            ContainerState::Running {
                pid: 9,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        let now = at("2026-01-01T00:00:05Z");
        let none = HashMap::new();
        let ready_of = |s: &v1::PodStatus| {
            let c = s.conditions.iter().find(|c| c.r#type == "Ready").cloned();
            (
                s.container_statuses[0].ready,
                c.map(|c| (c.status, c.message)),
            )
        };
        let s = pod_status(
            &pod(sp.clone(), "Pending"),
            std::slice::from_ref(&run),
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(
            ready_of(&s),
            (
                false,
                Some(("False".into(), "containers with unready status: [a]".into()))
            )
        );
        let failing = HashMap::from([(
            "a".to_string(),
            ContainerHealth {
                started: true,
                ready: false,
                message: Some(
                    "Readiness probe failed: HTTP probe failed with statuscode: 404".into(),
                ),
            },
        )]);
        let s = pod_status(
            &pod(sp.clone(), "Running"),
            std::slice::from_ref(&run),
            &none,
            &failing,
            "",
            now,
        );
        assert_eq!(
            ready_of(&s).1.map(|c| c.1),
            Some("containers with unready status: [a]; a: Readiness probe failed: HTTP probe failed with statuscode: 404".into())
        );
        let ok = HashMap::from([(
            "a".to_string(),
            ContainerHealth {
                started: true,
                ready: true,
                message: None,
            },
        )]);
        let s = pod_status(&pod(sp, "Running"), &[run], &none, &ok, "", now);
        assert_eq!(ready_of(&s), (true, Some(("True".into(), String::new()))));
        assert!(s.container_statuses[0].started);
    }

    #[test]
    fn init_containers_run_one_at_a_time_in_order_before_the_app() {
        let mut sp = spec("Always", &["app"]);
        sp.init_containers = spec("", &["first", "second"]).containers;
        let now = at("2026-01-01T00:01:00Z");
        let none = HashMap::new();
        let start = |name: &str, attempt| ContainerAction::Start {
            name: name.into(),
            attempt,
        };
        assert_eq!(plan(&sp, &[], now), [start("first", 0)]);
        let s = pod_status(&pod(sp.clone(), ""), &[], &none, &HashMap::new(), "", now);
        assert_eq!(s.phase, "Pending");
        let init = s
            .conditions
            .iter()
            .find(|c| c.r#type == "Initialized")
            .unwrap();
        assert_eq!(init.status, "False");
        assert_eq!(
            init.message,
            "containers with incomplete status: [first second]"
        );
        let waiting = |st: &v1::ContainerStatus| {
            st.state
                .as_ref()
                .and_then(|s| s.waiting.clone())
                .map(|w| w.reason)
        };
        assert_eq!(
            waiting(&s.container_statuses[0]).as_deref(),
            Some("PodInitializing")
        );

        let running = rec(
            "first",
            0,
            ContainerState::Running {
                pid: 1,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
        );
        assert!(
            plan(&sp, &[running], now).is_empty(),
            "nothing else while first runs"
        );

        let first_done = rec(
            "first",
            0,
            exited(0, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        assert_eq!(
            plan(&sp, std::slice::from_ref(&first_done), now),
            [start("second", 0)]
        );
        let second_done = rec(
            "second",
            0,
            exited(0, "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"),
        );
        let both = [first_done, second_done];
        assert_eq!(plan(&sp, &both, now), [start("app", 0)]);
        let s = pod_status(&pod(sp, "Pending"), &both, &none, &HashMap::new(), "", now);
        let init = s
            .conditions
            .iter()
            .find(|c| c.r#type == "Initialized")
            .unwrap();
        assert_eq!(init.status, "True");
        assert!(s.init_container_statuses.iter().all(|st| st.ready));
        assert_eq!(s.init_container_statuses.len(), 2);
    }

    #[test]
    fn a_failed_init_container_fails_the_pod_under_never_and_restarts_otherwise() {
        let failed = rec(
            "init",
            0,
            exited(1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"),
        );
        let none = HashMap::new();
        let mut never = spec("Never", &["app"]);
        never.init_containers = spec("", &["init"]).containers;
        let now = at("2026-01-01T00:10:00Z");
        assert!(plan(&never, std::slice::from_ref(&failed), now).is_empty());
        let s = pod_status(
            &pod(never, "Pending"),
            std::slice::from_ref(&failed),
            &none,
            &HashMap::new(),
            "",
            now,
        );
        assert_eq!(s.phase, "Failed");

        let mut always = spec("Always", &["app"]);
        always.init_containers = spec("", &["init"]).containers;
        // Within the 10 s back-off: wait; after it: attempt 1.
        assert!(plan(
            &always,
            std::slice::from_ref(&failed),
            at("2026-01-01T00:00:05Z")
        )
        .is_empty());
        assert_eq!(
            plan(&always, std::slice::from_ref(&failed), now),
            [ContainerAction::Start {
                name: "init".into(),
                attempt: 1
            }]
        );
        let s = pod_status(
            &pod(always, "Pending"),
            &[failed],
            &none,
            &HashMap::new(),
            "",
            at("2026-01-01T00:00:05Z"),
        );
        assert_eq!(s.phase, "Pending");
        let init = &s.init_container_statuses[0];
        let reason = init
            .state
            .as_ref()
            .and_then(|s| s.waiting.clone())
            .map(|w| w.reason);
        assert_eq!(reason.as_deref(), Some("CrashLoopBackOff"));
    }
}
