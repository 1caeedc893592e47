//! Defaulting: fills in the values Kubernetes fills in when an object is created
//! (namespace "default", restartPolicy Always, imagePullPolicy, protocol TCP,
//! terminationGracePeriodSeconds 30, Deployment replicas and strategy, Service type, ...).
//! Pure and idempotent; never overwrites a set value.

mod services;
mod workloads;

pub use services::{
    default_persistent_volume, default_persistent_volume_claim, default_secret, default_service,
    default_storage_class,
};
pub use workloads::{
    default_cron_job, default_daemon_set, default_deployment, default_job, default_replica_set,
    default_stateful_set, DEFAULT_PROGRESS_DEADLINE_SECONDS, DEFAULT_REVISION_HISTORY_LIMIT,
};

use crate::v1;

/// Namespace of namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default `spec.terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Applies the defaults of the object's kind.
pub fn apply(obj: &mut v1::Object) {
    use v1::object::Kind as K;
    if obj.kind().is_some_and(|k| k.namespaced()) {
        if let Some(meta) = obj.try_metadata_mut() {
            set_if_empty(&mut meta.namespace, DEFAULT_NAMESPACE);
        }
    }
    match obj.kind.as_mut() {
        Some(K::Pod(p)) => default_pod(p),
        Some(K::Namespace(n)) => default_namespace(n),
        Some(K::ReplicaSet(o)) => default_replica_set(o),
        Some(K::Deployment(o)) => default_deployment(o),
        Some(K::StatefulSet(o)) => default_stateful_set(o),
        Some(K::DaemonSet(o)) => default_daemon_set(o),
        Some(K::Job(o)) => default_job(o),
        Some(K::CronJob(o)) => default_cron_job(o),
        Some(K::Service(o)) => default_service(o),
        Some(K::Secret(o)) => default_secret(o),
        Some(K::PersistentVolume(o)) => default_persistent_volume(o),
        Some(K::PersistentVolumeClaim(o)) => default_persistent_volume_claim(o),
        Some(K::StorageClass(o)) => default_storage_class(o),
        Some(
            K::Node(_)
            | K::Endpoints(_)
            | K::ConfigMap(_)
            | K::ServiceAccount(_)
            | K::Event(_)
            | K::Lease(_)
            | K::LimitRange(_)
            | K::ResourceQuota(_)
            | K::Role(_)
            | K::RoleBinding(_)
            | K::ClusterRole(_)
            | K::ClusterRoleBinding(_),
        )
        | None => {}
    }
}

/// Defaults a pod's namespace, restart policy, grace period and per-container fields.
pub fn default_pod(pod: &mut v1::Pod) {
    let meta = pod.metadata.get_or_insert_with(Default::default);
    set_if_empty(&mut meta.namespace, DEFAULT_NAMESPACE);
    default_pod_spec(pod.spec.get_or_insert_with(Default::default), "Always");
}

/// Defaults a pod spec (of a pod or a workload's template); `restart_policy` is the
/// policy to fill in, empty for none (Job templates must choose their own).
pub fn default_pod_spec(spec: &mut v1::PodSpec, restart_policy: &str) {
    set_if_empty(&mut spec.restart_policy, restart_policy);
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    for c in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        if c.image_pull_policy.is_empty() {
            c.image_pull_policy = default_pull_policy(&c.image).to_string();
        }
        for p in &mut c.ports {
            set_if_empty(&mut p.protocol, "TCP");
        }
        for probe in [
            &mut c.liveness_probe,
            &mut c.readiness_probe,
            &mut c.startup_probe,
        ]
        .into_iter()
        .flatten()
        {
            default_probe(probe);
        }
    }
}

/// Kubernetes' probe timing defaults: timeout 1 s, period 10 s, success 1, failure 3.
fn default_probe(p: &mut v1::Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if *field == 0 {
            *field = default;
        }
    }
    if let Some(h) = &mut p.http_get {
        set_if_empty(&mut h.path, "/");
        set_if_empty(&mut h.scheme, "HTTP");
    }
}

/// Defaults a namespace's phase to "Active".
pub fn default_namespace(ns: &mut v1::Namespace) {
    let status = ns.status.get_or_insert_with(Default::default);
    set_if_empty(&mut status.phase, "Active");
}

/// `Always` for images tagged `:latest` or untagged (which means latest), otherwise
/// `IfNotPresent`; images pinned by digest are `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    // A ':' before the last '/' belongs to a registry port, not a tag.
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

pub(crate) fn set_if_empty(field: &mut String, value: &str) {
    if field.is_empty() {
        *field = value.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("localhost:5000/busybox", "Always"),
            ("localhost:5000/busybox:1.0", "IfNotPresent"),
            ("docker.io/library/busybox@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn pod_defaults_fill_only_empty_fields() {
        let mut pod = v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: "web".into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers: vec![
                    v1::Container {
                        name: "a".into(),
                        image: "nginx:1.25".into(),
                        ports: vec![v1::ContainerPort {
                            container_port: 80,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    v1::Container {
                        name: "b".into(),
                        image: "busybox".into(),
                        image_pull_policy: "Never".into(),
                        ports: vec![v1::ContainerPort {
                            container_port: 53,
                            protocol: "UDP".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ],
                termination_grace_period_seconds: Some(0),
                ..Default::default()
            }),
            status: None,
        };
        default_pod(&mut pod);
        let once = pod.clone();
        default_pod(&mut pod);
        assert_eq!(pod, once, "defaulting is idempotent");

        assert_eq!(pod.metadata.as_ref().unwrap().namespace, "default");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy, "Always");
        assert_eq!(
            spec.termination_grace_period_seconds,
            Some(0),
            "explicit 0 kept"
        );
        assert_eq!(spec.containers[0].image_pull_policy, "IfNotPresent");
        assert_eq!(spec.containers[0].ports[0].protocol, "TCP");
        assert_eq!(spec.containers[1].image_pull_policy, "Never");
        assert_eq!(spec.containers[1].ports[0].protocol, "UDP");
    }

    #[test]
    fn unset_grace_period_becomes_thirty_seconds() {
        let mut obj = v1::Object::from_pod(v1::Pod::default());
        apply(&mut obj);
        let spec = obj.as_pod().unwrap().spec.as_ref().unwrap();
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(obj.namespace(), "default");
    }

    #[test]
    fn namespaces_start_active_and_nodes_are_untouched() {
        let mut ns = v1::Object::from_namespace(v1::Namespace::default());
        apply(&mut ns);
        assert_eq!(
            ns.as_namespace().unwrap().status.as_ref().unwrap().phase,
            "Active"
        );
        let mut node = v1::Object::from_node(v1::Node::default());
        apply(&mut node);
        assert_eq!(node, v1::Object::from_node(v1::Node::default()));
    }
}
