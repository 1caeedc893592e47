//! Validation of resource lists (`requests`, `limits`, `capacity`, `hard`): names are
//! qualified names, values parse as non-negative quantities, and a request is not
//! above its limit. Pure; reports through the parent module's `Errors`.

use std::collections::BTreeMap;

use super::Errors;
use crate::names;
use crate::quantity::Quantity;
use crate::v1;

/// Checks every entry of a resource map at `path`; returns the parsed quantities of the
/// valid ones, for callers that compare them.
pub(super) fn validate_resource_list(
    errs: &mut Errors,
    path: &str,
    list: &BTreeMap<String, String>,
) -> BTreeMap<String, Quantity> {
    let mut parsed = BTreeMap::new();
    for (name, value) in list {
        let field = format!("{path}[{name}]");
        errs.check(field.clone(), names::qualified_name(name));
        match Quantity::parse(value) {
            Ok(q) if q.is_negative() => errs.push(
                field,
                format!("{value:?} must be greater than or equal to 0"),
            ),
            Ok(q) => {
                parsed.insert(name.clone(), q);
            }
            Err(e) => errs.push(field, e.to_string()),
        }
    }
    parsed
}

/// Checks a container's `resources` at `path`: valid quantities, requests ≤ limits.
pub(super) fn validate_requirements(errs: &mut Errors, path: &str, res: &v1::ResourceRequirements) {
    requests_within_limits(errs, path, &res.requests, &res.limits);
}

/// Checks a claim's `resources` at `path` the same way.
pub(super) fn validate_volume_requirements(
    errs: &mut Errors,
    path: &str,
    res: &v1::VolumeResourceRequirements,
) {
    requests_within_limits(errs, path, &res.requests, &res.limits);
}

fn requests_within_limits(
    errs: &mut Errors,
    path: &str,
    requests: &BTreeMap<String, String>,
    limits: &BTreeMap<String, String>,
) {
    let limits = validate_resource_list(errs, &format!("{path}.limits"), limits);
    let requests = validate_resource_list(errs, &format!("{path}.requests"), requests);
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name) {
            if request > limit {
                errs.push(
                    format!("{path}.requests[{name}]"),
                    format!("{request} must be less than or equal to the {name} limit of {limit}"),
                );
            }
        }
    }
}
