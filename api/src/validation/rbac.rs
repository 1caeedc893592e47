//! Validation of Role, ClusterRole, RoleBinding and ClusterRoleBinding. Pure.

use super::{validate_meta, Errors};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::v1;

/// The RBAC API group, which `roleRef.apiGroup` must name.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Allowed subject kinds.
pub const SUBJECT_KINDS: [&str; 3] = ["User", "Group", "ServiceAccount"];

/// Validates a Role: non-resource URLs are cluster-wide only.
pub fn validate_role(role: &v1::Role) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Role, role.metadata.as_ref());
    rules(&mut errs, &role.rules, false);
    errs.0
}

/// Validates a ClusterRole.
pub fn validate_cluster_role(role: &v1::ClusterRole) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ClusterRole, role.metadata.as_ref());
    rules(&mut errs, &role.rules, true);
    errs.0
}

/// Validates a RoleBinding.
pub fn validate_role_binding(b: &v1::RoleBinding) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::RoleBinding, b.metadata.as_ref());
    binding(
        &mut errs,
        &b.subjects,
        b.role_ref.as_ref(),
        &["Role", "ClusterRole"],
    );
    errs.0
}

/// Validates a ClusterRoleBinding.
pub fn validate_cluster_role_binding(b: &v1::ClusterRoleBinding) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ClusterRoleBinding, b.metadata.as_ref());
    binding(
        &mut errs,
        &b.subjects,
        b.role_ref.as_ref(),
        &["ClusterRole"],
    );
    errs.0
}

fn rules(errs: &mut Errors, rules: &[v1::PolicyRule], cluster: bool) {
    for (i, r) in rules.iter().enumerate() {
        let path = format!("rules[{i}]");
        if r.verbs.is_empty() {
            errs.push(format!("{path}.verbs"), "must have at least one verb");
        }
        if !r.non_resource_urls.is_empty() {
            if !cluster {
                errs.push(
                    format!("{path}.nonResourceURLs"),
                    "only allowed in ClusterRoles",
                );
            }
            if !r.resources.is_empty() || !r.api_groups.is_empty() {
                errs.push(
                    format!("{path}.nonResourceURLs"),
                    "may not be combined with resources or apiGroups",
                );
            }
        } else if r.resources.is_empty() {
            errs.push(format!("{path}.resources"), "required (or nonResourceURLs)");
        } else if r.api_groups.is_empty() {
            errs.push(
                format!("{path}.apiGroups"),
                "required: use [\"\"] for the core group",
            );
        }
    }
}

fn binding(
    errs: &mut Errors,
    subjects: &[v1::Subject],
    role_ref: Option<&v1::RoleRef>,
    ref_kinds: &[&str],
) {
    match role_ref {
        None => errs.push("roleRef", "required"),
        Some(r) => {
            if r.api_group != RBAC_GROUP {
                errs.push("roleRef.apiGroup", format!("must be {RBAC_GROUP:?}"));
            }
            if r.kind.is_empty() {
                errs.push("roleRef.kind", "required");
            } else {
                errs.one_of("roleRef.kind", &r.kind, ref_kinds);
            }
            if r.name.is_empty() {
                errs.push("roleRef.name", "required");
            }
        }
    }
    for (i, s) in subjects.iter().enumerate() {
        let path = format!("subjects[{i}]");
        if s.kind.is_empty() {
            errs.push(format!("{path}.kind"), "required");
        }
        errs.one_of(format!("{path}.kind"), &s.kind, &SUBJECT_KINDS);
        if s.name.is_empty() {
            errs.push(format!("{path}.name"), "required");
        }
        match s.kind.as_str() {
            "ServiceAccount" if !s.api_group.is_empty() => {
                errs.push(
                    format!("{path}.apiGroup"),
                    "must be \"\" for ServiceAccount",
                );
            }
            "User" | "Group" if s.api_group != RBAC_GROUP => {
                errs.push(
                    format!("{path}.apiGroup"),
                    format!("must be {RBAC_GROUP:?}"),
                );
            }
            _ => {}
        }
    }
}
