//! Validation of the bookkeeping kinds: Event, Lease, LimitRange and ResourceQuota.
//! Pure.

use super::resources::validate_resource_list;
use super::{validate_meta, Errors};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::v1;

/// Allowed Event `type` values.
pub const EVENT_TYPES: [&str; 2] = ["Normal", "Warning"];
/// Allowed LimitRange item `type` values.
pub const LIMIT_TYPES: [&str; 3] = ["Container", "Pod", "PersistentVolumeClaim"];

/// Validates an Event.
pub fn validate_event(ev: &v1::Event) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Event, ev.metadata.as_ref());
    match &ev.involved_object {
        Some(o) if o.kind.is_empty() => errs.push("involvedObject.kind", "required"),
        Some(_) => {}
        None => errs.push("involvedObject", "required"),
    }
    errs.one_of("type", &ev.r#type, &EVENT_TYPES);
    if ev.count < 0 {
        errs.push("count", "must be greater than or equal to 0");
    }
    errs.0
}

/// Validates a Lease.
pub fn validate_lease(lease: &v1::Lease) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Lease, lease.metadata.as_ref());
    if let Some(spec) = &lease.spec {
        if spec.lease_duration_seconds.is_some_and(|s| s <= 0) {
            errs.push("spec.leaseDurationSeconds", "must be greater than 0");
        }
        if spec.lease_transitions.is_some_and(|t| t < 0) {
            errs.push(
                "spec.leaseTransitions",
                "must be greater than or equal to 0",
            );
        }
    }
    errs.0
}

/// Validates a LimitRange: quantities, and min ≤ default request ≤ default ≤ max.
pub fn validate_limit_range(lr: &v1::LimitRange) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::LimitRange, lr.metadata.as_ref());
    for (i, item) in lr.spec.iter().flat_map(|s| s.limits.iter()).enumerate() {
        let path = format!("spec.limits[{i}]");
        if item.r#type.is_empty() {
            errs.push(format!("{path}.type"), "required");
        }
        errs.one_of(format!("{path}.type"), &item.r#type, &LIMIT_TYPES);
        let max = validate_resource_list(&mut errs, &format!("{path}.max"), &item.max);
        let min = validate_resource_list(&mut errs, &format!("{path}.min"), &item.min);
        let default = validate_resource_list(&mut errs, &format!("{path}.default"), &item.default);
        let request = validate_resource_list(
            &mut errs,
            &format!("{path}.defaultRequest"),
            &item.default_request,
        );
        validate_resource_list(
            &mut errs,
            &format!("{path}.maxLimitRequestRatio"),
            &item.max_limit_request_ratio,
        );
        if item.r#type == "Pod" && !(default.is_empty() && request.is_empty()) {
            errs.push(
                format!("{path}.default"),
                "defaults may not be set for type Pod",
            );
        }
        // Each bound must not exceed the next: min ≤ defaultRequest ≤ default ≤ max.
        let chain = [
            ("min", &min),
            ("defaultRequest", &request),
            ("default", &default),
            ("max", &max),
        ];
        for (lo_i, (lo_name, lo)) in chain.iter().enumerate() {
            for (hi_name, hi) in &chain[lo_i + 1..] {
                for (res, low) in lo.iter() {
                    if let Some(high) = hi.get(res) {
                        if low > high {
                            errs.push(
                                format!("{path}.{lo_name}[{res}]"),
                                format!("{low} must be less than or equal to {hi_name} {high}"),
                            );
                        }
                    }
                }
            }
        }
    }
    errs.0
}

/// Validates a ResourceQuota.
pub fn validate_resource_quota(rq: &v1::ResourceQuota) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::ResourceQuota, rq.metadata.as_ref());
    if let Some(spec) = &rq.spec {
        validate_resource_list(&mut errs, "spec.hard", &spec.hard);
        for (i, scope) in spec.scopes.iter().enumerate() {
            errs.one_of(
                format!("spec.scopes[{i}]"),
                scope,
                &[
                    "Terminating",
                    "NotTerminating",
                    "BestEffort",
                    "NotBestEffort",
                    "PriorityClass",
                    "CrossNamespacePodAffinity",
                ],
            );
        }
    }
    if let Some(status) = &rq.status {
        validate_resource_list(&mut errs, "status.hard", &status.hard);
        validate_resource_list(&mut errs, "status.used", &status.used);
    }
    errs.0
}
