//! ReplicaSet decisions, as pure functions of the ReplicaSet, its pods and the time: which pods a
//! controller owns, adopts or releases (ownerReferences), how many pods to create or delete,
//! which pods go first on a scale-down (Kubernetes' `ActivePodsWithRanks` order) and the status.
//! No I/O here; the ReplicaSet and Deployment controllers act on the results.

use std::cmp::Ordering;
use std::collections::HashMap;

use api::v1;
use api::Selector;
use chrono::{DateTime, Utc};

/// The owner's part of an ownership decision: who it is and whether it may adopt.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// The owner's uid.
    pub uid: &'a str,
    /// The owner's selector.
    pub selector: &'a Selector,
    /// The owner is being deleted: it adopts nothing and releases nothing.
    pub deleting: bool,
}

/// What a controller does with one candidate object (a pod, or a ReplicaSet for Deployments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled by this owner and matching: it is the owner's.
    Owned,
    /// An orphan that matches: set this owner as its controller.
    Adopt,
    /// Controlled by this owner but no longer matching: remove the ownerReference.
    Release,
    /// Someone else's, or an orphan that does not match.
    Ignore,
}

/// The ownerReference with `controller: true`, if any.
pub fn controller_ref(meta: &v1::ObjectMeta) -> Option<&v1::OwnerReference> {
    meta.owner_references
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Kubernetes' `ClaimObject`: what `owner` does with an object whose metadata is `meta`.
pub fn claim(owner: Owner<'_>, meta: &v1::ObjectMeta) -> Claim {
    let matches = owner.selector.matches(&meta.labels);
    match controller_ref(meta) {
        Some(r) if r.uid == owner.uid => {
            if matches || owner.deleting {
                Claim::Owned
            } else {
                Claim::Release
            }
        }
        Some(_) => Claim::Ignore,
        None if matches && !owner.deleting && meta.deletion_timestamp.is_empty() => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// A controller ownerReference to `kind` `name` with `uid`.
pub fn controller_owner_ref(kind: api::Kind, name: &str, uid: &str) -> v1::OwnerReference {
    v1::OwnerReference {
        api_version: kind.api_version().to_string(),
        kind: kind.as_str().to_string(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod counts towards replicas: not terminated and not being deleted.
pub fn is_active(pod: &v1::Pod) -> bool {
    let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    let deleting = pod
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    phase != "Succeeded" && phase != "Failed" && !deleting
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When the pod became ready, if its Ready condition is True (the epoch when the time is unknown).
pub fn ready_since(pod: &v1::Pod) -> Option<DateTime<Utc>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready" && c.status == "True")?;
    Some(parse_time(&c.last_transition_time).unwrap_or(DateTime::UNIX_EPOCH))
}

/// The pod is ready.
pub fn is_ready(pod: &v1::Pod) -> bool {
    ready_since(pod).is_some()
}

/// The pod has been ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &v1::Pod, min_ready_seconds: i32, now: DateTime<Utc>) -> bool {
    ready_since(pod).is_some_and(|t| {
        min_ready_seconds <= 0 || t + chrono::Duration::seconds(min_ready_seconds.into()) <= now
    })
}

/// Pods to create (positive) or delete (negative) so that `active` becomes `desired`.
pub fn replica_diff(desired: i32, active: usize) -> i64 {
    i64::from(desired.max(0)) - i64::try_from(active).unwrap_or(i64::MAX)
}

fn node_of(pod: &v1::Pod) -> &str {
    pod.spec
        .as_ref()
        .map(|s| s.node_name.as_str())
        .unwrap_or("")
}

fn phase_rank(pod: &v1::Pod) -> u8 {
    match pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("") {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn restarts(pod: &v1::Pod) -> i32 {
    pod.status
        .as_ref()
        .map(|s| s.container_statuses.iter().map(|c| c.restart_count).max())
        .unwrap_or_default()
        .unwrap_or(0)
}

fn created(pod: &v1::Pod) -> Option<DateTime<Utc>> {
    parse_time(&pod.metadata.as_ref()?.creation_timestamp)
}

/// Kubernetes' `ActivePodsWithRanks.Less`: the pod that should be deleted first sorts first.
/// `rank` is the number of the controller's pods on the pod's node (more co-located pods go first).
fn delete_first(a: (&v1::Pod, usize), b: (&v1::Pod, usize)) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    let assigned = |p: &v1::Pod| !node_of(p).is_empty();
    assigned(pa)
        .cmp(&assigned(pb))
        .then(phase_rank(pa).cmp(&phase_rank(pb)))
        .then(is_ready(pa).cmp(&is_ready(pb)))
        .then(rb.cmp(&ra))
        // Ready for a shorter time goes first.
        .then(ready_since(pb).cmp(&ready_since(pa)))
        .then(restarts(pb).cmp(&restarts(pa)))
        // Newer goes first.
        .then(created(pb).cmp(&created(pa)))
}

/// Indices into `pods` of the `count` pods to delete on a scale-down: unscheduled before
/// scheduled, pending before running, not-ready before ready, crowded nodes first, shortest
/// ready, most restarts, newest (as Kubernetes' ReplicaSet controller).
pub fn pods_to_delete(pods: &[v1::Pod], count: usize) -> Vec<usize> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in pods.iter().filter(|p| !node_of(p).is_empty()) {
        *per_node.entry(node_of(p)).or_default() += 1;
    }
    let rank = |p: &v1::Pod| per_node.get(node_of(p)).copied().unwrap_or(0);
    let mut idx: Vec<usize> = (0..pods.len()).collect();
    idx.sort_by(|&a, &b| delete_first((&pods[a], rank(&pods[a])), (&pods[b], rank(&pods[b]))));
    idx.truncate(count);
    idx
}

/// Sizes of the slow-start batches Kubernetes creates pods in: 1, 2, 4, … up to `total`.
pub fn slow_start_batches(total: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut batch) = (total, 1usize);
    while left > 0 {
        let n = batch.min(left);
        out.push(n);
        left -= n;
        batch = batch.saturating_mul(2);
    }
    out
}

fn template_labels(rs: &v1::ReplicaSet) -> Option<&std::collections::BTreeMap<String, String>> {
    Some(
        &rs.spec
            .as_ref()?
            .template
            .as_ref()?
            .metadata
            .as_ref()?
            .labels,
    )
}

/// The ReplicaSet's status for its active owned `pods` at `now`; conditions stay as they were.
pub fn replica_set_status(
    rs: &v1::ReplicaSet,
    pods: &[v1::Pod],
    now: DateTime<Utc>,
) -> v1::ReplicaSetStatus {
    let min_ready = rs.spec.as_ref().map(|s| s.min_ready_seconds).unwrap_or(0);
    let count = |f: &dyn Fn(&v1::Pod) -> bool| {
        i32::try_from(pods.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = |p: &v1::Pod| {
        let labels = p.metadata.as_ref().map(|m| &m.labels);
        match (template_labels(rs), labels) {
            (Some(want), Some(have)) => want.iter().all(|(k, v)| have.get(k) == Some(v)),
            (None, _) => true,
            (Some(want), None) => want.is_empty(),
        }
    };
    v1::ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: count(&fully_labeled),
        observed_generation: rs.metadata.as_ref().map(|m| m.generation).unwrap_or(0),
        ready_replicas: count(&is_ready),
        available_replicas: count(&|p| is_available(p, min_ready, now)),
        conditions: rs
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default(),
    }
}

/// Seconds until a ready-but-not-yet-available pod becomes available (for a requeue).
pub fn next_availability_check(
    pods: &[v1::Pod],
    min_ready_seconds: i32,
    now: DateTime<Utc>,
) -> Option<chrono::Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter_map(ready_since)
        .map(|t| t + chrono::Duration::seconds(min_ready_seconds.into()) - now)
        .filter(|d| *d > chrono::Duration::zero())
        .min()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<&str>, created: &str) -> v1::Pod {
        let mut status = v1::PodStatus {
            phase: phase.into(),
            ..Default::default()
        };
        if let Some(t) = ready_at {
            status.conditions.push(v1::PodCondition {
                r#type: "Ready".into(),
                status: "True".into(),
                last_transition_time: t.into(),
                ..Default::default()
            });
        }
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                creation_timestamp: created.into(),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                node_name: node.into(),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    fn names(pods: &[v1::Pod], idx: &[usize]) -> Vec<String> {
        idx.iter()
            .map(|&i| pods[i].metadata.as_ref().unwrap().name.clone())
            .collect()
    }

    #[test]
    fn the_replica_diff_creates_or_deletes_the_difference() {
        assert_eq!(replica_diff(3, 0), 3);
        assert_eq!(replica_diff(3, 5), -2);
        assert_eq!(replica_diff(2, 2), 0);
        assert_eq!(replica_diff(-1, 1), -1);
    }

    #[test]
    fn scale_down_deletes_unscheduled_then_pending_then_not_ready_then_newest() {
        let t = "2026-01-01T00:00:00Z";
        let pods = vec![
            pod(
                "ready-old",
                "n1",
                "Running",
                Some(t),
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "ready-new",
                "n2",
                "Running",
                Some(t),
                "2026-01-01T00:01:00Z",
            ),
            pod("unscheduled", "", "Pending", None, "2026-01-01T00:00:00Z"),
            pod("not-ready", "n1", "Running", None, "2026-01-01T00:00:00Z"),
            pod("pending", "n2", "Pending", None, "2026-01-01T00:00:00Z"),
        ];
        let order = names(&pods, &pods_to_delete(&pods, 5));
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(pods_to_delete(&pods, 2).len(), 2);
    }

    #[test]
    fn scale_down_prefers_pods_on_crowded_nodes_and_shorter_readiness() {
        let pods = vec![
            pod(
                "alone",
                "n1",
                "Running",
                Some("2026-01-01T00:00:00Z"),
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "crowd-a",
                "n2",
                "Running",
                Some("2026-01-01T00:00:00Z"),
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "crowd-b",
                "n2",
                "Running",
                Some("2026-01-01T00:05:00Z"),
                "2026-01-01T00:00:00Z",
            ),
        ];
        assert_eq!(
            names(&pods, &pods_to_delete(&pods, 3)),
            ["crowd-b", "crowd-a", "alone"]
        );
    }

    #[test]
    fn claims_adopt_matching_orphans_release_strays_and_ignore_others() {
        let sel = Selector::parse("app=web").unwrap();
        let owner = Owner {
            uid: "u1",
            selector: &sel,
            deleting: false,
        };
        let mut meta = v1::ObjectMeta {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(claim(owner, &meta), Claim::Adopt);
        meta.owner_references
            .push(controller_owner_ref(api::Kind::ReplicaSet, "rs", "u1"));
        assert_eq!(claim(owner, &meta), Claim::Owned);
        meta.labels.insert("app".into(), "db".into());
        assert_eq!(claim(owner, &meta), Claim::Release);
        let deleting = Owner {
            deleting: true,
            ..owner
        };
        assert_eq!(claim(deleting, &meta), Claim::Owned);
        meta.owner_references[0].uid = "u2".into();
        meta.labels.insert("app".into(), "web".into());
        assert_eq!(claim(owner, &meta), Claim::Ignore);
        meta.owner_references.clear();
        assert_eq!(claim(deleting, &meta), Claim::Ignore);
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled_pods() {
        let rs = v1::ReplicaSet {
            metadata: Some(v1::ObjectMeta {
                generation: 4,
                ..Default::default()
            }),
            spec: Some(v1::ReplicaSetSpec {
                min_ready_seconds: 10,
                template: Some(v1::PodTemplateSpec {
                    metadata: Some(v1::ObjectMeta {
                        labels: [
                            ("app".to_string(), "web".to_string()),
                            ("tier".to_string(), "fe".to_string()),
                        ]
                        .into(),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        };
        let mut full = pod("a", "n1", "Running", Some("2026-01-01T00:00:00Z"), "");
        full.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("tier".into(), "fe".into());
        let pods = vec![
            full,
            pod("b", "n1", "Running", Some("2026-01-01T00:00:55Z"), ""),
            pod("c", "n1", "Pending", None, ""),
        ];
        let now = parse_time("2026-01-01T00:01:00Z").unwrap();
        let s = replica_set_status(&rs, &pods, now);
        assert_eq!(
            (
                s.replicas,
                s.fully_labeled_replicas,
                s.ready_replicas,
                s.available_replicas,
                s.observed_generation
            ),
            (3, 1, 2, 1, 4)
        );
        assert_eq!(
            next_availability_check(&pods, 10, now),
            Some(chrono::Duration::seconds(5))
        );
    }

    #[test]
    fn slow_start_doubles_the_batch() {
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert!(slow_start_batches(0).is_empty());
    }

    #[test]
    fn terminated_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("a", "", "Pending", None, "")));
        assert!(!is_active(&pod("a", "", "Failed", None, "")));
        assert!(!is_active(&pod("a", "", "Succeeded", None, "")));
        let mut p = pod("a", "", "Running", None, "");
        p.metadata.as_mut().unwrap().deletion_timestamp = "2026-01-01T00:00:00Z".into();
        assert!(!is_active(&p));
    }
}
