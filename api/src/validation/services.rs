//! Validation of Service and Endpoints: types and their fields, ports (1..65535,
//! unique names, node ports in 30000..32767), selectors and addresses. Pure.

use std::collections::HashSet;
use std::net::IpAddr;

use super::pod::{port_number, target_port};
use super::{validate_meta, Errors, PROTOCOLS};
use crate::error::FieldError;
use crate::kind::Kind;
use crate::names;
use crate::v1;

/// Allowed `spec.type` values of a Service.
pub const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
/// Allowed `spec.sessionAffinity` values.
pub const SESSION_AFFINITIES: [&str; 2] = ["None", "ClientIP"];
/// Allowed traffic policies.
pub const TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
/// The node port range, as in Kubernetes' default `--service-node-port-range`.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;
/// The `clusterIP` of a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";

/// Validates a Service.
pub fn validate_service(svc: &v1::Service) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Service, svc.metadata.as_ref());
    let Some(spec) = &svc.spec else {
        errs.push("spec", "required");
        return errs.0;
    };
    errs.one_of("spec.type", &spec.r#type, &SERVICE_TYPES);
    errs.one_of(
        "spec.sessionAffinity",
        &spec.session_affinity,
        &SESSION_AFFINITIES,
    );
    errs.one_of(
        "spec.externalTrafficPolicy",
        &spec.external_traffic_policy,
        &TRAFFIC_POLICIES,
    );
    if let Some(p) = &spec.internal_traffic_policy {
        errs.one_of("spec.internalTrafficPolicy", p, &TRAFFIC_POLICIES);
    }
    let external_name = spec.r#type == "ExternalName";
    let headless = spec.cluster_ip == CLUSTER_IP_NONE;
    if external_name {
        if spec.external_name.is_empty() {
            errs.push("spec.externalName", "required for type ExternalName");
        } else {
            errs.check(
                "spec.externalName",
                names::dns1123_subdomain(spec.external_name.trim_end_matches('.')),
            );
        }
        if !spec.cluster_ip.is_empty() {
            errs.push("spec.clusterIP", "must be empty for type ExternalName");
        }
    } else {
        if !spec.external_name.is_empty() {
            errs.push("spec.externalName", "only allowed for type ExternalName");
        }
        if spec.ports.is_empty() && !headless {
            errs.push(
                "spec.ports",
                "required: a Service needs at least one port unless it is headless",
            );
        }
        if !spec.cluster_ip.is_empty() && !headless {
            ip(&mut errs, "spec.clusterIP", &spec.cluster_ip);
        }
    }
    if headless && matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer") {
        errs.push(
            "spec.clusterIP",
            format!("may not be None for type {}", spec.r#type),
        );
    }
    for (i, cip) in spec.cluster_ips.iter().enumerate() {
        if cip != CLUSTER_IP_NONE {
            ip(&mut errs, &format!("spec.clusterIPs[{i}]"), cip);
        }
    }
    if let (Some(first), false) = (spec.cluster_ips.first(), spec.cluster_ip.is_empty()) {
        if *first != spec.cluster_ip {
            errs.push("spec.clusterIPs[0]", "must equal spec.clusterIP");
        }
    }
    for (i, e) in spec.external_ips.iter().enumerate() {
        ip(&mut errs, &format!("spec.externalIPs[{i}]"), e);
    }
    errs.labels("spec.selector", &spec.selector);
    let node_ports_allowed = matches!(spec.r#type.as_str(), "NodePort" | "LoadBalancer");
    let mut names_seen = HashSet::new();
    let mut ports_seen = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        if p.name.is_empty() {
            if spec.ports.len() > 1 {
                errs.push(
                    format!("{path}.name"),
                    "required when a Service has several ports",
                );
            }
        } else {
            errs.check(format!("{path}.name"), names::dns1123_label(&p.name));
            if !names_seen.insert(p.name.as_str()) {
                errs.push(
                    format!("{path}.name"),
                    format!("duplicate port name {:?}", p.name),
                );
            }
        }
        port_number(&mut errs, &format!("{path}.port"), p.port);
        errs.one_of(format!("{path}.protocol"), &p.protocol, &PROTOCOLS);
        let protocol = if p.protocol.is_empty() {
            "TCP"
        } else {
            &p.protocol
        };
        if !ports_seen.insert((p.port, protocol)) {
            errs.push(
                format!("{path}.port"),
                format!("duplicate port {}/{protocol}", p.port),
            );
        }
        if p.target_port.is_some() {
            target_port(
                &mut errs,
                &format!("{path}.targetPort"),
                p.target_port.as_ref(),
            );
        }
        if p.node_port != 0 {
            if !node_ports_allowed {
                errs.push(
                    format!("{path}.nodePort"),
                    "may only be set for type NodePort or LoadBalancer",
                );
            } else if !NODE_PORT_RANGE.contains(&p.node_port) {
                errs.push(
                    format!("{path}.nodePort"),
                    format!(
                        "{} is outside the node port range {}-{}",
                        p.node_port,
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                );
            }
        }
    }
    if let Some(t) = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
    {
        if !(1..=86400).contains(&t) {
            errs.push(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "must be between 1 and 86400",
            );
        }
    }
    errs.0
}

/// Validates Endpoints.
pub fn validate_endpoints(ep: &v1::Endpoints) -> Vec<FieldError> {
    let mut errs = Errors::default();
    validate_meta(&mut errs, Kind::Endpoints, ep.metadata.as_ref());
    for (i, subset) in ep.subsets.iter().enumerate() {
        let path = format!("subsets[{i}]");
        for (field, list) in [
            ("addresses", &subset.addresses),
            ("notReadyAddresses", &subset.not_ready_addresses),
        ] {
            for (j, a) in list.iter().enumerate() {
                ip(&mut errs, &format!("{path}.{field}[{j}].ip"), &a.ip);
                if !a.hostname.is_empty() {
                    errs.check(
                        format!("{path}.{field}[{j}].hostname"),
                        names::dns1123_label(&a.hostname),
                    );
                }
            }
        }
        for (j, p) in subset.ports.iter().enumerate() {
            port_number(&mut errs, &format!("{path}.ports[{j}].port"), p.port);
            errs.one_of(
                format!("{path}.ports[{j}].protocol"),
                &p.protocol,
                &PROTOCOLS,
            );
            if !p.name.is_empty() {
                errs.check(
                    format!("{path}.ports[{j}].name"),
                    names::dns1123_label(&p.name),
                );
            }
        }
    }
    errs.0
}

fn ip(errs: &mut Errors, path: &str, value: &str) {
    if value.parse::<IpAddr>().is_err() {
        errs.push(path, format!("{value:?} is not a valid IP address"));
    }
}
