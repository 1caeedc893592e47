//! CronJob decisions, as pure functions of the CronJob, the Jobs it controls, its parsed
//! schedule and the time (Kubernetes' `syncCronJob`): whether a Job is due and which schedule
//! time it is for (of several missed times only the most recent runs), what the
//! concurrencyPolicy, `suspend` and `startingDeadlineSeconds` allow, which finished Jobs fall
//! out of the history limits, the status, and when to look again. Jobs are named
//! `<cronjob>-<scheduled time in unix minutes>`, so a Job is never created twice for one time.
//! No I/O here; the CronJob controller acts on the results.

use std::str::FromStr;

use api::v1;
use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::decide_job::{finished_at, is_finished, true_condition};

/// Annotation of a Job with the schedule time it was created for.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// `spec.schedule` does not parse as a 5-field cron expression or a macro.
    #[error("spec.schedule {schedule:?}: {reason}")]
    Invalid {
        /// The schedule as written.
        schedule: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A parsed standard cron schedule (minute hour day-of-month month day-of-week, or a macro such
/// as `@hourly`), evaluated in UTC. Day-of-month and day-of-week are ORed when both are
/// restricted, as in Vixie cron and Kubernetes.
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Parses `schedule`.
    pub fn parse(schedule: &str) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: String| ScheduleError::Invalid {
            schedule: schedule.to_string(),
            reason,
        };
        let expr = match schedule.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(invalid("unknown macro".into())),
            s => s,
        };
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"
            )));
        }
        croner::Cron::from_str(expr)
            .map(Schedule)
            .map_err(|e| invalid(e.to_string()))
    }

    /// The first schedule time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_next_occurrence(&t, false).ok()
    }

    /// The last schedule time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.0.find_previous_occurrence(&t, true).ok()
    }
}

/// Why a due Job was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// concurrencyPolicy Forbid and a Job is still running.
    Forbidden,
    /// The schedule time is older than `startingDeadlineSeconds`.
    TooLate,
    /// The CronJob is suspended.
    Suspended,
}

/// A Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Its name, `<cronjob>-<unix minutes>`.
    pub name: String,
    /// The schedule time it runs for.
    pub scheduled: DateTime<Utc>,
}

/// What to do with one CronJob in one pass.
#[derive(Debug, Clone, PartialEq)]
pub struct CronPlan {
    /// The Job to create, if one is due.
    pub create: Option<NewJob>,
    /// Names of running Jobs to delete first (concurrencyPolicy Replace).
    pub replace: Vec<String>,
    /// Names of finished Jobs beyond the history limits.
    pub prune: Vec<String>,
    /// A due Job that was not started, and why.
    pub skipped: Option<(DateTime<Utc>, Skip)>,
    /// The status after this pass, not counting the Job to create (its uid is not known yet).
    pub status: v1::CronJobStatus,
    /// When the next schedule time is due.
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

/// The name of the Job for schedule time `t`, as Kubernetes names it.
pub fn job_name(cronjob: &str, t: DateTime<Utc>) -> String {
    format!("{cronjob}-{}", t.timestamp().div_euclid(60))
}

/// A reference to `job` for `status.active`. Without a resourceVersion: it changes with every
/// Job status write, and the CronJob's status should not.
pub fn job_ref(job: &v1::Job) -> v1::ObjectReference {
    let m = job.metadata.clone().unwrap_or_default();
    v1::ObjectReference {
        kind: "Job".into(),
        namespace: m.namespace,
        name: m.name,
        uid: m.uid,
        api_version: "batch/v1".into(),
        resource_version: String::new(),
        field_path: String::new(),
    }
}

fn job_meta(job: &v1::Job) -> v1::ObjectMeta {
    job.metadata.clone().unwrap_or_default()
}

fn is_running(job: &v1::Job) -> bool {
    !job.status.as_ref().is_some_and(is_finished) && job_meta(job).deletion_timestamp.is_empty()
}

/// Names of finished Jobs to delete so that at most `limit` of those `pick` selects remain,
/// oldest (by start, then creation) first.
fn beyond_limit(
    jobs: &[v1::Job],
    limit: i32,
    pick: impl Fn(&v1::JobStatus) -> bool,
) -> Vec<String> {
    let mut done: Vec<&v1::Job> = jobs
        .iter()
        .filter(|j| j.status.as_ref().is_some_and(|s| is_finished(s) && pick(s)))
        .filter(|j| job_meta(j).deletion_timestamp.is_empty())
        .collect();
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if done.len() <= keep {
        return Vec::new();
    }
    let started = |j: &v1::Job| {
        let m = job_meta(j);
        (
            j.status.as_ref().and_then(|s| parse_time(&s.start_time)),
            parse_time(&m.creation_timestamp),
            m.name,
        )
    };
    done.sort_by_key(|j| started(j));
    let surplus = done.len() - keep;
    done.into_iter()
        .take(surplus)
        .map(|j| job_meta(j).name)
        .collect()
}

/// Plans one pass for `cj`, whose controlled Jobs are `jobs`, with its parsed `schedule`, at `now`.
pub fn plan_cronjob(
    cj: &v1::CronJob,
    jobs: &[v1::Job],
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> CronPlan {
    let meta = cj.metadata.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let prev = cj.status.clone().unwrap_or_default();
    let running: Vec<&v1::Job> = jobs.iter().filter(|j| is_running(j)).collect();
    let last_success = jobs
        .iter()
        .filter(|j| {
            j.status
                .as_ref()
                .is_some_and(|s| true_condition(s, "Complete").is_some())
        })
        .filter_map(|j| j.status.as_ref().and_then(finished_at))
        .chain(parse_time(&prev.last_successful_time))
        .max();
    let mut plan = CronPlan {
        create: None,
        replace: Vec::new(),
        prune: [
            beyond_limit(jobs, spec.successful_jobs_history_limit.unwrap_or(3), |s| {
                true_condition(s, "Complete").is_some()
            }),
            beyond_limit(jobs, spec.failed_jobs_history_limit.unwrap_or(1), |s| {
                true_condition(s, "Failed").is_some()
            }),
        ]
        .concat(),
        skipped: None,
        status: v1::CronJobStatus {
            active: running.iter().map(|j| job_ref(j)).collect(),
            last_schedule_time: prev.last_schedule_time.clone(),
            last_successful_time: last_success.map(rfc3339).unwrap_or_default(),
        },
        requeue: schedule.next_after(now).map(|t| t - now),
    };

    // Schedule times after the last one handled (or the CronJob's creation), and within the
    // starting deadline, are candidates; only the most recent of them runs.
    let last_handled = parse_time(&prev.last_schedule_time)
        .or_else(|| parse_time(&meta.creation_timestamp))
        .unwrap_or(now);
    let Some(due) = schedule
        .last_at_or_before(now)
        .filter(|t| *t > last_handled)
    else {
        return plan;
    };
    if spec.suspend == Some(true) {
        plan.skipped = Some((due, Skip::Suspended));
        return plan;
    }
    if let Some(deadline) = spec.starting_deadline_seconds {
        if due + Duration::seconds(deadline) < now {
            plan.skipped = Some((due, Skip::TooLate));
            return plan;
        }
    }
    let name = job_name(&meta.name, due);
    if jobs.iter().any(|j| job_meta(j).name == name) {
        // Created by an earlier pass whose status write was lost: it is handled.
        plan.status.last_schedule_time = rfc3339(due);
        return plan;
    }
    match spec.concurrency_policy.as_str() {
        "Forbid" if !running.is_empty() => {
            plan.skipped = Some((due, Skip::Forbidden));
            return plan;
        }
        "Replace" => {
            plan.replace = running.iter().map(|j| job_meta(j).name).collect();
            plan.status.active.clear();
        }
        _ => {}
    }
    plan.status.last_schedule_time = rfc3339(due);
    plan.create = Some(NewJob {
        name,
        scheduled: due,
    });
    plan
}

/// The Job `cj` runs for schedule time `scheduled`, named `name`: the jobTemplate's labels,
/// annotations and spec, the scheduled-timestamp annotation, and `cj` as its controller.
pub fn job_from_template(cj: &v1::CronJob, name: &str, scheduled: DateTime<Utc>) -> v1::Job {
    let meta = cj.metadata.clone().unwrap_or_default();
    let template = cj
        .spec
        .as_ref()
        .and_then(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations;
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), rfc3339(scheduled));
    v1::Job {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: meta.namespace.clone(),
            labels: tmeta.labels,
            annotations,
            owner_references: vec![super::decide_replicas::controller_owner_ref(
                api::Kind::CronJob,
                &meta.name,
                &meta.uid,
            )],
            ..Default::default()
        }),
        spec: template.spec,
        status: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn cronjob(schedule: &str, policy: &str) -> v1::CronJob {
        v1::CronJob {
            metadata: Some(v1::ObjectMeta {
                name: "tick".into(),
                namespace: "default".into(),
                uid: "cj1".into(),
                creation_timestamp: "2026-01-01T00:00:30Z".into(),
                ..Default::default()
            }),
            spec: Some(v1::CronJobSpec {
                schedule: schedule.into(),
                concurrency_policy: policy.into(),
                successful_jobs_history_limit: Some(2),
                failed_jobs_history_limit: Some(1),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn job(name: &str, condition: Option<&str>, started: &str) -> v1::Job {
        let conditions = condition
            .map(|c| {
                vec![v1::JobCondition {
                    r#type: c.into(),
                    status: "True".into(),
                    last_transition_time: started.into(),
                    ..Default::default()
                }]
            })
            .unwrap_or_default();
        v1::Job {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                uid: format!("uid-{name}"),
                ..Default::default()
            }),
            spec: None,
            status: Some(v1::JobStatus {
                conditions,
                start_time: started.into(),
                completion_time: if condition == Some("Complete") {
                    started.into()
                } else {
                    String::new()
                },
                ..Default::default()
            }),
        }
    }

    fn plan(cj: &v1::CronJob, jobs: &[v1::Job], now: &str) -> CronPlan {
        let s = Schedule::parse(&cj.spec.as_ref().unwrap().schedule).unwrap();
        plan_cronjob(cj, jobs, &s, t(now))
    }

    #[test]
    fn schedules_parse_as_standard_five_field_cron() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_after(t("2026-01-01T00:14:59Z")),
            Some(t("2026-01-01T00:15:00Z"))
        );
        assert_eq!(
            s.next_after(t("2026-01-01T00:15:00Z")),
            Some(t("2026-01-01T00:30:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(t("2026-01-01T00:15:00Z")),
            Some(t("2026-01-01T00:15:00Z"))
        );
        // Sunday is 0 (and 7); 2026-01-04 is a Sunday.
        let sunday = Schedule::parse("30 6 * * 0").unwrap();
        assert_eq!(
            sunday.next_after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-04T06:30:00Z"))
        );
        let hourly = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            hourly.next_after(t("2026-01-01T00:00:00Z")),
            Some(t("2026-01-01T01:00:00Z"))
        );
        for bad in ["* * * *", "61 * * * *", "@often", "* * * * * *"] {
            let e = Schedule::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("spec.schedule"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_due_schedule_creates_a_job_named_after_its_unix_minute() {
        let cj = cronjob("*/1 * * * *", "Allow");
        let p = plan(&cj, &[], "2026-01-01T00:01:05Z");
        let new = p.create.unwrap();
        assert_eq!(new.scheduled, t("2026-01-01T00:01:00Z"));
        assert_eq!(
            new.name,
            format!("tick-{}", t("2026-01-01T00:01:00Z").timestamp() / 60)
        );
        assert_eq!(p.status.last_schedule_time, "2026-01-01T00:01:00Z");
        assert_eq!(p.requeue, Some(Duration::seconds(55)));
        let job = job_from_template(&cj, &new.name, new.scheduled);
        let m = job.metadata.unwrap();
        assert_eq!(
            m.annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2026-01-01T00:01:00Z"
        );
        assert_eq!(m.owner_references[0].uid, "cj1");
        assert_eq!(m.owner_references[0].controller, Some(true));
    }

    #[test]
    fn nothing_is_due_before_the_first_schedule_time_after_creation() {
        let cj = cronjob("*/1 * * * *", "Allow");
        let p = plan(&cj, &[], "2026-01-01T00:00:45Z");
        assert_eq!(p.create, None);
        assert_eq!(p.requeue, Some(Duration::seconds(15)));
    }

    #[test]
    fn of_several_missed_schedules_only_the_most_recent_runs() {
        let mut cj = cronjob("*/5 * * * *", "Allow");
        cj.status = Some(v1::CronJobStatus {
            last_schedule_time: "2026-01-01T00:05:00Z".into(),
            ..Default::default()
        });
        let p = plan(&cj, &[], "2026-01-01T01:02:00Z");
        assert_eq!(p.create.unwrap().scheduled, t("2026-01-01T01:00:00Z"));
    }

    #[test]
    fn a_job_already_created_for_the_time_is_not_created_again() {
        let cj = cronjob("*/1 * * * *", "Allow");
        let name = job_name("tick", t("2026-01-01T00:01:00Z"));
        let p = plan(
            &cj,
            &[job(&name, None, "2026-01-01T00:01:01Z")],
            "2026-01-01T00:01:30Z",
        );
        assert_eq!(p.create, None);
        assert_eq!(p.status.last_schedule_time, "2026-01-01T00:01:00Z");
        assert_eq!(p.status.active.len(), 1);
    }

    #[test]
    fn forbid_skips_while_a_job_runs_and_replace_stops_it() {
        let running = job("tick-old", None, "2026-01-01T00:01:00Z");
        let forbid = cronjob("*/1 * * * *", "Forbid");
        let p = plan(
            &forbid,
            std::slice::from_ref(&running),
            "2026-01-01T00:02:01Z",
        );
        assert_eq!(p.create, None);
        assert_eq!(
            p.skipped,
            Some((t("2026-01-01T00:02:00Z"), Skip::Forbidden))
        );
        assert_eq!(p.status.active.len(), 1);
        let allow = cronjob("*/1 * * * *", "Allow");
        let p = plan(
            &allow,
            std::slice::from_ref(&running),
            "2026-01-01T00:02:01Z",
        );
        assert!(p.create.is_some() && p.replace.is_empty());
        let replace = cronjob("*/1 * * * *", "Replace");
        let p = plan(&replace, &[running], "2026-01-01T00:02:01Z");
        assert!(p.create.is_some());
        assert_eq!(p.replace, ["tick-old"]);
        assert!(p.status.active.is_empty());
    }

    #[test]
    fn suspend_and_the_starting_deadline_hold_a_due_job_back() {
        let mut cj = cronjob("*/10 * * * *", "Allow");
        cj.spec.as_mut().unwrap().suspend = Some(true);
        let p = plan(&cj, &[], "2026-01-01T00:10:30Z");
        assert_eq!(
            p.skipped,
            Some((t("2026-01-01T00:10:00Z"), Skip::Suspended))
        );
        cj.spec.as_mut().unwrap().suspend = Some(false);
        cj.spec.as_mut().unwrap().starting_deadline_seconds = Some(20);
        let p = plan(&cj, &[], "2026-01-01T00:10:30Z");
        assert_eq!(p.skipped, Some((t("2026-01-01T00:10:00Z"), Skip::TooLate)));
        assert_eq!(p.create, None);
        let p = plan(&cj, &[], "2026-01-01T00:10:15Z");
        assert!(p.create.is_some());
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_are_pruned_oldest_first() {
        let cj = cronjob("0 0 1 1 *", "Allow");
        let jobs = [
            job("ok-1", Some("Complete"), "2026-01-01T00:01:00Z"),
            job("ok-3", Some("Complete"), "2026-01-01T00:03:00Z"),
            job("ok-2", Some("Complete"), "2026-01-01T00:02:00Z"),
            job("bad-1", Some("Failed"), "2026-01-01T00:01:30Z"),
            job("bad-2", Some("Failed"), "2026-01-01T00:02:30Z"),
            job("run", None, "2026-01-01T00:04:00Z"),
        ];
        let p = plan(&cj, &jobs, "2026-01-01T00:05:00Z");
        assert_eq!(p.prune, ["ok-1", "bad-1"]);
        assert_eq!(p.status.last_successful_time, "2026-01-01T00:03:00Z");
        assert_eq!(p.status.active.len(), 1);
        assert_eq!(p.status.active[0].name, "run");
    }
}
