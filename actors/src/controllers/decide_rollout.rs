//! Deployment decisions, as pure functions: the pod-template hash that names ReplicaSets, the
//! rolling-update step (Kubernetes' `reconcileNewReplicaSet` / `reconcileOldReplicaSets` math with
//! maxSurge rounded up and maxUnavailable rounded down), the Recreate step, revisions, which old
//! ReplicaSets the history limit removes, and the Deployment's status and conditions.
//! No I/O here; the Deployment controller acts on the results.

use std::collections::BTreeMap;

use api::v1;
use chrono::{DateTime, Utc};
use prost::Message;

/// Label that ties a ReplicaSet and its pods to one pod template of a Deployment.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Annotation with the rollout revision of a Deployment and of its ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation with the Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation with replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Kubernetes' `ComputeHash`: FNV-1a (32 bit) of the template (its protobuf encoding here) and
/// the collision count, written in the alphabet of generated names (no vowels, no look-alikes).
pub fn template_hash(template: &v1::PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = template.encode_to_vec();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv1a32(&bytes)
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The template without the pod-template-hash label.
fn without_hash(t: &v1::PodTemplateSpec) -> v1::PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        m.labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// Kubernetes' `EqualIgnoreHash`: the templates are equal apart from the pod-template-hash label.
pub fn equal_ignoring_hash(a: &v1::PodTemplateSpec, b: &v1::PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// Labels plus the pod-template-hash label.
pub fn with_hash(labels: &BTreeMap<String, String>, hash: &str) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    out.insert(POD_TEMPLATE_HASH.to_string(), hash.to_string());
    out
}

/// Resolved bounds of a rollout, in pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    /// Pods allowed above the desired replicas.
    pub max_surge: i32,
    /// Pods allowed to be unavailable below the desired replicas.
    pub max_unavailable: i32,
}

/// Kubernetes' `ResolveFenceposts`: maxSurge rounded up, maxUnavailable rounded down, and
/// maxUnavailable 1 when both come out 0 (a rollout must be able to move). Recreate: no surge,
/// no unavailability budget. Unparseable values count as 0.
pub fn fenceposts(spec: &v1::DeploymentSpec) -> Fenceposts {
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    if strategy.is_some_and(|s| s.r#type == "Recreate") {
        return Fenceposts {
            max_surge: 0,
            max_unavailable: 0,
        };
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let scaled = |v: Option<&v1::IntOrString>, up: bool, default: &str| {
        let fallback = v1::IntOrString::string(default);
        v.unwrap_or(&fallback)
            .scaled_value(replicas, up)
            .unwrap_or(0)
            .max(0)
    };
    let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), true, "25%");
    let mut max_unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), false, "25%");
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Fenceposts {
        max_surge,
        max_unavailable: max_unavailable.min(replicas.max(0)),
    }
}

/// One ReplicaSet as the rollout math sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RsSize {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

impl RsSize {
    /// Available pods that will stay: pods above `spec.replicas` are about to be deleted, so a
    /// status not yet caught up with a scale-down never counts them.
    fn staying_available(&self) -> i32 {
        self.available.min(self.replicas).max(0)
    }
}

/// Target sizes after one rollout step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `spec.replicas` of the new ReplicaSet.
    pub new: i32,
    /// `spec.replicas` of each old ReplicaSet, in the order given.
    pub old: Vec<i32>,
}

/// One rolling-update step (Kubernetes' `rolloutRolling`): first scale the new ReplicaSet up
/// within `desired + maxSurge` total (or down to `desired`); only when it does not move, scale
/// old ReplicaSets (`old` oldest first) down — unhealthy pods first — while keeping
/// `desired - maxUnavailable` pods available.
pub fn rolling_step(desired: i32, f: Fenceposts, new: RsSize, old: &[RsSize]) -> Step {
    let old_sizes: Vec<i32> = old.iter().map(|o| o.replicas).collect();
    let old_total: i32 = old_sizes.iter().sum();
    let new_target = if new.replicas >= desired {
        desired
    } else {
        let max_total = desired + f.max_surge;
        let current = new.replicas + old_total;
        if current >= max_total {
            new.replicas
        } else {
            new.replicas + (max_total - current).min(desired - new.replicas)
        }
    };
    if new_target != new.replicas || old_total == 0 {
        return Step {
            new: new_target,
            old: old_sizes,
        };
    }
    let min_available = desired - f.max_unavailable;
    let new_unavailable = new.replicas - new.staying_available();
    let max_scaled_down = new.replicas + old_total - min_available - new_unavailable;
    let mut sizes = old_sizes;
    if max_scaled_down <= 0 {
        return Step {
            new: new.replicas,
            old: sizes,
        };
    }
    // Unhealthy old pods go first: removing them costs no availability.
    let mut cleaned = 0;
    for (size, rs) in sizes.iter_mut().zip(old) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = *size - rs.staying_available();
        if unhealthy <= 0 {
            continue;
        }
        let d = unhealthy.min(max_scaled_down - cleaned);
        *size -= d;
        cleaned += d;
    }
    let available: i32 =
        new.staying_available() + old.iter().map(RsSize::staying_available).sum::<i32>();
    if available > min_available {
        let total = available - min_available;
        let mut done = 0;
        for size in sizes.iter_mut() {
            if done >= total {
                break;
            }
            if *size == 0 {
                continue;
            }
            let d = (*size).min(total - done);
            *size -= d;
            done += d;
        }
    }
    Step {
        new: new.replicas,
        old: sizes,
    }
}

/// One Recreate step: every old ReplicaSet goes to 0; the new one goes to `desired` only once no
/// old ReplicaSet has pods left (`old_pods_left` counts active pods the old ones still own).
pub fn recreate_step(desired: i32, new: RsSize, old: &[RsSize], old_pods_left: usize) -> Step {
    let old_done = old.iter().all(|o| o.replicas == 0) && old_pods_left == 0;
    Step {
        new: if old_done { desired } else { new.replicas },
        old: vec![0; old.len()],
    }
}

/// The revision annotation of an object (0 when absent or malformed).
pub fn revision(meta: Option<&v1::ObjectMeta>) -> i64 {
    meta.and_then(|m| m.annotations.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An old ReplicaSet as the history cleanup sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldRs {
    /// Its revision.
    pub revision: i64,
    /// `spec.replicas == 0`, `status.replicas == 0` and the status observed the spec.
    pub drained: bool,
}

/// Indices of old ReplicaSets to delete so that at most `limit` remain: lowest revisions first,
/// only drained ones.
pub fn history_to_delete(old: &[OldRs], limit: i32) -> Vec<usize> {
    let excess = old
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    let mut idx: Vec<usize> = (0..old.len()).filter(|&i| old[i].drained).collect();
    idx.sort_by_key(|&i| old[i].revision);
    idx.truncate(excess);
    idx
}

/// Counts the Deployment status is made of, summed over its ReplicaSets' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Pods of all ReplicaSets.
    pub replicas: i32,
    /// Pods of the new ReplicaSet.
    pub updated: i32,
    /// Ready pods.
    pub ready: i32,
    /// Available pods.
    pub available: i32,
}

/// What the Deployment controller knows when it writes the status.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The Deployment as read.
    pub deployment: &'a v1::Deployment,
    /// Name of the new ReplicaSet, if it exists.
    pub new_rs: Option<&'a str>,
    /// Sums over the ReplicaSets.
    pub counts: Counts,
    /// The time of this pass.
    pub now: DateTime<Utc>,
}

/// The rollout is done: every desired pod runs the new template and is available, no old pod is
/// left, and the controller has seen the latest spec.
pub fn rollout_complete(desired: i32, c: Counts) -> bool {
    c.updated == desired && c.replicas == desired && c.available == desired
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn set_condition(
    conds: &mut Vec<v1::DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &str,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.r#type == type_) {
        if c.status != status {
            c.last_transition_time = now.to_string();
        }
        if c.status != status || c.reason != reason || c.message != message {
            c.last_update_time = now.to_string();
        }
        c.status = status.to_string();
        c.reason = reason.to_string();
        c.message = message;
        return;
    }
    conds.push(v1::DeploymentCondition {
        r#type: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        last_update_time: now.to_string(),
        last_transition_time: now.to_string(),
    });
}

/// The Deployment's status after this pass: counts, observedGeneration, and the conditions
/// Available (at least `replicas - maxUnavailable` available) and Progressing (NewReplicaSetAvailable
/// when complete, ReplicaSetUpdated while pods move, DeploymentPaused, ProgressDeadlineExceeded
/// after `progressDeadlineSeconds` without any change).
pub fn deployment_status(input: &StatusInput<'_>) -> v1::DeploymentStatus {
    let d = input.deployment;
    let spec = d.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1);
    let prev = d.status.clone().unwrap_or_default();
    let c = input.counts;
    let now = rfc3339(input.now);
    let mut conditions = prev.conditions.clone();
    let f = fenceposts(&spec);
    if c.available >= desired - f.max_unavailable {
        set_condition(
            &mut conditions,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            &now,
        );
    } else {
        set_condition(
            &mut conditions,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            &now,
        );
    }
    let rs = input.new_rs.unwrap_or("");
    let moved = c.replicas != prev.replicas
        || c.updated != prev.updated_replicas
        || c.ready != prev.ready_replicas
        || c.available != prev.available_replicas;
    let progressing = conditions
        .iter()
        .find(|c| c.r#type == "Progressing")
        .cloned();
    if spec.paused {
        set_condition(
            &mut conditions,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".into(),
            &now,
        );
    } else if input.new_rs.is_some() && rollout_complete(desired, c) {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {rs:?} has successfully progressed."),
            &now,
        );
    } else if moved
        || progressing
            .as_ref()
            .is_none_or(|p| p.status != "True" && p.reason != "ProgressDeadlineExceeded")
    {
        set_condition(
            &mut conditions,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet {rs:?} is progressing."),
            &now,
        );
        if let Some(p) = conditions.iter_mut().find(|c| c.r#type == "Progressing") {
            p.last_update_time = now.clone();
        }
    } else if let Some(p) = progressing.filter(|p| p.status == "True") {
        let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
        let last = DateTime::parse_from_rfc3339(&p.last_update_time)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(input.now);
        if input.now - last > chrono::Duration::seconds(deadline) {
            set_condition(
                &mut conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet {rs:?} has timed out progressing."),
                &now,
            );
        }
    }
    v1::DeploymentStatus {
        observed_generation: d.metadata.as_ref().map(|m| m.generation).unwrap_or(0),
        replicas: c.replicas,
        updated_replicas: c.updated,
        available_replicas: c.available,
        unavailable_replicas: (desired - c.available).max(0),
        conditions,
        ready_replicas: c.ready,
        collision_count: prev.collision_count,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn rolling(
        replicas: i32,
        surge: v1::IntOrString,
        unavailable: v1::IntOrString,
    ) -> v1::DeploymentSpec {
        v1::DeploymentSpec {
            replicas: Some(replicas),
            strategy: Some(v1::DeploymentStrategy {
                r#type: "RollingUpdate".into(),
                rolling_update: Some(v1::RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            ..Default::default()
        }
    }

    fn sz(replicas: i32, available: i32) -> RsSize {
        RsSize {
            replicas,
            available,
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let s = v1::IntOrString::string;
        let f = fenceposts(&rolling(10, s("25%"), s("25%")));
        assert_eq!((f.max_surge, f.max_unavailable), (3, 2));
        let f = fenceposts(&rolling(1, s("25%"), s("25%")));
        assert_eq!((f.max_surge, f.max_unavailable), (1, 0));
        let f = fenceposts(&rolling(3, v1::IntOrString::int(0), s("10%")));
        assert_eq!(
            (f.max_surge, f.max_unavailable),
            (0, 1),
            "both zero: one may be unavailable"
        );
        let recreate = v1::DeploymentSpec {
            replicas: Some(3),
            strategy: Some(v1::DeploymentStrategy {
                r#type: "Recreate".into(),
                rolling_update: None,
            }),
            ..Default::default()
        };
        assert_eq!(fenceposts(&recreate).max_surge, 0);
    }

    #[test]
    fn a_rolling_step_scales_the_new_set_up_within_the_surge_first() {
        let f = Fenceposts {
            max_surge: 1,
            max_unavailable: 1,
        };
        let step = rolling_step(3, f, sz(0, 0), &[sz(3, 3)]);
        assert_eq!(
            step,
            Step {
                new: 1,
                old: vec![3]
            }
        );
        // At the surge limit, old pods go, but only what availability allows.
        let step = rolling_step(3, f, sz(1, 0), &[sz(3, 3)]);
        assert_eq!(
            step,
            Step {
                new: 1,
                old: vec![2]
            }
        );
        let step = rolling_step(3, f, sz(2, 0), &[sz(2, 2)]);
        assert_eq!(
            step,
            Step {
                new: 2,
                old: vec![2]
            },
            "only 2 available: nothing to spare"
        );
        let step = rolling_step(3, f, sz(2, 2), &[sz(2, 2)]);
        assert_eq!(
            step,
            Step {
                new: 2,
                old: vec![0]
            }
        );
        let step = rolling_step(3, f, sz(2, 2), &[sz(0, 0)]);
        assert_eq!(
            step,
            Step {
                new: 3,
                old: vec![0]
            }
        );
    }

    #[test]
    fn a_rolling_step_removes_unhealthy_old_pods_before_healthy_ones() {
        let f = Fenceposts {
            max_surge: 0,
            max_unavailable: 1,
        };
        // Oldest set has 2 pods, none available; the next has 2 available. Only one pod fits
        // the budget (4 - 3 available needed), and it is an unavailable one.
        let step = rolling_step(4, f, sz(0, 0), &[sz(2, 0), sz(2, 2)]);
        assert_eq!(step.old, vec![1, 2]);
        let f2 = Fenceposts {
            max_surge: 0,
            max_unavailable: 2,
        };
        let step = rolling_step(4, f2, sz(0, 0), &[sz(2, 0), sz(2, 2)]);
        assert_eq!(
            step.old,
            vec![0, 2],
            "healthy pods stay while unhealthy ones can go"
        );
        // A status that still counts pods above spec does not make room.
        let step = rolling_step(2, f, sz(1, 0), &[sz(1, 2)]);
        assert_eq!(step.old, vec![1]);
    }

    #[test]
    fn a_rolling_step_scales_an_oversized_new_set_down() {
        let f = Fenceposts {
            max_surge: 1,
            max_unavailable: 0,
        };
        assert_eq!(rolling_step(2, f, sz(5, 5), &[]).new, 2);
    }

    #[test]
    fn recreate_waits_for_old_pods_before_scaling_the_new_set() {
        assert_eq!(
            recreate_step(3, sz(0, 0), &[sz(3, 3)], 3),
            Step {
                new: 0,
                old: vec![0]
            }
        );
        assert_eq!(recreate_step(3, sz(0, 0), &[sz(0, 0)], 1).new, 0);
        assert_eq!(recreate_step(3, sz(0, 0), &[sz(0, 0)], 0).new, 3);
    }

    #[test]
    fn the_template_hash_is_stable_and_changes_with_the_template_or_collisions() {
        let mut t = v1::PodTemplateSpec::default();
        let a = template_hash(&t, None);
        assert_eq!(a, template_hash(&t, None));
        assert!(a
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
        assert_ne!(a, template_hash(&t, Some(1)));
        t.metadata = Some(v1::ObjectMeta {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        });
        let b = template_hash(&t, None);
        assert_ne!(a, b);
        let mut hashed = t.clone();
        hashed.metadata.as_mut().unwrap().labels =
            with_hash(&t.metadata.as_ref().unwrap().labels, &b);
        assert!(equal_ignoring_hash(&hashed, &t));
        assert!(!equal_ignoring_hash(
            &hashed,
            &v1::PodTemplateSpec::default()
        ));
    }

    #[test]
    fn history_cleanup_removes_the_oldest_drained_sets_beyond_the_limit() {
        let old = [
            OldRs {
                revision: 3,
                drained: true,
            },
            OldRs {
                revision: 1,
                drained: true,
            },
            OldRs {
                revision: 2,
                drained: false,
            },
            OldRs {
                revision: 4,
                drained: true,
            },
        ];
        assert_eq!(history_to_delete(&old, 2), vec![1, 0]);
        assert_eq!(history_to_delete(&old, 0), vec![1, 0, 3]);
        assert!(history_to_delete(&old, 10).is_empty());
    }

    #[test]
    fn status_reports_availability_and_progress() {
        let mut d = v1::Deployment {
            metadata: Some(v1::ObjectMeta {
                generation: 2,
                ..Default::default()
            }),
            spec: Some(rolling(4, v1::IntOrString::int(1), v1::IntOrString::int(1))),
            status: None,
        };
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mid = Counts {
            replicas: 5,
            updated: 2,
            ready: 3,
            available: 3,
        };
        let s = deployment_status(&StatusInput {
            deployment: &d,
            new_rs: Some("web-abc"),
            counts: mid,
            now: t0,
        });
        let cond = |s: &v1::DeploymentStatus, t: &str| {
            let c = s.conditions.iter().find(|c| c.r#type == t).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        assert_eq!((s.observed_generation, s.unavailable_replicas), (2, 1));
        assert_eq!(
            cond(&s, "Available"),
            ("True".into(), "MinimumReplicasAvailable".into())
        );
        assert_eq!(
            cond(&s, "Progressing"),
            ("True".into(), "ReplicaSetUpdated".into())
        );
        // No change for longer than the deadline: timed out.
        d.status = Some(s);
        let late = t0 + chrono::Duration::seconds(601);
        let s = deployment_status(&StatusInput {
            deployment: &d,
            new_rs: Some("web-abc"),
            counts: mid,
            now: late,
        });
        assert_eq!(
            cond(&s, "Progressing"),
            ("False".into(), "ProgressDeadlineExceeded".into())
        );
        d.status = Some(s);
        let done = Counts {
            replicas: 4,
            updated: 4,
            ready: 4,
            available: 4,
        };
        let s = deployment_status(&StatusInput {
            deployment: &d,
            new_rs: Some("web-abc"),
            counts: done,
            now: late,
        });
        assert_eq!(
            cond(&s, "Progressing"),
            ("True".into(), "NewReplicaSetAvailable".into())
        );
        let low = Counts {
            available: 2,
            ..done
        };
        let s = deployment_status(&StatusInput {
            deployment: &d,
            new_rs: Some("web-abc"),
            counts: low,
            now: late,
        });
        assert_eq!(
            cond(&s, "Available"),
            ("False".into(), "MinimumReplicasUnavailable".into())
        );
    }
}
