//! Defaulting: fills in the values Kubernetes fills in when an object is created
//! (namespace "default", restartPolicy Always, imagePullPolicy, protocol TCP,
//! terminationGracePeriodSeconds 30). Pure and idempotent; never overwrites a set value.

use crate::v1;

/// Namespace of namespaced objects that name none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default `spec.terminationGracePeriodSeconds`.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Applies the defaults of the object's kind.
pub fn apply(obj: &mut v1::Object) {
    match obj.kind.as_mut() {
        Some(v1::object::Kind::Pod(p)) => default_pod(p),
        Some(v1::object::Kind::Namespace(n)) => default_namespace(n),
        Some(v1::object::Kind::Node(_)) | None => {}
    }
}

/// Defaults a pod's namespace, restart policy, grace period and per-container fields.
pub fn default_pod(pod: &mut v1::Pod) {
    let meta = pod.metadata.get_or_insert_with(Default::default);
    set_if_empty(&mut meta.namespace, DEFAULT_NAMESPACE);
    let spec = pod.spec.get_or_insert_with(Default::default);
    set_if_empty(&mut spec.restart_policy, "Always");
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    for c in &mut spec.containers {
        if c.image_pull_policy.is_empty() {
            c.image_pull_policy = default_pull_policy(&c.image).to_string();
        }
        for p in &mut c.ports {
            set_if_empty(&mut p.protocol, "TCP");
        }
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

fn set_if_empty(field: &mut String, value: &str) {
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
