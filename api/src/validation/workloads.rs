//! Validation of the workload kinds (ReplicaSet, Deployment, StatefulSet, DaemonSet,
//! Job, CronJob): replica counts, update strategies, and the rule that the selector
//! must match the pod template's labels. Pure; reports through the parent's `Errors`.

use super::{storage, validate_meta, validate_pod_spec_with, Errors};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::selector::Selector;
use crate::v1;

/// Allowed Deployment `spec.strategy.type` values.
pub const DEPLOYMENT_STRATEGIES: [&str; 2] = ["RollingUpdate", "Recreate"];
/// Allowed StatefulSet and DaemonSet `spec.updateStrategy.type` values.
pub const SET_STRATEGIES: [&str; 2] = ["RollingUpdate", "OnDelete"];
/// Allowed StatefulSet `spec.podManagementPolicy` values.
pub const POD_MANAGEMENT_POLICIES: [&str; 2] = ["OrderedReady", "Parallel"];
/// Allowed Job `spec.completionMode` values.
pub const COMPLETION_MODES: [&str; 2] = ["NonIndexed", "Indexed"];
/// Allowed CronJob `spec.concurrencyPolicy` values.
pub const CONCURRENCY_POLICIES: [&str; 3] = ["Allow", "Forbid", "Replace"];
/// CronJob names are at most this long: the Jobs they create get an 11-character suffix.
const CRON_JOB_NAME_MAX: usize = 52;

/// Validates a ReplicaSet.
pub fn validate_replica_set(rs: &v1::ReplicaSet) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ReplicaSet, rs.metadata.as_ref());
    let Some(spec) = &rs.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    non_negative(&mut errs, "spec.replicas", spec.replicas);
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        Some(spec.min_ready_seconds),
    );
    selected_template(
        &mut errs,
        "spec",
        spec.selector.as_ref(),
        spec.template.as_ref(),
        &["Always"],
        true,
        &[],
    );
    errs.0
}

/// Validates a Deployment.
pub fn validate_deployment(d: &v1::Deployment) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Deployment, d.metadata.as_ref());
    let Some(spec) = &d.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    non_negative(&mut errs, "spec.replicas", spec.replicas);
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        Some(spec.min_ready_seconds),
    );
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let Some(deadline) = spec.progress_deadline_seconds {
        if deadline <= spec.min_ready_seconds {
            errs.push(
                "spec.progressDeadlineSeconds",
                "must be greater than minReadySeconds",
            );
        }
    }
    if let Some(strategy) = &spec.strategy {
        errs.one_of(
            "spec.strategy.type",
            &strategy.r#type,
            &DEPLOYMENT_STRATEGIES,
        );
        if let Some(ru) = &strategy.rolling_update {
            if strategy.r#type == "Recreate" {
                errs.push(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy type is Recreate",
                );
            }
            surge_and_unavailable(
                &mut errs,
                "spec.strategy.rollingUpdate",
                ru.max_surge.as_ref(),
                ru.max_unavailable.as_ref(),
            );
        }
    }
    selected_template(
        &mut errs,
        "spec",
        spec.selector.as_ref(),
        spec.template.as_ref(),
        &["Always"],
        true,
        &[],
    );
    errs.0
}

/// Validates a StatefulSet, including its volume claim templates.
pub fn validate_stateful_set(s: &v1::StatefulSet) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::StatefulSet, s.metadata.as_ref());
    let Some(spec) = &s.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    non_negative(&mut errs, "spec.replicas", spec.replicas);
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        Some(spec.min_ready_seconds),
    );
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    errs.one_of(
        "spec.podManagementPolicy",
        &spec.pod_management_policy,
        &POD_MANAGEMENT_POLICIES,
    );
    if !spec.service_name.is_empty() {
        errs.check(
            "spec.serviceName",
            crate::names::dns1035_label(&spec.service_name),
        );
    }
    if let Some(strategy) = &spec.update_strategy {
        errs.one_of(
            "spec.updateStrategy.type",
            &strategy.r#type,
            &SET_STRATEGIES,
        );
        if let Some(ru) = &strategy.rolling_update {
            if strategy.r#type == "OnDelete" {
                errs.push(
                    "spec.updateStrategy.rollingUpdate",
                    "may not be specified when strategy type is OnDelete",
                );
            }
            non_negative(
                &mut errs,
                "spec.updateStrategy.rollingUpdate.partition",
                ru.partition,
            );
            if let Some(mu) = &ru.max_unavailable {
                int_or_percent(
                    &mut errs,
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    mu,
                );
                if mu.as_int() == Some(0) || mu.percent() == Some(0) {
                    errs.push(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        "must be greater than 0",
                    );
                }
            }
        }
    }
    for (i, claim) in spec.volume_claim_templates.iter().enumerate() {
        storage::validate_claim_template(
            &mut errs,
            &format!("spec.volumeClaimTemplates[{i}]"),
            claim,
        );
    }
    let claims: Vec<&str> = spec
        .volume_claim_templates
        .iter()
        .filter_map(|c| c.metadata.as_ref().map(|m| m.name.as_str()))
        .collect();
    selected_template(
        &mut errs,
        "spec",
        spec.selector.as_ref(),
        spec.template.as_ref(),
        &["Always"],
        true,
        &claims,
    );
    errs.0
}

/// Validates a DaemonSet.
pub fn validate_daemon_set(d: &v1::DaemonSet) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::DaemonSet, d.metadata.as_ref());
    let Some(spec) = &d.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    non_negative(
        &mut errs,
        "spec.minReadySeconds",
        Some(spec.min_ready_seconds),
    );
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        spec.revision_history_limit,
    );
    if let Some(strategy) = &spec.update_strategy {
        errs.one_of(
            "spec.updateStrategy.type",
            &strategy.r#type,
            &SET_STRATEGIES,
        );
        if let Some(ru) = &strategy.rolling_update {
            surge_and_unavailable(
                &mut errs,
                "spec.updateStrategy.rollingUpdate",
                ru.max_surge.as_ref(),
                ru.max_unavailable.as_ref(),
            );
        }
    }
    selected_template(
        &mut errs,
        "spec",
        spec.selector.as_ref(),
        spec.template.as_ref(),
        &["Always"],
        true,
        &[],
    );
    errs.0
}

/// Validates a Job.
pub fn validate_job(job: &v1::Job) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Job, job.metadata.as_ref());
    match &job.spec {
        Some(spec) => job_spec(&mut errs, "spec", spec),
        None => errs.push("spec", "required"),
    }
    errs.0
}

/// Validates a CronJob and the Job template it stamps out.
pub fn validate_cron_job(cj: &v1::CronJob) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::CronJob, cj.metadata.as_ref());
    if let Some(meta) = &cj.metadata {
        if meta.name.len() > CRON_JOB_NAME_MAX {
            errs.push(
                "metadata.name",
                format!("must be no more than {CRON_JOB_NAME_MAX} characters"),
            );
        }
    }
    let Some(spec) = &cj.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    if let Err(reason) = cron_schedule(&spec.schedule) {
        errs.push("spec.schedule", reason);
    }
    errs.one_of(
        "spec.concurrencyPolicy",
        &spec.concurrency_policy,
        &CONCURRENCY_POLICIES,
    );
    if spec.starting_deadline_seconds.is_some_and(|s| s < 0) {
        errs.push(
            "spec.startingDeadlineSeconds",
            "must be greater than or equal to 0",
        );
    }
    non_negative(
        &mut errs,
        "spec.successfulJobsHistoryLimit",
        spec.successful_jobs_history_limit,
    );
    non_negative(
        &mut errs,
        "spec.failedJobsHistoryLimit",
        spec.failed_jobs_history_limit,
    );
    match spec.job_template.as_ref().and_then(|t| t.spec.as_ref()) {
        Some(job) => job_spec(&mut errs, "spec.jobTemplate.spec", job),
        None => errs.push("spec.jobTemplate.spec", "required"),
    }
    errs.0
}

fn job_spec(errs: &mut Errors, path: &str, spec: &v1::JobSpec) {
    non_negative(errs, &format!("{path}.parallelism"), spec.parallelism);
    non_negative(errs, &format!("{path}.completions"), spec.completions);
    non_negative(errs, &format!("{path}.backoffLimit"), spec.backoff_limit);
    non_negative(
        errs,
        &format!("{path}.ttlSecondsAfterFinished"),
        spec.ttl_seconds_after_finished,
    );
    if spec.active_deadline_seconds.is_some_and(|s| s <= 0) {
        errs.push(
            format!("{path}.activeDeadlineSeconds"),
            "must be greater than 0",
        );
    }
    errs.one_of(
        format!("{path}.completionMode"),
        &spec.completion_mode,
        &COMPLETION_MODES,
    );
    if spec.completion_mode == "Indexed" && spec.completions.is_none() {
        errs.push(
            format!("{path}.completions"),
            "required when completionMode is Indexed",
        );
    }
    // The Job controller generates the selector unless manualSelector is set.
    let selector = spec
        .selector
        .as_ref()
        .filter(|_| spec.manual_selector == Some(true));
    let require_selector = spec.manual_selector == Some(true);
    selected_template(
        errs,
        path,
        selector,
        spec.template.as_ref(),
        &["OnFailure", "Never"],
        require_selector,
        &[],
    );
}

/// Checks `spec.selector` and `spec.template`: the selector is valid (and non-empty
/// when `require_selector`), the template's labels and pod spec are valid, the
/// selector matches the template's labels and the restart policy is allowed.
fn selected_template(
    errs: &mut Errors,
    path: &str,
    selector: Option<&v1::LabelSelector>,
    template: Option<&v1::PodTemplateSpec>,
    restart_policies: &[&str],
    require_selector: bool,
    extra_volumes: &[&str],
) {
    let parsed = match selector {
        None if require_selector => {
            errs.push(format!("{path}.selector"), "required");
            None
        }
        None => None,
        Some(ls) => match Selector::from_label_selector(ls) {
            Ok(s) if s.is_empty() && require_selector => {
                errs.push(
                    format!("{path}.selector"),
                    "empty selector is invalid: it would select every pod",
                );
                None
            }
            Ok(s) => Some(s),
            Err(e) => {
                errs.push(format!("{path}.selector"), e.to_string());
                None
            }
        },
    };
    let Some(template) = template else {
        errs.push(format!("{path}.template"), "required");
        return;
    };
    let empty = Default::default();
    let labels = template.metadata.as_ref().map_or(&empty, |m| &m.labels);
    errs.labels(&format!("{path}.template.metadata.labels"), labels);
    if let Some(selector) = parsed {
        if !selector.matches(labels) {
            errs.push(
                format!("{path}.template.metadata.labels"),
                format!(
                    "`selector` does not match template `labels` (selector: {selector:?})",
                    selector = selector.to_string()
                ),
            );
        }
    }
    match &template.spec {
        Some(spec) => {
            validate_pod_spec_with(errs, &format!("{path}.template.spec"), spec, extra_volumes);
            // Empty is defaulted to Always, so it is fine where Always is.
            let defaulted = spec.restart_policy.is_empty() && restart_policies.contains(&"Always");
            if !defaulted && !restart_policies.contains(&spec.restart_policy.as_str()) {
                errs.push(
                    format!("{path}.template.spec.restartPolicy"),
                    format!(
                        "unsupported value {:?}: must be {}",
                        spec.restart_policy,
                        restart_policies.join(" or ")
                    ),
                );
            }
        }
        None => errs.push(format!("{path}.template.spec"), "required"),
    }
}

fn non_negative(errs: &mut Errors, path: &str, value: Option<i32>) {
    if let Some(v) = value {
        if v < 0 {
            errs.push(path, format!("{v}: must be greater than or equal to 0"));
        }
    }
}

/// A count ≥ 0 or a percentage 0%..100%.
fn int_or_percent(errs: &mut Errors, path: &str, v: &v1::IntOrString) {
    if let Some(i) = v.as_int() {
        non_negative(errs, path, Some(i));
    } else {
        match v.percent() {
            Some(p) if (0..=100).contains(&p) => {}
            Some(_) => errs.push(path, "must not be greater than 100%"),
            None => errs.push(
                path,
                format!("{v}: must be an integer or a percentage (e.g. \"25%\")"),
            ),
        }
    }
}

fn surge_and_unavailable(
    errs: &mut Errors,
    path: &str,
    surge: Option<&v1::IntOrString>,
    unavailable: Option<&v1::IntOrString>,
) {
    if let Some(s) = surge {
        int_or_percent(errs, &format!("{path}.maxSurge"), s);
    }
    if let Some(u) = unavailable {
        int_or_percent(errs, &format!("{path}.maxUnavailable"), u);
    }
    let zero = |v: Option<&v1::IntOrString>| {
        v.is_some_and(|v| v.as_int() == Some(0) || v.percent() == Some(0))
    };
    if zero(surge) && zero(unavailable) {
        errs.push(
            format!("{path}.maxUnavailable"),
            "may not be 0 when maxSurge is 0",
        );
    }
}

/// Checks a cron schedule's shape: a `@` macro or five fields of digits, `*`, `,`,
/// `-`, `/`, `?` or month/day names.
fn cron_schedule(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("required".into());
    }
    if let Some(m) = s.strip_prefix('@') {
        return match m {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ => Err(format!("{s:?}: unknown macro")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{s:?}: expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for f in fields {
        if !f
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/' | '?'))
        {
            return Err(format!("{s:?}: invalid field {f:?}"));
        }
    }
    Ok(())
}
