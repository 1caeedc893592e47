//! Defaults of the workload kinds, as Kubernetes' apps/v1 and batch/v1 defaulters set
//! them: replicas 1, rolling updates of 25%/25% (Deployments) or 1 (sets), history
//! limits, Job parallelism and back-off. Pure and idempotent.

use super::{default_pod_spec, set_if_empty};
use crate::v1;

/// Default `spec.revisionHistoryLimit` of Deployments, StatefulSets and DaemonSets.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// Default `spec.progressDeadlineSeconds` of a Deployment.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Default `spec.backoffLimit` of a Job.
const DEFAULT_BACKOFF_LIMIT: i32 = 6;

/// Defaults a ReplicaSet: replicas 1 and its pod template.
pub fn default_replica_set(rs: &mut v1::ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    template(&mut spec.template, "Always");
}

/// Defaults a Deployment: replicas 1, RollingUpdate with maxSurge and maxUnavailable
/// 25%, revisionHistoryLimit 10, progressDeadlineSeconds 600, and its pod template.
pub fn default_deployment(d: &mut v1::Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    spec.progress_deadline_seconds
        .get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    let strategy = spec.strategy.get_or_insert_with(Default::default);
    set_if_empty(&mut strategy.r#type, "RollingUpdate");
    if strategy.r#type == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_surge
            .get_or_insert_with(|| v1::IntOrString::string("25%"));
        ru.max_unavailable
            .get_or_insert_with(|| v1::IntOrString::string("25%"));
    }
    template(&mut spec.template, "Always");
}

/// Defaults a StatefulSet: replicas 1, OrderedReady, RollingUpdate with partition 0,
/// revisionHistoryLimit 10, Retain for claims, and its pod template.
pub fn default_stateful_set(s: &mut v1::StatefulSet) {
    let spec = s.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    set_if_empty(&mut spec.pod_management_policy, "OrderedReady");
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    set_if_empty(&mut strategy.r#type, "RollingUpdate");
    if strategy.r#type == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.partition.get_or_insert(0);
    }
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(Default::default);
    set_if_empty(&mut retention.when_deleted, "Retain");
    set_if_empty(&mut retention.when_scaled, "Retain");
    for claim in &mut spec.volume_claim_templates {
        super::default_persistent_volume_claim(claim);
    }
    template(&mut spec.template, "Always");
}

/// Defaults a DaemonSet: RollingUpdate with maxUnavailable 1 and maxSurge 0,
/// revisionHistoryLimit 10, and its pod template.
pub fn default_daemon_set(d: &mut v1::DaemonSet) {
    let spec = d.spec.get_or_insert_with(Default::default);
    spec.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    let strategy = spec.update_strategy.get_or_insert_with(Default::default);
    set_if_empty(&mut strategy.r#type, "RollingUpdate");
    if strategy.r#type == "RollingUpdate" {
        let ru = strategy.rolling_update.get_or_insert_with(Default::default);
        ru.max_unavailable
            .get_or_insert_with(|| v1::IntOrString::int(1));
        ru.max_surge.get_or_insert_with(|| v1::IntOrString::int(0));
    }
    template(&mut spec.template, "Always");
}

/// Defaults a Job: parallelism and completions 1 (when neither is set), backoffLimit
/// 6, NonIndexed, not suspended. The template's restartPolicy is left to the user.
pub fn default_job(job: &mut v1::Job) {
    job_spec(job.spec.get_or_insert_with(Default::default));
}

/// Defaults a CronJob: concurrencyPolicy Allow, not suspended, 3 successful and 1
/// failed Jobs kept, and its Job template.
pub fn default_cron_job(cj: &mut v1::CronJob) {
    let spec = cj.spec.get_or_insert_with(Default::default);
    set_if_empty(&mut spec.concurrency_policy, "Allow");
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    let job = spec.job_template.get_or_insert_with(Default::default);
    job_spec(job.spec.get_or_insert_with(Default::default));
}

fn job_spec(spec: &mut v1::JobSpec) {
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(DEFAULT_BACKOFF_LIMIT);
    set_if_empty(&mut spec.completion_mode, "NonIndexed");
    spec.suspend.get_or_insert(false);
    template(&mut spec.template, "");
}

fn template(t: &mut Option<v1::PodTemplateSpec>, restart_policy: &str) {
    if let Some(spec) = t.as_mut().and_then(|t| t.spec.as_mut()) {
        default_pod_spec(spec, restart_policy);
    }
}
