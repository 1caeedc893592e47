//! The CronJob controller: creates each CronJob's Jobs on its schedule. It finds the Jobs a
//! CronJob controls (ownerReference uid), asks [`super::decide_cronjob`] whether one is due,
//! stops running Jobs for concurrencyPolicy Replace, creates the due Job (named after its
//! schedule time, so a lost status write or a restart never makes a duplicate), prunes finished
//! Jobs beyond the history limits, writes the status and asks for a pass at the next schedule
//! time. It must not touch Jobs it does not control; their pods are the Job controller's.

use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;
use chrono::{DateTime, Utc};

use super::decide_cronjob::{job_from_template, job_ref, plan_cronjob, Schedule};
use super::decide_replicas::controller_ref;
use super::replicaset::is_race;
use super::runner::{Pass, PassResult};
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the CronJob controller.
pub const NAME: &str = "cronjob-controller";

/// Added to a requeue at the next schedule time, so the pass runs just after it, not before.
const PAST_DUE: Duration = Duration::from_millis(100);

/// The CronJob controller's pass (run by [`super::runner::Controller`]).
#[derive(Debug, Clone)]
pub struct CronJobController {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for CronJobController {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::CronJob, Kind::Job];
    const RESYNC: Duration = Duration::from_secs(10);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, now: DateTime<Utc>) -> Result<Option<Duration>> {
        sync_all(&self.registry, now).await
    }
}

/// Reconciles every CronJob once at `now`. Returns when the next schedule time is due. The first
/// error is returned after every CronJob had its turn.
pub async fn sync_all(reg: &Registry, now: DateTime<Utc>) -> Result<Option<Duration>> {
    let (cronjobs, _) = reg.list(Kind::CronJob, "", "").await?;
    let (jobs, _) = reg.list(Kind::Job, "", "").await?;
    let jobs: Vec<v1::Job> = jobs.into_iter().filter_map(|o| o.into_typed()).collect();
    let mut pass = PassResult::default();
    for cj in cronjobs
        .into_iter()
        .filter_map(|o| o.into_typed::<v1::CronJob>())
    {
        match sync_cronjob(reg, &cj, &jobs, now).await {
            Ok(after) => pass.requeue(after),
            Err(e) => pass.fail("cronjob", cj.metadata.as_ref(), e),
        }
    }
    pass.finish()
}

/// Reconciles one CronJob against `jobs` (every Job, as listed at the start of the pass).
pub async fn sync_cronjob(
    reg: &Registry,
    cj: &v1::CronJob,
    jobs: &[v1::Job],
    now: DateTime<Utc>,
) -> Result<Option<Duration>> {
    let meta = cj.metadata.clone().unwrap_or_default();
    if !meta.deletion_timestamp.is_empty() {
        return Ok(None);
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(namespace = %meta.namespace, cronjob = %meta.name, error = %e, "cronjob has an unusable schedule; skipped");
            return Ok(None);
        }
    };
    let owned: Vec<v1::Job> = jobs
        .iter()
        .filter(|j| {
            j.metadata.as_ref().is_some_and(|m| {
                m.namespace == meta.namespace
                    && controller_ref(m).is_some_and(|r| r.uid == meta.uid)
            })
        })
        .cloned()
        .collect();
    let plan = plan_cronjob(cj, &owned, &schedule, now);
    if let Some((due, why)) = plan.skipped {
        tracing::debug!(namespace = %meta.namespace, cronjob = %meta.name, scheduled = %due, reason = ?why, "due job not started");
    }
    for name in plan.replace.iter().chain(&plan.prune) {
        match reg.delete(Kind::Job, &meta.namespace, name).await {
            Ok(_) => {
                tracing::info!(namespace = %meta.namespace, cronjob = %meta.name, job = %name, "job deleted")
            }
            Err(e) if is_race(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let mut status = plan.status.clone();
    if let Some(new) = &plan.create {
        let job = job_from_template(cj, &new.name, new.scheduled);
        match reg.create(Object::from(job)).await {
            Ok(obj) => {
                tracing::info!(namespace = %meta.namespace, cronjob = %meta.name, job = %new.name, scheduled = %new.scheduled, "job created");
                if let Some(j) = obj.into_typed::<v1::Job>() {
                    status.active.push(job_ref(&j));
                }
            }
            // Created by an earlier pass: the next pass sees it in the listing.
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => {
                tracing::warn!(namespace = %meta.namespace, cronjob = %meta.name, job = %new.name, error = %e, "cannot create job");
                return Err(e);
            }
        }
    }
    write_status(reg, cj, status).await?;
    Ok(plan
        .requeue
        .and_then(|d| d.to_std().ok())
        .map(|d| d + PAST_DUE))
}

async fn write_status(reg: &Registry, cj: &v1::CronJob, status: v1::CronJobStatus) -> Result<()> {
    if cj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = cj.clone();
    next.status = Some(status);
    // Only this controller writes CronJob status, one pass at a time.
    if let Some(m) = next.metadata.as_mut() {
        m.resource_version.clear();
    }
    match reg.update_status(Object::from(next)).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
