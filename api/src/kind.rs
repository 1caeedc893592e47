//! The kinds of object Capstan serves and their names (kind, kubectl short names,
//! plural, apiVersion with its group, scope). Adding a kind starts here; the envelope
//! plumbing for it is generated from the list in `for_each_kind!`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A namespace: a scope for names (cluster-scoped).
    Namespace,
    /// A node: a machine that runs pods (cluster-scoped).
    Node,
    /// A pod: containers scheduled together (namespaced).
    Pod,
    /// A ReplicaSet: a number of identical pods (namespaced).
    ReplicaSet,
    /// A Deployment: rolling updates over ReplicaSets (namespaced).
    Deployment,
    /// A StatefulSet: pods with stable names and storage (namespaced).
    StatefulSet,
    /// A DaemonSet: one pod per node (namespaced).
    DaemonSet,
    /// A Job: pods run to completion (namespaced).
    Job,
    /// A CronJob: Jobs on a schedule (namespaced).
    CronJob,
    /// A Service: a stable address for pods (namespaced).
    Service,
    /// Endpoints: the addresses behind a Service (namespaced).
    Endpoints,
    /// A ConfigMap: configuration data (namespaced).
    ConfigMap,
    /// A Secret: confidential data (namespaced).
    Secret,
    /// A ServiceAccount: an identity for pods (namespaced).
    ServiceAccount,
    /// An Event: something that happened to an object (namespaced).
    Event,
    /// A Lease: a lock with a holder and a duration (namespaced).
    Lease,
    /// A LimitRange: per-object resource bounds in a namespace (namespaced).
    LimitRange,
    /// A ResourceQuota: total resource caps in a namespace (namespaced).
    ResourceQuota,
    /// A Role: permissions in a namespace (namespaced).
    Role,
    /// A RoleBinding: grants a role in a namespace (namespaced).
    RoleBinding,
    /// A ClusterRole: cluster-wide permissions (cluster-scoped).
    ClusterRole,
    /// A ClusterRoleBinding: grants a ClusterRole cluster-wide (cluster-scoped).
    ClusterRoleBinding,
    /// A PersistentVolume: a piece of storage (cluster-scoped).
    PersistentVolume,
    /// A PersistentVolumeClaim: a request for storage (namespaced).
    PersistentVolumeClaim,
    /// A StorageClass: a class of provisioned storage (cluster-scoped).
    StorageClass,
}

/// The names and scope of one kind; `INFO[k as usize]` describes `k`.
struct Info {
    kind: Kind,
    plural: &'static str,
    short: &'static [&'static str],
    api_version: &'static str,
    namespaced: bool,
}

#[rustfmt::skip]
const INFO: [Info; 25] = [
    Info { kind: Kind::Namespace, plural: "namespaces", short: &["ns"], api_version: "v1", namespaced: false },
    Info { kind: Kind::Node, plural: "nodes", short: &["no"], api_version: "v1", namespaced: false },
    Info { kind: Kind::Pod, plural: "pods", short: &["po"], api_version: "v1", namespaced: true },
    Info { kind: Kind::ReplicaSet, plural: "replicasets", short: &["rs"], api_version: "apps/v1", namespaced: true },
    Info { kind: Kind::Deployment, plural: "deployments", short: &["deploy"], api_version: "apps/v1", namespaced: true },
    Info { kind: Kind::StatefulSet, plural: "statefulsets", short: &["sts"], api_version: "apps/v1", namespaced: true },
    Info { kind: Kind::DaemonSet, plural: "daemonsets", short: &["ds"], api_version: "apps/v1", namespaced: true },
    Info { kind: Kind::Job, plural: "jobs", short: &[], api_version: "batch/v1", namespaced: true },
    Info { kind: Kind::CronJob, plural: "cronjobs", short: &["cj"], api_version: "batch/v1", namespaced: true },
    Info { kind: Kind::Service, plural: "services", short: &["svc"], api_version: "v1", namespaced: true },
    Info { kind: Kind::Endpoints, plural: "endpoints", short: &["ep"], api_version: "v1", namespaced: true },
    Info { kind: Kind::ConfigMap, plural: "configmaps", short: &["cm"], api_version: "v1", namespaced: true },
    Info { kind: Kind::Secret, plural: "secrets", short: &[], api_version: "v1", namespaced: true },
    Info { kind: Kind::ServiceAccount, plural: "serviceaccounts", short: &["sa"], api_version: "v1", namespaced: true },
    Info { kind: Kind::Event, plural: "events", short: &["ev"], api_version: "v1", namespaced: true },
    Info { kind: Kind::Lease, plural: "leases", short: &[], api_version: "coordination.k8s.io/v1", namespaced: true },
    Info { kind: Kind::LimitRange, plural: "limitranges", short: &["limits"], api_version: "v1", namespaced: true },
    Info { kind: Kind::ResourceQuota, plural: "resourcequotas", short: &["quota"], api_version: "v1", namespaced: true },
    Info { kind: Kind::Role, plural: "roles", short: &[], api_version: "rbac.authorization.k8s.io/v1", namespaced: true },
    Info { kind: Kind::RoleBinding, plural: "rolebindings", short: &[], api_version: "rbac.authorization.k8s.io/v1", namespaced: true },
    Info { kind: Kind::ClusterRole, plural: "clusterroles", short: &[], api_version: "rbac.authorization.k8s.io/v1", namespaced: false },
    Info { kind: Kind::ClusterRoleBinding, plural: "clusterrolebindings", short: &[], api_version: "rbac.authorization.k8s.io/v1", namespaced: false },
    Info { kind: Kind::PersistentVolume, plural: "persistentvolumes", short: &["pv"], api_version: "v1", namespaced: false },
    Info { kind: Kind::PersistentVolumeClaim, plural: "persistentvolumeclaims", short: &["pvc"], api_version: "v1", namespaced: true },
    Info { kind: Kind::StorageClass, plural: "storageclasses", short: &["sc"], api_version: "storage.k8s.io/v1", namespaced: false },
];

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 25] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::ReplicaSet,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::Job,
        Kind::CronJob,
        Kind::Service,
        Kind::Endpoints,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::ServiceAccount,
        Kind::Event,
        Kind::Lease,
        Kind::LimitRange,
        Kind::ResourceQuota,
        Kind::Role,
        Kind::RoleBinding,
        Kind::ClusterRole,
        Kind::ClusterRoleBinding,
        Kind::PersistentVolume,
        Kind::PersistentVolumeClaim,
        Kind::StorageClass,
    ];

    fn info(self) -> &'static Info {
        let info = &INFO[self as usize];
        debug_assert_eq!(info.kind, self, "INFO must list kinds in variant order");
        info
    }

    /// Parses a kind the way kubectl does: `Deployment`, `deployment`, `deployments`,
    /// `deploy` and so on, case-insensitively; `None` for anything else.
    /// `str::parse::<Kind>()` gives an [`Error::UnknownKind`] instead.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let info = k.info();
            k.as_str().eq_ignore_ascii_case(&s)
                || info.plural == s
                || info.short.contains(&s.as_str())
        })
    }

    /// The Kind name, e.g. `"Deployment"`; this is what requests carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Event => "Event",
            Kind::Lease => "Lease",
            Kind::LimitRange => "LimitRange",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
            Kind::ClusterRole => "ClusterRole",
            Kind::ClusterRoleBinding => "ClusterRoleBinding",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::StorageClass => "StorageClass",
        }
    }

    /// The lowercase plural, e.g. `"deployments"`; also the storage key segment.
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    /// kubectl's short names, e.g. `["deploy"]`; empty for kinds without one.
    pub fn short_names(self) -> &'static [&'static str] {
        self.info().short
    }

    /// The apiVersion the kind is served under: `"v1"` for the core group, otherwise
    /// `"<group>/v1"`, e.g. `"apps/v1"`.
    pub fn api_version(self) -> &'static str {
        self.info().api_version
    }

    /// The API group, `""` for the core group.
    pub fn group(self) -> &'static str {
        self.api_version().rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }
}

/// Calls macro `$m` with every kind's name, which is at once its [`Kind`] variant, its
/// `v1` message type and its `v1::object::Kind` oneof variant; code that must handle
/// every kind (envelope accessors, manifests) is generated from this one list.
macro_rules! for_each_kind {
    ($m:ident) => {
        $m! { Namespace, Node, Pod, ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob, Service, Endpoints, ConfigMap, Secret, ServiceAccount, Event, Lease, LimitRange, ResourceQuota, Role, RoleBinding, ClusterRole, ClusterRoleBinding, PersistentVolume, PersistentVolumeClaim, StorageClass }
    };
}
pub(crate) use for_each_kind;

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind> {
        Kind::parse(s).ok_or_else(|| Error::UnknownKind {
            kind: s.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_names_parse_to_their_kind() {
        for (s, k) in [
            ("Pod", Kind::Pod),
            ("pod", Kind::Pod),
            ("pods", Kind::Pod),
            ("po", Kind::Pod),
            ("node", Kind::Node),
            ("nodes", Kind::Node),
            ("no", Kind::Node),
            ("Node", Kind::Node),
            ("namespace", Kind::Namespace),
            ("namespaces", Kind::Namespace),
            ("ns", Kind::Namespace),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
        }
    }

    #[test]
    fn unknown_kind_is_an_error_naming_it() {
        assert_eq!(Kind::parse("Ingress"), None);
        let err = "Ingress".parse::<Kind>().unwrap_err();
        assert!(matches!(&err, Error::UnknownKind { kind } if kind == "Ingress"));
    }

    #[test]
    fn kubectl_short_names_and_groups() {
        for (s, k, api_version, namespaced) in [
            ("deploy", Kind::Deployment, "apps/v1", true),
            ("rs", Kind::ReplicaSet, "apps/v1", true),
            ("sts", Kind::StatefulSet, "apps/v1", true),
            ("ds", Kind::DaemonSet, "apps/v1", true),
            ("jobs", Kind::Job, "batch/v1", true),
            ("cj", Kind::CronJob, "batch/v1", true),
            ("svc", Kind::Service, "v1", true),
            ("ep", Kind::Endpoints, "v1", true),
            ("cm", Kind::ConfigMap, "v1", true),
            ("secret", Kind::Secret, "v1", true),
            ("sa", Kind::ServiceAccount, "v1", true),
            ("ev", Kind::Event, "v1", true),
            ("lease", Kind::Lease, "coordination.k8s.io/v1", true),
            ("limits", Kind::LimitRange, "v1", true),
            ("quota", Kind::ResourceQuota, "v1", true),
            ("role", Kind::Role, "rbac.authorization.k8s.io/v1", true),
            (
                "rolebindings",
                Kind::RoleBinding,
                "rbac.authorization.k8s.io/v1",
                true,
            ),
            (
                "clusterrole",
                Kind::ClusterRole,
                "rbac.authorization.k8s.io/v1",
                false,
            ),
            (
                "ClusterRoleBinding",
                Kind::ClusterRoleBinding,
                "rbac.authorization.k8s.io/v1",
                false,
            ),
            ("pv", Kind::PersistentVolume, "v1", false),
            ("pvc", Kind::PersistentVolumeClaim, "v1", true),
            ("sc", Kind::StorageClass, "storage.k8s.io/v1", false),
        ] {
            assert_eq!(Kind::parse(s), Some(k), "{s}");
            assert_eq!(k.api_version(), api_version, "{k}");
            assert_eq!(k.namespaced(), namespaced, "{k}");
        }
        assert_eq!(Kind::Deployment.group(), "apps");
        assert_eq!(Kind::Pod.group(), "");
        assert_eq!(Kind::Deployment.short_names(), ["deploy"]);
    }

    #[test]
    fn every_kind_has_a_unique_plural_and_its_info_row() {
        let mut plurals = std::collections::HashSet::new();
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(INFO[i].kind, k, "INFO row {i}");
            assert!(plurals.insert(k.plural()), "{k}");
            for s in k.short_names() {
                assert_eq!(Kind::parse(s), Some(k), "{s}");
            }
        }
    }

    #[test]
    fn names_and_scope() {
        assert_eq!(Kind::Pod.as_str(), "Pod");
        assert_eq!(Kind::Pod.plural(), "pods");
        assert_eq!(Kind::Node.api_version(), "v1");
        assert!(Kind::Pod.namespaced());
        assert!(!Kind::Node.namespaced());
        assert!(!Kind::Namespace.namespaced());
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(k.plural().parse::<Kind>().ok(), Some(k));
        }
    }
}
