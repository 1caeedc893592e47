//! Job decisions, as pure functions of the Job, the pods it controls and the time (Kubernetes'
//! `syncJob` for NonIndexed Jobs): how many pods to create or delete so that at most
//! `parallelism` run and no more than `completions` succeed, when the Job is Complete or Failed
//! (BackoffLimitExceeded, DeadlineExceeded), the exponential back-off before a failed pod is
//! replaced, the status, and when `ttlSecondsAfterFinished` deletes the finished Job. No I/O
//! here; the Job controller acts on the results.

use std::collections::BTreeMap;

use api::v1;
use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::decide_replicas::{is_active, is_ready};

/// Pod label with the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Pod label with the Job's uid; the generated selector matches it.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The older, unprefixed form of [`JOB_NAME_LABEL`] Kubernetes still sets.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// The older, unprefixed form of [`CONTROLLER_UID_LABEL`] Kubernetes still sets.
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";

/// First delay before a failed pod is replaced; it doubles with each failure.
const BACKOFF_BASE: Duration = Duration::seconds(10);
/// Longest delay before a failed pod is replaced.
const BACKOFF_MAX: Duration = Duration::seconds(360);

/// What to do with one Job in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Pods to create from the template.
    pub create: usize,
    /// Indices into the pods given to [`plan_job`] of active pods to delete.
    pub delete: Vec<usize>,
    /// The Job's status after this pass.
    pub status: v1::JobStatus,
    /// The Job finished long enough ago (`ttlSecondsAfterFinished`): delete it.
    pub delete_job: bool,
    /// When to look again (back-off over, deadline, TTL), if anything is due.
    pub requeue: Option<Duration>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn phase(pod: &v1::Pod) -> &str {
    pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("")
}

/// The condition of `type_` with status True, if the Job has it.
pub fn true_condition<'a>(status: &'a v1::JobStatus, type_: &str) -> Option<&'a v1::JobCondition> {
    status
        .conditions
        .iter()
        .find(|c| c.r#type == type_ && c.status == "True")
}

/// The Job is finished: it has a Complete or Failed condition that is True.
pub fn is_finished(status: &v1::JobStatus) -> bool {
    true_condition(status, "Complete").is_some() || true_condition(status, "Failed").is_some()
}

/// When the Job finished (its completionTime, or when it failed).
pub fn finished_at(status: &v1::JobStatus) -> Option<DateTime<Utc>> {
    parse_time(&status.completion_time).or_else(|| {
        true_condition(status, "Failed").and_then(|c| parse_time(&c.last_transition_time))
    })
}

/// The labels of the Job's pods: the template's plus the Job's name and uid (both forms).
pub fn pod_labels(
    template: &BTreeMap<String, String>,
    job_name: &str,
    job_uid: &str,
) -> BTreeMap<String, String> {
    let mut labels = template.clone();
    for (k, v) in [
        (CONTROLLER_UID_LABEL, job_uid),
        (LEGACY_CONTROLLER_UID_LABEL, job_uid),
        (JOB_NAME_LABEL, job_name),
        (LEGACY_JOB_NAME_LABEL, job_name),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    labels
}

/// The selector of the Job's pods: the user's when `manualSelector` is true, otherwise the
/// generated `batch.kubernetes.io/controller-uid=<uid>`.
pub fn job_selector(spec: &v1::JobSpec, uid: &str) -> v1::LabelSelector {
    match &spec.selector {
        Some(s) if spec.manual_selector == Some(true) => s.clone(),
        _ => v1::LabelSelector {
            match_labels: [(CONTROLLER_UID_LABEL.to_string(), uid.to_string())].into(),
            ..Default::default()
        },
    }
}

/// When a pod failed: its last container exit, else its start or creation time.
fn failed_at(pod: &v1::Pod) -> Option<DateTime<Utc>> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter_map(|t| parse_time(&t.finished_at))
        .max()
        .or_else(|| parse_time(&status.start_time))
        .or_else(|| parse_time(&pod.metadata.as_ref()?.creation_timestamp))
}

/// Kubernetes' pod-failure back-off: 10 s after the first failure, doubling, at most 6 min,
/// counted from the most recent failure. `None` when there is no failure to wait for.
pub fn backoff_until(pods: &[v1::Pod], failed: i32) -> Option<DateTime<Utc>> {
    if failed <= 0 {
        return None;
    }
    let last = pods
        .iter()
        .filter(|p| phase(p) == "Failed")
        .filter_map(failed_at)
        .max()?;
    let exp = u32::try_from(failed - 1).unwrap_or(u32::MAX).min(16);
    let delay = BACKOFF_BASE
        .checked_mul(1 << exp)
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX);
    Some(last + delay)
}

fn condition(type_: &str, reason: &str, message: &str, now: DateTime<Utc>) -> v1::JobCondition {
    v1::JobCondition {
        r#type: type_.into(),
        status: "True".into(),
        last_probe_time: rfc3339(now),
        last_transition_time: rfc3339(now),
        reason: reason.into(),
        message: message.into(),
    }
}

/// Sets the Suspended condition to `suspended`, keeping its transition time when unchanged.
fn set_suspended(status: &mut v1::JobStatus, suspended: bool, now: DateTime<Utc>) {
    let want = if suspended { "True" } else { "False" };
    let existing = status
        .conditions
        .iter()
        .position(|c| c.r#type == "Suspended");
    match existing {
        Some(i) if status.conditions[i].status == want => {}
        Some(i) => {
            let (reason, message) = if suspended {
                ("JobSuspended", "Job suspended")
            } else {
                ("JobResumed", "Job resumed")
            };
            status.conditions[i] = v1::JobCondition {
                status: want.into(),
                ..condition("Suspended", reason, message, now)
            };
        }
        None if suspended => {
            status
                .conditions
                .push(condition("Suspended", "JobSuspended", "Job suspended", now))
        }
        None => {}
    }
}

/// Plans one pass for `job` whose controlled pods are `pods` (every pod it owns, terminal ones
/// included), at `now`.
pub fn plan_job(job: &v1::Job, pods: &[v1::Pod], now: DateTime<Utc>) -> JobPlan {
    let spec = job.spec.clone().unwrap_or_default();
    let prev = job.status.clone().unwrap_or_default();
    let mut status = prev.clone();
    let active: Vec<usize> = (0..pods.len()).filter(|&i| is_active(&pods[i])).collect();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    // Terminal pods may be removed (node eviction, a user); the counts never go down.
    let succeeded = count(pods.iter().filter(|p| phase(p) == "Succeeded").count());
    let failed = count(pods.iter().filter(|p| phase(p) == "Failed").count());
    status.succeeded = prev.succeeded.max(succeeded);
    status.failed = prev.failed.max(failed);
    status.ready = Some(count(
        active.iter().filter(|&&i| is_ready(&pods[i])).count(),
    ));
    let mut plan = JobPlan {
        create: 0,
        delete: Vec::new(),
        status: v1::JobStatus::default(),
        delete_job: false,
        requeue: None,
    };

    if is_finished(&prev) {
        // A finished Job runs nothing; pods still active (it failed, or raced) are stopped.
        plan.delete = active;
        status.active = 0;
        if let (Some(ttl), Some(done)) = (spec.ttl_seconds_after_finished, finished_at(&prev)) {
            let expire = done + Duration::seconds(ttl.into());
            if now >= expire {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(expire - now);
            }
        }
        plan.status = status;
        return plan;
    }

    let suspended = spec.suspend == Some(true);
    set_suspended(&mut status, suspended, now);
    if suspended {
        plan.delete = active;
        status.active = 0;
        status.start_time.clear();
        plan.status = status;
        return plan;
    }
    let started = parse_time(&status.start_time).unwrap_or(now);
    if status.start_time.is_empty() {
        status.start_time = rfc3339(now);
    }

    // With restartPolicy OnFailure, container restarts count as failures (Kubernetes does so).
    let on_failure = spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|s| s.restart_policy == "OnFailure");
    let restarts: i32 = if on_failure {
        active
            .iter()
            .filter_map(|&i| pods[i].status.as_ref())
            .flat_map(|s| s.container_statuses.iter().map(|c| c.restart_count))
            .sum()
    } else {
        0
    };
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec
        .active_deadline_seconds
        .map(|s| started + Duration::seconds(s));
    let failure = if status.failed.saturating_add(restarts) > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| now >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        status
            .conditions
            .push(condition("Failed", reason, message, now));
        plan.delete = active;
        status.active = 0;
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            plan.requeue = Some(Duration::seconds(ttl.into()));
        }
        plan.status = status;
        return plan;
    }

    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let n_active = count(active.len());
    let complete = match spec.completions {
        Some(c) => status.succeeded >= c,
        None => status.succeeded > 0 && n_active == 0,
    };
    if complete {
        status.conditions.push(condition("Complete", "", "", now));
        status.completion_time = rfc3339(now);
        plan.delete = active;
        status.active = 0;
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            plan.requeue = Some(Duration::seconds(ttl.into()));
        }
        plan.status = status;
        return plan;
    }

    let want_active = match spec.completions {
        Some(c) => parallelism.min(c - status.succeeded).max(0),
        // A work queue: once one pod succeeded, the rest finish on their own.
        None if status.succeeded > 0 => n_active,
        None => parallelism,
    };
    if n_active > want_active {
        let surplus: Vec<v1::Pod> = active.iter().map(|&i| pods[i].clone()).collect();
        let doomed = super::decide_replicas::pods_to_delete(
            &surplus,
            usize::try_from(n_active - want_active).unwrap_or(0),
        );
        plan.delete = doomed.into_iter().map(|i| active[i]).collect();
    } else if n_active < want_active {
        match backoff_until(pods, status.failed).filter(|t| *t > now) {
            Some(t) => plan.requeue = Some(t - now),
            None => plan.create = usize::try_from(want_active - n_active).unwrap_or(0),
        }
    }
    status.active = n_active - count(plan.delete.len()) + count(plan.create);
    if let Some(d) = deadline {
        plan.requeue = Some(plan.requeue.map_or(d - now, |r| r.min(d - now)));
    }
    plan.status = status;
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn job(completions: Option<i32>, parallelism: i32, backoff: i32) -> v1::Job {
        v1::Job {
            metadata: Some(v1::ObjectMeta {
                name: "pi".into(),
                uid: "u1".into(),
                ..Default::default()
            }),
            spec: Some(v1::JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(backoff),
                template: Some(v1::PodTemplateSpec {
                    metadata: None,
                    spec: Some(v1::PodSpec {
                        restart_policy: "Never".into(),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(phase: &str, finished: &str) -> v1::Pod {
        let terminated = (!finished.is_empty()).then(|| v1::ContainerStateTerminated {
            finished_at: finished.into(),
            ..Default::default()
        });
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: format!("p-{phase}-{finished}"),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec::default()),
            status: Some(v1::PodStatus {
                phase: phase.into(),
                container_statuses: vec![v1::ContainerStatus {
                    state: Some(v1::ContainerState {
                        terminated,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn pods(spec: &[(&str, usize)]) -> Vec<v1::Pod> {
        spec.iter()
            .flat_map(|&(phase, n)| (0..n).map(move |_| pod(phase, "2026-01-01T00:00:00Z")))
            .collect()
    }

    const NOW: &str = "2026-01-01T00:10:00Z";

    #[test]
    fn a_new_job_starts_parallelism_pods_and_records_its_start() {
        let p = plan_job(&job(Some(5), 2, 6), &[], t(NOW));
        assert_eq!((p.create, p.delete.len()), (2, 0));
        assert_eq!(p.status.active, 2);
        assert_eq!(p.status.start_time, NOW);
        assert!(!is_finished(&p.status));
    }

    #[test]
    fn never_more_pods_run_than_successes_still_needed() {
        let mut j = job(Some(5), 2, 6);
        // 4 succeeded, one running: the fifth completion is in flight, nothing more starts.
        let p = plan_job(&j, &pods(&[("Succeeded", 4), ("Running", 1)]), t(NOW));
        assert_eq!((p.create, p.delete.len(), p.status.active), (0, 0, 1));
        // 4 succeeded, three running (parallelism raised then lowered): two are stopped.
        j.spec.as_mut().unwrap().parallelism = Some(2);
        let p = plan_job(&j, &pods(&[("Succeeded", 4), ("Running", 3)]), t(NOW));
        assert_eq!((p.create, p.delete.len(), p.status.active), (0, 2, 1));
    }

    #[test]
    fn the_job_completes_when_completions_succeeded() {
        let p = plan_job(&job(Some(5), 2, 6), &pods(&[("Succeeded", 5)]), t(NOW));
        assert_eq!(p.create, 0);
        assert_eq!(p.status.succeeded, 5);
        assert_eq!(p.status.completion_time, NOW);
        assert!(true_condition(&p.status, "Complete").is_some());
        assert!(is_finished(&p.status));
    }

    #[test]
    fn a_work_queue_job_completes_once_one_succeeded_and_none_run() {
        let j = job(None, 3, 6);
        let p = plan_job(&j, &pods(&[("Succeeded", 1), ("Running", 2)]), t(NOW));
        assert_eq!((p.create, p.delete.len()), (0, 0));
        assert!(!is_finished(&p.status));
        let p = plan_job(&j, &pods(&[("Succeeded", 3)]), t(NOW));
        assert!(true_condition(&p.status, "Complete").is_some());
    }

    #[test]
    fn failures_beyond_the_backoff_limit_fail_the_job_and_stop_its_pods() {
        let j = job(Some(3), 2, 1);
        let p = plan_job(&j, &pods(&[("Failed", 1), ("Running", 1)]), t(NOW));
        assert!(!is_finished(&p.status));
        let p = plan_job(&j, &pods(&[("Failed", 2), ("Running", 1)]), t(NOW));
        let c = true_condition(&p.status, "Failed").unwrap();
        assert_eq!(c.reason, "BackoffLimitExceeded");
        assert_eq!((p.create, p.delete, p.status.active), (0, vec![2], 0));
        assert!(p.status.completion_time.is_empty());
    }

    #[test]
    fn container_restarts_count_against_the_backoff_limit_with_on_failure() {
        let mut j = job(Some(1), 1, 2);
        j.spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .spec
            .as_mut()
            .unwrap()
            .restart_policy = "OnFailure".into();
        let mut running = pod("Running", "");
        running.status.as_mut().unwrap().container_statuses[0].restart_count = 3;
        let p = plan_job(&j, &[running], t(NOW));
        assert_eq!(
            true_condition(&p.status, "Failed").unwrap().reason,
            "BackoffLimitExceeded"
        );
    }

    #[test]
    fn a_failed_pod_is_replaced_after_an_exponential_back_off() {
        let j = job(Some(1), 1, 6);
        let failed_at = "2026-01-01T00:09:55Z";
        let p = plan_job(&j, &[pod("Failed", failed_at)], t(NOW));
        assert_eq!(p.create, 0);
        assert_eq!(p.requeue, Some(Duration::seconds(5)));
        let p = plan_job(&j, &[pod("Failed", failed_at)], t("2026-01-01T00:10:05Z"));
        assert_eq!(p.create, 1);
        // Two failures: 20 s.
        let two = [
            pod("Failed", "2026-01-01T00:09:00Z"),
            pod("Failed", failed_at),
        ];
        assert_eq!(backoff_until(&two, 2), Some(t("2026-01-01T00:10:15Z")));
        assert_eq!(backoff_until(&two, 40), Some(t(failed_at) + BACKOFF_MAX));
    }

    #[test]
    fn the_active_deadline_fails_a_running_job() {
        let mut j = job(Some(1), 1, 6);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(60);
        j.status = Some(v1::JobStatus {
            start_time: "2026-01-01T00:09:30Z".into(),
            ..Default::default()
        });
        let running = pods(&[("Running", 1)]);
        let p = plan_job(&j, &running, t(NOW));
        assert!(!is_finished(&p.status));
        assert_eq!(p.requeue, Some(Duration::seconds(30)));
        let p = plan_job(&j, &running, t("2026-01-01T00:10:30Z"));
        assert_eq!(
            true_condition(&p.status, "Failed").unwrap().reason,
            "DeadlineExceeded"
        );
        assert_eq!(p.delete, vec![0]);
    }

    #[test]
    fn a_finished_job_is_deleted_after_its_ttl() {
        let mut j = job(Some(1), 1, 6);
        j.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(100);
        let done = plan_job(&j, &pods(&[("Succeeded", 1)]), t(NOW));
        assert_eq!(done.requeue, Some(Duration::seconds(100)));
        j.status = Some(done.status);
        let later = plan_job(&j, &pods(&[("Succeeded", 1)]), t("2026-01-01T00:11:00Z"));
        assert!(!later.delete_job);
        assert_eq!(later.requeue, Some(Duration::seconds(40)));
        assert_eq!(later.create, 0);
        let expired = plan_job(&j, &pods(&[("Succeeded", 1)]), t("2026-01-01T00:11:40Z"));
        assert!(expired.delete_job);
    }

    #[test]
    fn counts_never_go_down_when_terminal_pods_disappear() {
        let mut j = job(Some(5), 2, 6);
        j.status = Some(v1::JobStatus {
            succeeded: 3,
            failed: 1,
            start_time: NOW.into(),
            ..Default::default()
        });
        let p = plan_job(&j, &pods(&[("Succeeded", 1)]), t(NOW));
        assert_eq!((p.status.succeeded, p.status.failed), (3, 1));
        assert_eq!(p.create, 2);
    }

    #[test]
    fn a_suspended_job_runs_nothing_and_says_so() {
        let mut j = job(Some(2), 2, 6);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let p = plan_job(&j, &pods(&[("Running", 2)]), t(NOW));
        assert_eq!((p.create, p.delete.len(), p.status.active), (0, 2, 0));
        assert_eq!(
            true_condition(&p.status, "Suspended").unwrap().reason,
            "JobSuspended"
        );
        j.status = Some(p.status);
        j.spec.as_mut().unwrap().suspend = Some(false);
        let p = plan_job(&j, &[], t(NOW));
        assert_eq!(p.create, 2);
        assert!(true_condition(&p.status, "Suspended").is_none());
    }

    #[test]
    fn pods_carry_the_job_labels_and_the_generated_selector_matches_them() {
        let labels = pod_labels(&[("app".to_string(), "pi".to_string())].into(), "pi", "u1");
        assert_eq!(labels[JOB_NAME_LABEL], "pi");
        assert_eq!(labels[LEGACY_JOB_NAME_LABEL], "pi");
        assert_eq!(labels[LEGACY_CONTROLLER_UID_LABEL], "u1");
        let sel = job_selector(&v1::JobSpec::default(), "u1");
        let sel = api::Selector::from_label_selector(&sel).unwrap();
        assert!(sel.matches(&labels));
    }
}
