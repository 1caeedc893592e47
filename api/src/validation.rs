//! Pure validation of objects: returns every problem at once, each as a [`FieldError`]
//! with the Kubernetes JSON path of the field. No defaulting and no I/O here.
//!
//! Fields that `defaults` fills (namespace of namespaced kinds, restartPolicy,
//! imagePullPolicy, protocol) may be empty, so validation gives the same answer before
//! and after defaulting; a value that is set must be valid.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

mod cluster;
mod config;
mod pod;
mod rbac;
mod resources;
mod services;
mod storage;
mod workloads;

pub use cluster::{
    validate_event, validate_lease, validate_limit_range, validate_resource_quota, EVENT_TYPES,
    LIMIT_TYPES,
};
pub use config::{validate_config_map, validate_secret, validate_service_account, MAX_DATA_BYTES};
pub use rbac::{
    validate_cluster_role, validate_cluster_role_binding, validate_role, validate_role_binding,
};
pub use services::{
    validate_endpoints, validate_service, CLUSTER_IP_NONE, NODE_PORT_RANGE, SERVICE_TYPES,
};
pub use storage::{
    validate_persistent_volume, validate_persistent_volume_claim, validate_storage_class,
    ACCESS_MODES,
};
pub use workloads::{
    validate_cron_job, validate_daemon_set, validate_deployment, validate_job,
    validate_replica_set, validate_stateful_set,
};

use crate::error::{Error, FieldError, Result};
use crate::kind::Kind;
use crate::names::{self, Check};
use crate::v1;

/// Allowed `spec.restartPolicy` values.
pub const RESTART_POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
/// Allowed `imagePullPolicy` values.
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];
/// Allowed port protocols.
pub const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
/// Allowed `status.phase` values of a pod.
pub const POD_PHASES: [&str; 5] = ["Pending", "Running", "Succeeded", "Failed", "Unknown"];
/// Allowed `status.phase` values of a namespace.
pub const NAMESPACE_PHASES: [&str; 2] = ["Active", "Terminating"];
/// Allowed `spec.dnsPolicy` values of a pod.
pub const DNS_POLICIES: [&str; 4] = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];

/// Validates an object of any kind; an empty envelope yields one error on `kind`.
pub fn validate(obj: &v1::Object) -> Vec<FieldError> {
    use v1::object::Kind as K;
    match obj.kind.as_ref() {
        Some(K::Pod(p)) => validate_pod(p),
        Some(K::Node(n)) => validate_node(n),
        Some(K::Namespace(n)) => validate_namespace(n),
        Some(K::ReplicaSet(o)) => validate_replica_set(o),
        Some(K::Deployment(o)) => validate_deployment(o),
        Some(K::StatefulSet(o)) => validate_stateful_set(o),
        Some(K::DaemonSet(o)) => validate_daemon_set(o),
        Some(K::Job(o)) => validate_job(o),
        Some(K::CronJob(o)) => validate_cron_job(o),
        Some(K::Service(o)) => validate_service(o),
        Some(K::Endpoints(o)) => validate_endpoints(o),
        Some(K::ConfigMap(o)) => validate_config_map(o),
        Some(K::Secret(o)) => validate_secret(o),
        Some(K::ServiceAccount(o)) => validate_service_account(o),
        Some(K::Event(o)) => validate_event(o),
        Some(K::Lease(o)) => validate_lease(o),
        Some(K::LimitRange(o)) => validate_limit_range(o),
        Some(K::ResourceQuota(o)) => validate_resource_quota(o),
        Some(K::Role(o)) => validate_role(o),
        Some(K::RoleBinding(o)) => validate_role_binding(o),
        Some(K::ClusterRole(o)) => validate_cluster_role(o),
        Some(K::ClusterRoleBinding(o)) => validate_cluster_role_binding(o),
        Some(K::PersistentVolume(o)) => validate_persistent_volume(o),
        Some(K::PersistentVolumeClaim(o)) => validate_persistent_volume_claim(o),
        Some(K::StorageClass(o)) => validate_storage_class(o),
        None => vec![FieldError::new("kind", "required")],
    }
}

/// Validates an object and turns any problems into [`Error::Invalid`].
pub fn ensure_valid(obj: &v1::Object) -> Result<()> {
    let errors = validate(obj);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid { errors })
    }
}

/// Validates a pod: metadata, spec and (if present) status phase.
pub fn validate_pod(pod: &v1::Pod) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Pod, pod.metadata.as_ref());
    match &pod.spec {
        Some(spec) => validate_pod_spec(&mut errs, "spec", spec),
        None => errs.push("spec", "required"),
    }
    if let Some(status) = &pod.status {
        errs.one_of("status.phase", &status.phase, &POD_PHASES);
    }
    errs.0
}

/// Validates a node: its name and, when set, its pod CIDR.
pub fn validate_node(node: &v1::Node) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Node, node.metadata.as_ref());
    if let Some(spec) = &node.spec {
        if !spec.pod_cidr.is_empty() {
            errs.check("spec.podCIDR", cidr(&spec.pod_cidr));
        }
    }
    errs.0
}

/// Validates a namespace: its name and phase.
pub fn validate_namespace(ns: &v1::Namespace) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Namespace, ns.metadata.as_ref());
    if let Some(status) = &ns.status {
        errs.one_of("status.phase", &status.phase, &NAMESPACE_PHASES);
    }
    errs.0
}

/// Collects field errors; the helpers keep the rules below one line each.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError::new(field, reason));
    }

    fn check(&mut self, field: impl Into<String>, check: Check) {
        if let Err(reason) = check {
            self.push(field, reason);
        }
    }

    /// Empty is accepted: these fields are defaulted.
    fn one_of(&mut self, field: impl Into<String>, value: &str, allowed: &[&str]) {
        if !value.is_empty() && !allowed.contains(&value) {
            self.push(
                field,
                format!(
                    "unsupported value {value:?}: must be one of {}",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.check(format!("{field}[{k}]"), names::qualified_name(k));
            self.check(format!("{field}[{k}]"), names::label_value(v));
        }
    }
}

fn validate_meta(errs: &mut Errors, kind: Kind, meta: Option<&v1::ObjectMeta>) {
    let Some(meta) = meta else {
        errs.push("metadata.name", "required");
        return;
    };
    let name_rule = match kind {
        Kind::Namespace => names::dns1123_label,
        Kind::Service => names::dns1035_label,
        Kind::Role | Kind::RoleBinding | Kind::ClusterRole | Kind::ClusterRoleBinding => {
            names::path_segment
        }
        _ => names::dns1123_subdomain,
    };
    if meta.name.is_empty() {
        if meta.generate_name.is_empty() {
            errs.push("metadata.name", "required (or set metadata.generateName)");
        }
    } else {
        errs.check("metadata.name", name_rule(&meta.name));
    }
    if !meta.generate_name.is_empty() {
        // The server appends a random suffix, so the prefix may end in '-'.
        errs.check(
            "metadata.generateName",
            name_rule(&format!("{}x", meta.generate_name)),
        );
    }
    if kind.namespaced() {
        if !meta.namespace.is_empty() {
            errs.check("metadata.namespace", names::dns1123_label(&meta.namespace));
        }
    } else if !meta.namespace.is_empty() {
        errs.push(
            "metadata.namespace",
            format!("not allowed: {kind} is cluster-scoped"),
        );
    }
    errs.labels("metadata.labels", &meta.labels);
    for key in meta.annotations.keys() {
        errs.check(
            format!("metadata.annotations[{key}]"),
            names::qualified_name(key),
        );
    }
    for (i, owner) in meta.owner_references.iter().enumerate() {
        let path = format!("metadata.ownerReferences[{i}]");
        for (field, value) in [
            ("apiVersion", &owner.api_version),
            ("kind", &owner.kind),
            ("name", &owner.name),
            ("uid", &owner.uid),
        ] {
            if value.is_empty() {
                errs.push(format!("{path}.{field}"), "required");
            }
        }
    }
    for (i, f) in meta.finalizers.iter().enumerate() {
        errs.check(
            format!("metadata.finalizers[{i}]"),
            names::qualified_name(f),
        );
    }
}

/// Validates a pod spec whose JSON path is `path` (`spec`, or `spec.template.spec` in
/// a workload).
fn validate_pod_spec(errs: &mut Errors, path: &str, spec: &v1::PodSpec) {
    validate_pod_spec_with(errs, path, spec, &[]);
}

/// As [`validate_pod_spec`], with `extra_volumes` that mounts may name besides the
/// pod's own volumes (a StatefulSet's claim templates).
fn validate_pod_spec_with(
    errs: &mut Errors,
    path: &str,
    spec: &v1::PodSpec,
    extra_volumes: &[&str],
) {
    if spec.containers.is_empty() {
        errs.push(
            format!("{path}.containers"),
            "must have at least one container",
        );
    }
    let mut volumes = pod::validate_volumes(errs, path, &spec.volumes);
    volumes.extend(extra_volumes);
    let mut container_names = HashSet::new();
    let mut port_names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("{path}.initContainers[{i}]"), c))
        .chain(
            spec.containers
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{path}.containers[{i}]"), c)),
        );
    for (path, c) in all {
        pod::validate_container_extras(errs, &path, c, &volumes);
        errs.check(format!("{path}.name"), names::dns1123_label(&c.name));
        if !c.name.is_empty() && !container_names.insert(c.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!("duplicate container name {:?}", c.name),
            );
        }
        if c.image.is_empty() {
            errs.push(format!("{path}.image"), "required");
        } else if c.image.trim() != c.image || c.image.contains(char::is_whitespace) {
            errs.push(format!("{path}.image"), "must not contain whitespace");
        }
        errs.one_of(
            format!("{path}.imagePullPolicy"),
            &c.image_pull_policy,
            &PULL_POLICIES,
        );
        for (j, p) in c.ports.iter().enumerate() {
            let ppath = format!("{path}.ports[{j}]");
            if !(1..=65535).contains(&p.container_port) {
                errs.push(
                    format!("{ppath}.containerPort"),
                    format!(
                        "{} is not a valid port number: must be between 1 and 65535",
                        p.container_port
                    ),
                );
            }
            if !(0..=65535).contains(&p.host_port) {
                errs.push(
                    format!("{ppath}.hostPort"),
                    format!(
                        "{} is not a valid port number: must be between 0 and 65535",
                        p.host_port
                    ),
                );
            }
            errs.one_of(format!("{ppath}.protocol"), &p.protocol, &PROTOCOLS);
            if !p.name.is_empty() {
                errs.check(format!("{ppath}.name"), names::iana_svc_name(&p.name));
                if !port_names.insert(p.name.as_str()) {
                    errs.push(
                        format!("{ppath}.name"),
                        format!("duplicate port name {:?}", p.name),
                    );
                }
            }
        }
        for (j, e) in c.env.iter().enumerate() {
            errs.check(
                format!("{path}.env[{j}].name"),
                names::env_var_name(&e.name),
            );
        }
    }
    errs.one_of(
        format!("{path}.restartPolicy"),
        &spec.restart_policy,
        &RESTART_POLICIES,
    );
    if let Some(secs) = spec.termination_grace_period_seconds {
        if secs < 0 {
            errs.push(
                format!("{path}.terminationGracePeriodSeconds"),
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(secs) = spec.active_deadline_seconds {
        if secs <= 0 {
            errs.push(
                format!("{path}.activeDeadlineSeconds"),
                "must be greater than 0",
            );
        }
    }
    errs.one_of(format!("{path}.dnsPolicy"), &spec.dns_policy, &DNS_POLICIES);
    pod::validate_dns(errs, path, spec);
    if let Some(sc) = &spec.security_context {
        pod::validate_pod_security(errs, &format!("{path}.securityContext"), sc);
    }
    errs.labels(&format!("{path}.nodeSelector"), &spec.node_selector);
    if !spec.node_name.is_empty() {
        errs.check(
            format!("{path}.nodeName"),
            names::dns1123_subdomain(&spec.node_name),
        );
    }
    if !spec.service_account_name.is_empty() {
        errs.check(
            format!("{path}.serviceAccountName"),
            names::dns1123_subdomain(&spec.service_account_name),
        );
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if !value.is_empty() {
            errs.check(format!("{path}.{field}"), names::dns1123_label(value));
        }
    }
}

fn cidr(s: &str) -> Check {
    let bad = || format!("{s:?} is not a CIDR (e.g. \"10.244.1.0/24\")");
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str) -> v1::Container {
        v1::Container {
            name: name.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    fn pod(name: &str, containers: Vec<v1::Container>) -> v1::Pod {
        v1::Pod {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::PodSpec {
                containers,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn host_aliases_and_dns_config_name_the_bad_field() {
        let mut p = pod("web", vec![container("c", "busybox")]);
        let spec = p.spec.as_mut().unwrap();
        spec.host_aliases = vec![v1::HostAlias {
            ip: "10.0.0.300".into(),
            hostnames: vec!["ok.local".into(), "Not_OK".into()],
        }];
        spec.dns_policy = "None".into();
        spec.dns_config = Some(v1::PodDnsConfig {
            nameservers: vec![],
            searches: vec!["svc.cluster.local.".into(), "bad..name".into()],
            options: vec![v1::PodDnsConfigOption {
                name: String::new(),
                value: Some("1".into()),
            }],
        });
        let errs = validate_pod(&p);
        assert_eq!(
            fields(&errs),
            [
                "spec.hostAliases[0].ip",
                "spec.hostAliases[0].hostnames[1]",
                "spec.dnsConfig.searches[1]",
                "spec.dnsConfig.options[0].name",
                "spec.dnsConfig.nameservers",
            ],
            "{errs:?}"
        );
        assert!(
            errs[4].reason.contains("dnsPolicy is None"),
            "{}",
            errs[4].reason
        );
    }

    #[test]
    fn a_minimal_pod_is_valid() {
        assert_eq!(
            validate_pod(&pod("web", vec![container("c", "busybox")])),
            vec![]
        );
    }

    #[test]
    fn missing_image_is_reported_on_the_container_image() {
        let errs = validate_pod(&pod("web", vec![container("c", "")]));
        assert_eq!(fields(&errs), ["spec.containers[0].image"]);
        assert_eq!(errs[0].reason, "required");
    }

    #[test]
    fn invalid_name_is_reported_on_metadata_name() {
        let errs = validate_pod(&pod("Hello_World", vec![container("c", "busybox")]));
        assert_eq!(fields(&errs), ["metadata.name"]);
        assert!(errs[0].reason.contains("DNS-1123"), "{}", errs[0].reason);
    }

    #[test]
    fn missing_name_is_required_unless_generate_name_is_set() {
        let mut p = pod("", vec![container("c", "busybox")]);
        assert_eq!(fields(&validate_pod(&p)), ["metadata.name"]);
        p.metadata.as_mut().unwrap().generate_name = "web-".into();
        assert_eq!(validate_pod(&p), vec![]);
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut p = pod("web", vec![container("c", "busybox"), container("c", "")]);
        let spec = p.spec.as_mut().unwrap();
        spec.restart_policy = "Sometimes".into();
        spec.termination_grace_period_seconds = Some(-1);
        spec.containers[0].ports = vec![
            v1::ContainerPort {
                container_port: 0,
                ..Default::default()
            },
            v1::ContainerPort {
                container_port: 80,
                host_port: 70000,
                protocol: "ICMP".into(),
                ..Default::default()
            },
        ];
        spec.containers[0].env = vec![v1::EnvVar {
            name: "1BAD".into(),
            ..Default::default()
        }];
        spec.containers[0].image_pull_policy = "Sometimes".into();
        spec.node_selector.insert("disk".into(), "not ok".into());
        p.metadata
            .as_mut()
            .unwrap()
            .labels
            .insert("-bad".into(), "x".into());
        let errs = validate_pod(&p);
        assert_eq!(
            fields(&errs),
            [
                "metadata.labels[-bad]",
                "spec.containers[0].imagePullPolicy",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].hostPort",
                "spec.containers[0].ports[1].protocol",
                "spec.containers[0].env[0].name",
                "spec.containers[1].name",
                "spec.containers[1].image",
                "spec.restartPolicy",
                "spec.terminationGracePeriodSeconds",
                "spec.nodeSelector[disk]",
            ],
            "{errs:#?}"
        );
        assert!(errs[6].reason.contains("duplicate"));
    }

    #[test]
    fn pod_needs_a_spec_with_a_container() {
        let mut p = pod("web", vec![]);
        assert_eq!(fields(&validate_pod(&p)), ["spec.containers"]);
        p.spec = None;
        assert_eq!(fields(&validate_pod(&p)), ["spec"]);
    }

    #[test]
    fn restart_policies_are_checked() {
        for (policy, ok) in [
            ("Always", true),
            ("OnFailure", true),
            ("Never", true),
            ("", true),
            ("always", false),
        ] {
            let mut p = pod("web", vec![container("c", "busybox")]);
            p.spec.as_mut().unwrap().restart_policy = policy.into();
            assert_eq!(validate_pod(&p).is_empty(), ok, "{policy}");
        }
    }

    #[test]
    fn cluster_scoped_kinds_reject_a_namespace() {
        let node = v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: "n1".into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                pod_cidr: "10.244.300.0/24".into(),
                unschedulable: false,
            }),
            status: None,
        };
        assert_eq!(
            fields(&validate_node(&node)),
            ["metadata.namespace", "spec.podCIDR"]
        );
    }

    #[test]
    fn namespace_names_are_dns_labels() {
        let ns = |name: &str| v1::Namespace {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(validate_namespace(&ns("team-a")).is_empty());
        assert_eq!(
            fields(&validate_namespace(&ns("team.a"))),
            ["metadata.name"]
        );
    }

    #[test]
    fn ensure_valid_wraps_errors() {
        let obj = v1::Object::from_pod(pod("web", vec![container("c", "")]));
        let err = ensure_valid(&obj).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.containers[0].image: required"),
            "{err}"
        );
        assert!(ensure_valid(&v1::Object::default()).is_err());
    }
}
