//! Defaults of Service, Secret and the storage kinds: Service type ClusterIP,
//! protocol TCP, targetPort = port; Secret type Opaque with `stringData` merged into
//! `data`; reclaim policies and volume modes. Pure and idempotent.

use super::set_if_empty;
use crate::v1;

/// Defaults a Service: type ClusterIP, sessionAffinity None, internalTrafficPolicy
/// Cluster, and per port protocol TCP and targetPort equal to port.
pub fn default_service(svc: &mut v1::Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    set_if_empty(&mut spec.r#type, "ClusterIP");
    set_if_empty(&mut spec.session_affinity, "None");
    if spec.r#type != "ExternalName" {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".into());
    }
    if matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer") {
        set_if_empty(&mut spec.external_traffic_policy, "Cluster");
    }
    for p in &mut spec.ports {
        set_if_empty(&mut p.protocol, "TCP");
        if p.target_port.is_none() {
            p.target_port = Some(v1::IntOrString::int(p.port));
        }
    }
}

/// Defaults a Secret: type Opaque, and `stringData` moved into `data` (it is
/// write-only, as in Kubernetes; its values win over `data`'s).
pub fn default_secret(secret: &mut v1::Secret) {
    set_if_empty(&mut secret.r#type, "Opaque");
    for (k, v) in std::mem::take(&mut secret.string_data) {
        secret.data.insert(k, v.into_bytes());
    }
}

/// Defaults a PersistentVolume: reclaim policy Retain, volume mode Filesystem.
pub fn default_persistent_volume(pv: &mut v1::PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    set_if_empty(&mut spec.persistent_volume_reclaim_policy, "Retain");
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// Defaults a PersistentVolumeClaim: volume mode Filesystem.
pub fn default_persistent_volume_claim(pvc: &mut v1::PersistentVolumeClaim) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// Defaults a StorageClass: reclaim policy Delete, binding mode Immediate.
pub fn default_storage_class(sc: &mut v1::StorageClass) {
    sc.reclaim_policy.get_or_insert_with(|| "Delete".into());
    sc.volume_binding_mode
        .get_or_insert_with(|| "Immediate".into());
}
