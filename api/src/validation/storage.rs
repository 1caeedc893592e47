//! Validation of PersistentVolume, PersistentVolumeClaim (also as a StatefulSet claim
//! template) and StorageClass. Pure.

use super::pod::exactly_one;
use super::resources::{validate_resource_list, validate_volume_requirements};
use super::{validate_meta, Errors};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::names;
use crate::v1;

/// Allowed access modes.
pub const ACCESS_MODES: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];
/// Allowed `persistentVolumeReclaimPolicy` values.
pub const RECLAIM_POLICIES: [&str; 3] = ["Retain", "Delete", "Recycle"];
/// Allowed `volumeMode` values.
pub const VOLUME_MODES: [&str; 2] = ["Filesystem", "Block"];
/// Allowed StorageClass `volumeBindingMode` values.
pub const BINDING_MODES: [&str; 2] = ["Immediate", "WaitForFirstConsumer"];

/// Validates a PersistentVolume.
pub fn validate_persistent_volume(pv: &v1::PersistentVolume) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::PersistentVolume, pv.metadata.as_ref());
    let Some(spec) = &pv.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    access_modes(&mut errs, "spec.accessModes", &spec.access_modes);
    let capacity = validate_resource_list(&mut errs, "spec.capacity", &spec.capacity);
    if !capacity.contains_key("storage") {
        errs.push("spec.capacity[storage]", "required");
    }
    errs.one_of(
        "spec.persistentVolumeReclaimPolicy",
        &spec.persistent_volume_reclaim_policy,
        &RECLAIM_POLICIES,
    );
    if let Some(mode) = &spec.volume_mode {
        errs.one_of("spec.volumeMode", mode, &VOLUME_MODES);
    }
    if !spec.storage_class_name.is_empty() {
        errs.check(
            "spec.storageClassName",
            names::dns1123_subdomain(&spec.storage_class_name),
        );
    }
    exactly_one(
        &mut errs,
        "spec",
        &[
            ("hostPath", spec.host_path.is_some()),
            ("local", spec.local.is_some()),
            ("nfs", spec.nfs.is_some()),
        ],
    );
    for (field, path) in [
        ("hostPath.path", spec.host_path.as_ref().map(|h| &h.path)),
        ("local.path", spec.local.as_ref().map(|l| &l.path)),
        ("nfs.path", spec.nfs.as_ref().map(|n| &n.path)),
    ] {
        if path.is_some_and(|p| !p.starts_with('/')) {
            errs.push(format!("spec.{field}"), "must be an absolute path");
        }
    }
    if spec.nfs.as_ref().is_some_and(|n| n.server.is_empty()) {
        errs.push("spec.nfs.server", "required");
    }
    errs.0
}

/// Validates a PersistentVolumeClaim.
pub fn validate_persistent_volume_claim(pvc: &v1::PersistentVolumeClaim) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(
        &mut errs,
        Kind::PersistentVolumeClaim,
        pvc.metadata.as_ref(),
    );
    match &pvc.spec {
        Some(spec) => claim_spec(&mut errs, "spec", spec),
        None => errs.push("spec", "required"),
    }
    errs.0
}

/// Validates a StatefulSet's claim template at `path`: it needs a name and a valid spec
/// but no namespace of its own.
pub(super) fn validate_claim_template(
    errs: &mut Errors,
    path: &str,
    pvc: &v1::PersistentVolumeClaim,
) {
    let name = pvc.metadata.as_ref().map_or("", |m| m.name.as_str());
    errs.check(format!("{path}.metadata.name"), names::dns1123_label(name));
    match &pvc.spec {
        Some(spec) => claim_spec(errs, &format!("{path}.spec"), spec),
        None => errs.push(format!("{path}.spec"), "required"),
    }
}

/// Validates a StorageClass.
pub fn validate_storage_class(sc: &v1::StorageClass) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::StorageClass, sc.metadata.as_ref());
    if sc.provisioner.is_empty() {
        errs.push("provisioner", "required");
    } else {
        errs.check("provisioner", names::qualified_name(&sc.provisioner));
    }
    if let Some(p) = &sc.reclaim_policy {
        errs.one_of("reclaimPolicy", p, &["Retain", "Delete"]);
    }
    if let Some(m) = &sc.volume_binding_mode {
        errs.one_of("volumeBindingMode", m, &BINDING_MODES);
    }
    errs.0
}

fn claim_spec(errs: &mut Errors, path: &str, spec: &v1::PersistentVolumeClaimSpec) {
    access_modes(errs, &format!("{path}.accessModes"), &spec.access_modes);
    match &spec.resources {
        Some(res) => {
            validate_volume_requirements(errs, &format!("{path}.resources"), res);
            if !res.requests.contains_key("storage") {
                errs.push(format!("{path}.resources.requests[storage]"), "required");
            }
        }
        None => errs.push(format!("{path}.resources.requests[storage]"), "required"),
    }
    if let Some(mode) = &spec.volume_mode {
        errs.one_of(format!("{path}.volumeMode"), mode, &VOLUME_MODES);
    }
    if let Some(ls) = &spec.selector {
        if let Err(e) = crate::selector::Selector::from_label_selector(ls) {
            errs.push(format!("{path}.selector"), e.to_string());
        }
    }
    if let Some(class) = spec.storage_class_name.as_deref().filter(|c| !c.is_empty()) {
        errs.check(
            format!("{path}.storageClassName"),
            names::dns1123_subdomain(class),
        );
    }
}

fn access_modes(errs: &mut Errors, path: &str, modes: &[String]) {
    if modes.is_empty() {
        errs.push(path, "must have at least one access mode");
    }
    for (i, m) in modes.iter().enumerate() {
        errs.one_of(format!("{path}[{i}]"), m, &ACCESS_MODES);
    }
}
