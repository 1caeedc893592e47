//! The node's Service proxy input: Services and their Endpoints from the API turned into the
//! plain data `net::services` programs into nftables. Pure; the agent applies it.

use std::net::Ipv4Addr;

use api::v1;
use net::services::{Endpoint, Protocol, ServicePort, ServiceSpec};

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

fn protocol(p: &str) -> Option<Protocol> {
    match p {
        "" | "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// Services (with their endpoints) as the proxy needs them. Headless and ExternalName
/// Services, and SCTP ports, are left out.
pub fn proxy_input(
    services: &[v1::Service],
    endpoints: &[v1::Endpoints],
) -> Vec<(ServiceSpec, Vec<Endpoint>)> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(meta), Some(spec)) = (svc.metadata.as_ref(), svc.spec.as_ref()) else {
            continue;
        };
        let Ok(cluster_ip) = spec.cluster_ip.parse::<Ipv4Addr>() else {
            continue;
        };
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .filter_map(|p| {
                Some(ServicePort {
                    name: p.name.clone(),
                    protocol: protocol(&p.protocol)?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: u16::try_from(p.node_port).ok().filter(|n| *n != 0),
                })
            })
            .collect();
        let affinity = (spec.session_affinity == "ClientIP").then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let eps = endpoints.iter().find(|e| {
            e.metadata
                .as_ref()
                .is_some_and(|m| m.namespace == meta.namespace && m.name == meta.name)
        });
        let mut list = Vec::new();
        for subset in eps.map(|e| e.subsets.as_slice()).unwrap_or_default() {
            let ready = subset.addresses.iter().map(|a| (a, true));
            let not_ready = subset.not_ready_addresses.iter().map(|a| (a, false));
            for (addr, is_ready) in ready.chain(not_ready) {
                let Ok(ip) = addr.ip.parse::<Ipv4Addr>() else {
                    continue;
                };
                for p in &subset.ports {
                    let Ok(port) = u16::try_from(p.port) else {
                        continue;
                    };
                    list.push(Endpoint {
                        ip,
                        port,
                        port_name: p.name.clone(),
                        ready: is_ready,
                    });
                }
            }
        }
        out.push((
            ServiceSpec {
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                cluster_ip: Some(cluster_ip),
                ports,
                session_affinity_timeout: affinity,
            },
            list,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_endpoints_become_proxy_input() {
        let meta = |n: &str| {
            Some(v1::ObjectMeta {
                name: n.into(),
                namespace: "default".into(),
                ..Default::default()
            })
        };
        let svc = |n: &str, ip: &str| v1::Service {
            metadata: meta(n),
            spec: Some(v1::ServiceSpec {
                cluster_ip: ip.into(),
                ports: vec![v1::ServicePort {
                    name: "http".into(),
                    port: 80,
                    node_port: 30080,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let eps = v1::Endpoints {
            metadata: meta("web"),
            subsets: vec![v1::EndpointSubset {
                addresses: vec![v1::EndpointAddress {
                    ip: "10.244.0.2".into(),
                    ..Default::default()
                }],
                not_ready_addresses: vec![v1::EndpointAddress {
                    ip: "10.244.0.3".into(),
                    ..Default::default()
                }],
                ports: vec![v1::EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    ..Default::default()
                }],
            }],
        };
        let input = proxy_input(&[svc("web", "10.96.0.10"), svc("headless", "None")], &[eps]);
        assert_eq!(input.len(), 1, "the headless service has no rules");
        let (spec, list) = &input[0];
        assert_eq!(spec.cluster_ip, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(spec.ports[0].node_port, Some(30080));
        assert_eq!(
            list.iter()
                .map(|e| (e.ip.to_string(), e.port, e.ready))
                .collect::<Vec<_>>(),
            vec![
                ("10.244.0.2".to_string(), 8080, true),
                ("10.244.0.3".to_string(), 8080, false)
            ]
        );
    }
}
