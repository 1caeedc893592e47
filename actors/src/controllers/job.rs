//! The Job controller: runs each Job's pods to completion. It claims the pods its selector
//! matches (ownerReferences, as the ReplicaSet controller does), creates pods from the template
//! (`generateName: <job>-`, labelled with the Job's name and uid, slow-start batches), stops
//! surplus pods and the pods of finished Jobs, writes the status, and deletes Jobs whose
//! `ttlSecondsAfterFinished` ran out (the garbage collector then removes their pods).
//! Decisions come from [`super::decide_job`]; this module only reads and writes the registry.
//! It must not delete pods of a Job that is still running other than those the plan names.

use std::time::Duration;

use api::v1::{self, Object};
use api::{Kind, Selector};
use chrono::{DateTime, Utc};

use super::decide_job::{is_finished, job_selector, plan_job, pod_labels};
use super::decide_replicas::{
    claim, controller_owner_ref, controller_ref, slow_start_batches, Claim, Owner,
};
use super::replicaset::is_race;
use super::runner::{sooner, Pass, PassResult};
use crate::apiserver::Registry;
use crate::error::{Error, Result};

/// Registered name of the Job controller.
pub const NAME: &str = "job-controller";

/// How soon a pass that lost a write race, or changed pods, runs again.
const REQUEUE: Duration = Duration::from_millis(200);

/// The Job controller's pass (run by [`super::runner::Controller`]).
#[derive(Debug, Clone)]
pub struct JobController {
    /// The API registry.
    pub registry: Registry,
}

impl Pass for JobController {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Job, Kind::Pod];
    const RESYNC: Duration = Duration::from_secs(10);

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, now: DateTime<Utc>) -> Result<Option<Duration>> {
        sync_all(&self.registry, now).await
    }
}

/// Reconciles every Job once at `now`. Returns when to look again, if sooner than the resync.
/// The first error is returned after every Job had its turn.
pub async fn sync_all(reg: &Registry, now: DateTime<Utc>) -> Result<Option<Duration>> {
    let (jobs, _) = reg.list(Kind::Job, "", "").await?;
    let (pods, _) = reg.list(Kind::Pod, "", "").await?;
    let pods: Vec<v1::Pod> = pods.into_iter().filter_map(|o| o.into_typed()).collect();
    let mut pass = PassResult::default();
    for job in jobs.into_iter().filter_map(|o| o.into_typed::<v1::Job>()) {
        match sync_job(reg, &job, &pods, now).await {
            Ok(after) => pass.requeue(after),
            Err(e) => pass.fail("job", job.metadata.as_ref(), e),
        }
    }
    pass.finish()
}

/// Reconciles one Job against `pods` (every pod, as listed at the start of the pass).
pub async fn sync_job(
    reg: &Registry,
    job: &v1::Job,
    pods: &[v1::Pod],
    now: DateTime<Utc>,
) -> Result<Option<Duration>> {
    let meta = job.metadata.clone().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let selector = match Selector::from_label_selector(&job_selector(&spec, &meta.uid)) {
        Ok(s) if !s.is_empty() => s,
        _ => {
            tracing::warn!(namespace = %meta.namespace, job = %meta.name, "job has no usable selector; skipped");
            return Ok(None);
        }
    };
    let owner = Owner {
        uid: &meta.uid,
        selector: &selector,
        deleting: !meta.deletion_timestamp.is_empty(),
    };
    let mut again = None;
    let mut owned = Vec::new();
    for pod in pods {
        let Some(pm) = pod
            .metadata
            .as_ref()
            .filter(|m| m.namespace == meta.namespace)
        else {
            continue;
        };
        let mut changed = pod.clone();
        let cm = changed.metadata.get_or_insert_with(Default::default);
        match claim(owner, pm) {
            Claim::Owned => {
                owned.push(pod.clone());
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => {
                cm.owner_references
                    .push(controller_owner_ref(Kind::Job, &meta.name, &meta.uid))
            }
            Claim::Release => cm.owner_references.retain(|r| r.uid != meta.uid),
        }
        match reg.update(Object::from(changed)).await {
            Ok(obj) => {
                let Some(p) = obj.into_typed::<v1::Pod>() else {
                    continue;
                };
                let adopted = p
                    .metadata
                    .as_ref()
                    .and_then(controller_ref)
                    .is_some_and(|r| r.uid == meta.uid);
                tracing::info!(namespace = %meta.namespace, job = %meta.name, pod = %pm.name, adopted, "pod ownership changed");
                if adopted {
                    owned.push(p);
                }
            }
            Err(e) if is_race(&e) => again = Some(REQUEUE),
            Err(e) => return Err(e),
        }
    }
    if owner.deleting {
        return Ok(again);
    }

    let plan = plan_job(job, &owned, now);
    if plan.delete_job {
        match reg.delete(Kind::Job, &meta.namespace, &meta.name).await {
            Ok(_) => {
                tracing::info!(namespace = %meta.namespace, job = %meta.name, "finished job deleted (ttlSecondsAfterFinished)")
            }
            Err(e) if is_race(&e) => {}
            Err(e) => return Err(e),
        }
        return Ok(again);
    }
    let requeue = plan.requeue.and_then(|d| d.to_std().ok());
    let mut create_error = None;
    let changed_pods = plan.create > 0 || !plan.delete.is_empty();
    for &i in &plan.delete {
        let name = owned[i]
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        match reg.delete(Kind::Pod, &meta.namespace, &name).await {
            Ok(_) => {
                tracing::info!(namespace = %meta.namespace, job = %meta.name, pod = %name, "job pod stopped")
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut status = plan.status.clone();
    if plan.create > 0 {
        if let Err((made, e)) = create_pods(reg, job, plan.create).await {
            tracing::warn!(namespace = %meta.namespace, job = %meta.name, error = %e, "cannot create job pods");
            status.active -= i32::try_from(plan.create - made).unwrap_or(0);
            create_error = Some(e);
        }
    }
    write_status(reg, job, status).await?;
    if let Some(e) = create_error {
        return Err(e);
    }
    Ok(sooner(
        sooner(again, requeue),
        changed_pods.then_some(REQUEUE),
    ))
}

/// Creates `count` pods from the Job's template in slow-start batches; stops at the first
/// batch with a failure. On error, returns how many pods were created.
async fn create_pods(
    reg: &Registry,
    job: &v1::Job,
    count: usize,
) -> std::result::Result<usize, (usize, Error)> {
    let meta = job.metadata.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let labels = pod_labels(&tmeta.labels, &meta.name, &meta.uid);
    let mut made = 0;
    for batch in slow_start_batches(count) {
        let creates = (0..batch).map(|_| {
            let pod = v1::Pod {
                metadata: Some(v1::ObjectMeta {
                    generate_name: format!("{}-", meta.name),
                    namespace: meta.namespace.clone(),
                    labels: labels.clone(),
                    annotations: tmeta.annotations.clone(),
                    owner_references: vec![controller_owner_ref(Kind::Job, &meta.name, &meta.uid)],
                    ..Default::default()
                }),
                spec: template.spec.clone(),
                status: None,
            };
            reg.create(Object::from(pod))
        });
        let mut first_error = None;
        for res in futures::future::join_all(creates).await {
            match res {
                Ok(obj) => {
                    made += 1;
                    tracing::info!(namespace = %meta.namespace, job = %meta.name, pod = %obj.metadata().name, "job pod created");
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err((made, e));
        }
    }
    Ok(made)
}

async fn write_status(reg: &Registry, job: &v1::Job, status: v1::JobStatus) -> Result<()> {
    if job.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let meta = job.metadata.clone().unwrap_or_default();
    let was_finished = job.status.as_ref().is_some_and(is_finished);
    if !was_finished && is_finished(&status) {
        let outcome = status
            .conditions
            .last()
            .map(|c| format!("{} {}", c.r#type, c.reason))
            .unwrap_or_default();
        tracing::info!(namespace = %meta.namespace, job = %meta.name, outcome = %outcome.trim(), succeeded = status.succeeded, failed = status.failed, "job finished");
    }
    let mut next = job.clone();
    next.status = Some(status);
    // Only this controller writes Job status, one pass at a time: the status goes in even if
    // metadata or spec moved on since the list.
    if let Some(m) = next.metadata.as_mut() {
        m.resource_version.clear();
    }
    match reg.update_status(Object::from(next)).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
