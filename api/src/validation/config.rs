//! Validation of ConfigMap, Secret and ServiceAccount: key syntax, keys unique across
//! `data` and `binaryData`, Secret types and their required keys. Pure.

use super::{validate_meta, Errors};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::names;
use crate::v1;

/// Total size of a ConfigMap's or Secret's values, as in Kubernetes (1 MiB).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Validates a ConfigMap.
pub fn validate_config_map(cm: &v1::ConfigMap) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ConfigMap, cm.metadata.as_ref());
    let mut size = 0;
    for (k, v) in &cm.data {
        errs.check(format!("data[{k}]"), names::config_map_key(k));
        size += v.len();
    }
    for (k, v) in &cm.binary_data {
        errs.check(format!("binaryData[{k}]"), names::config_map_key(k));
        if cm.data.contains_key(k) {
            errs.push(format!("binaryData[{k}]"), "duplicate of a key in data");
        }
        size += v.len();
    }
    too_large(&mut errs, "data", size);
    errs.0
}

/// Validates a Secret, including the keys its type requires.
pub fn validate_secret(secret: &v1::Secret) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Secret, secret.metadata.as_ref());
    let mut size = 0;
    for (k, v) in &secret.data {
        errs.check(format!("data[{k}]"), names::config_map_key(k));
        size += v.len();
    }
    for (k, v) in &secret.string_data {
        errs.check(format!("stringData[{k}]"), names::config_map_key(k));
        size += v.len();
    }
    too_large(&mut errs, "data", size);
    let has = |key: &str| secret.data.contains_key(key) || secret.string_data.contains_key(key);
    let required: &[&str] = match secret.r#type.as_str() {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/basic-auth" | "kubernetes.io/ssh-auth" => &[],
        _ => &[],
    };
    for key in required {
        if !has(key) {
            errs.push(
                format!("data[{key}]"),
                format!("required for Secret type {}", secret.r#type),
            );
        }
    }
    if secret.r#type == "kubernetes.io/ssh-auth" && !has("ssh-privatekey") {
        errs.push(
            "data[ssh-privatekey]",
            "required for Secret type kubernetes.io/ssh-auth",
        );
    }
    if secret.r#type == "kubernetes.io/basic-auth" && !has("username") && !has("password") {
        errs.push(
            "data",
            "Secret type kubernetes.io/basic-auth needs username or password",
        );
    }
    if !secret.r#type.is_empty() {
        errs.check("type", names::qualified_name(&secret.r#type));
    }
    errs.0
}

/// Validates a ServiceAccount.
pub fn validate_service_account(sa: &v1::ServiceAccount) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ServiceAccount, sa.metadata.as_ref());
    for (i, s) in sa.image_pull_secrets.iter().enumerate() {
        errs.check(
            format!("imagePullSecrets[{i}].name"),
            names::dns1123_subdomain(&s.name),
        );
    }
    for (i, s) in sa.secrets.iter().enumerate() {
        if s.name.is_empty() {
            errs.push(format!("secrets[{i}].name"), "required");
        }
    }
    errs.0
}

fn too_large(errs: &mut Errors, path: &str, size: usize) {
    if size > MAX_DATA_BYTES {
        errs.push(
            path,
            format!("values total {size} bytes: must be no more than {MAX_DATA_BYTES}"),
        );
    }
}
