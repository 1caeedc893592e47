//! Pure planning: from Services and endpoints to the list of Service ports to program, each
//! with its ready endpoints and the stable names of its nftables chains and sets. A port's
//! chain name is its identity across syncs (what [`super::diff`] compares by). It owns
//! filtering (headless Services, unready endpoints), conflict resolution and naming; it must
//! not produce nftables syntax (that is [`super::rules`]) or touch the kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use super::types::{Endpoint, Protocol, ServiceSpec, NODE_PORT_MAX, NODE_PORT_MIN};

/// How many shard tables the per-Service chains and maps are spread over. The kernel
/// revalidates every chain of each table a transaction touches, so a change costs about a
/// `1/SHARDS` share of the Services; a new connection pays one map lookup per shard.
pub const SHARDS: usize = 16;

/// Everything one sync programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Service ports with a cluster IP, in (namespace, name, port order) order.
    pub ports: Vec<PlannedPort>,
    /// What was left out, and why.
    pub skipped: Vec<Skipped>,
}

/// One Service port to program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPort {
    /// `namespace/name:port-name`, for comments and logs.
    pub label: String,
    /// The cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// The protocol.
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: u16,
    /// The NodePort, if any (already checked for range and conflicts).
    pub node_port: Option<u16>,
    /// The chain that picks an endpoint and DNATs to it (`svc-<hash>`).
    pub chain: String,
    /// The chain NodePort traffic enters, marking it for masquerade (`ext-<hash>`).
    pub external_chain: String,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// The shard table (`0..SHARDS`) holding the chains and lookup maps of every port of this
    /// Service: a stable hash of its namespace and name.
    pub shard: usize,
    /// Ready endpoints, sorted and without duplicates.
    pub endpoints: Vec<PlannedEndpoint>,
}

/// One ready endpoint of a planned Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEndpoint {
    /// The pod address.
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// The dynamic set of client addresses stuck to it (`aff-<hash>`), with affinity only.
    /// Its name includes the timeout, so a changed timeout makes a new set.
    pub affinity_set: Option<String>,
}

/// A Service port or NodePort the plan left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `namespace/name:port-name`.
    pub label: String,
    /// Why it was left out.
    pub reason: String,
}

/// Plans rules for `services`. Pure and deterministic: the input order does not matter.
/// Headless Services and unready endpoints are ignored; a port 0, a NodePort outside
/// 30000–32767, or a (cluster IP, protocol, port) or NodePort already used by a Service that
/// sorts earlier is left out and reported in [`Plan::skipped`].
pub fn plan(services: &[(ServiceSpec, Vec<Endpoint>)]) -> Plan {
    plan_with_owners(services).0
}

/// [`plan`], and for every planned port and every skipped entry the index in `services` of
/// the Service it belongs to.
pub(crate) fn plan_with_owners(
    services: &[(ServiceSpec, Vec<Endpoint>)],
) -> (Plan, Vec<usize>, Vec<usize>) {
    let mut sorted: Vec<(usize, &(ServiceSpec, Vec<Endpoint>))> =
        services.iter().enumerate().collect();
    sorted
        .sort_by(|(_, (a, _)), (_, (b, _))| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let mut out = Plan::default();
    let (mut port_owners, mut skipped_owners) = (Vec::new(), Vec::new());
    let mut frontends = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (owner, (service, endpoints)) in sorted {
        let Some(cluster_ip) = service.cluster_ip else {
            continue;
        };
        let affinity_timeout = service.session_affinity_timeout.filter(|t| *t > 0);
        let shard = shard_of(&service.namespace, &service.name);
        for port in &service.ports {
            let label = format!("{}/{}:{}", service.namespace, service.name, port.name);
            let skip = |reason: String| Skipped {
                label: label.clone(),
                reason,
            };
            if port.port == 0 {
                out.skipped.push(skip("port 0".to_owned()));
                continue;
            }
            if !frontends.insert((cluster_ip, port.protocol, port.port)) {
                out.skipped.push(skip(format!(
                    "{cluster_ip}:{}/{} is already used by another Service",
                    port.port, port.protocol
                )));
                continue;
            }
            let node_port = match port.node_port {
                Some(np) if !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&np) => {
                    out.skipped.push(skip(format!(
                        "NodePort {np} outside {NODE_PORT_MIN}-{NODE_PORT_MAX}"
                    )));
                    None
                }
                Some(np) if !node_ports.insert((port.protocol, np)) => {
                    out.skipped.push(skip(format!(
                        "NodePort {np}/{} is already used by another Service",
                        port.protocol
                    )));
                    None
                }
                other => other,
            };
            let identity = format!(
                "{}\0{}\0{}\0{}",
                service.namespace, service.name, port.name, port.protocol
            );
            let ready: BTreeSet<(Ipv4Addr, u16)> = endpoints
                .iter()
                .filter(|ep| ep.ready && ep.port != 0 && ep.port_name == port.name)
                .map(|ep| (ep.ip, ep.port))
                .collect();
            let endpoints = ready
                .into_iter()
                .map(|(ip, target)| PlannedEndpoint {
                    ip,
                    port: target,
                    affinity_set: affinity_timeout
                        .map(|t| name("aff", &format!("{identity}\0{ip}:{target}\0{t}"))),
                })
                .collect();
            let hash = hash(&identity);
            out.ports.push(PlannedPort {
                label,
                cluster_ip,
                protocol: port.protocol,
                port: port.port,
                node_port,
                chain: format!("svc-{hash}"),
                external_chain: format!("ext-{hash}"),
                affinity_timeout,
                shard,
                endpoints,
            });
            port_owners.push(owner);
        }
        skipped_owners.resize(out.skipped.len(), owner);
    }
    (out, port_owners, skipped_owners)
}

/// The shard of Service `namespace/name`: stable across syncs, restarts and versions.
pub fn shard_of(namespace: &str, name: &str) -> usize {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hasher.update(name.as_bytes());
    let digest = hasher.finalize();
    usize::from(u16::from_be_bytes([digest[0], digest[1]])) % SHARDS
}

/// `<prefix>-<16 hex digits of sha256(identity)>`: short, valid in nftables syntax whatever
/// the identity holds, and stable across syncs and restarts.
fn name(prefix: &str, identity: &str) -> String {
    format!("{prefix}-{}", hash(identity))
}

/// The first 16 hex digits of sha256(identity).
fn hash(identity: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(identity.as_bytes());
    let mut out = String::with_capacity(16);
    for byte in &digest[..8] {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::types::ServicePort;

    fn svc(ns: &str, name: &str, ip: Option<[u8; 4]>, ports: Vec<ServicePort>) -> ServiceSpec {
        ServiceSpec {
            namespace: ns.into(),
            name: name.into(),
            cluster_ip: ip.map(Ipv4Addr::from),
            ports,
            session_affinity_timeout: None,
        }
    }

    fn port(name: &str, port: u16, node_port: Option<u16>) -> ServicePort {
        ServicePort {
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
            node_port,
        }
    }

    fn ep(ip: [u8; 4], port: u16, port_name: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port,
            port_name: port_name.into(),
            ready,
        }
    }

    #[test]
    fn headless_services_and_unready_or_other_port_endpoints_get_nothing() {
        let services = vec![
            (svc("a", "headless", None, vec![port("", 80, None)]), vec![]),
            (
                svc(
                    "a",
                    "web",
                    Some([10, 96, 0, 1]),
                    vec![port("http", 80, None)],
                ),
                vec![
                    ep([10, 244, 0, 3], 8080, "http", true),
                    ep([10, 244, 0, 2], 8080, "http", true),
                    ep([10, 244, 0, 2], 8080, "http", true),
                    ep([10, 244, 0, 4], 8080, "http", false),
                    ep([10, 244, 0, 5], 9090, "metrics", true),
                ],
            ),
        ];
        let plan = plan(&services);
        assert_eq!(plan.ports.len(), 1);
        let web = &plan.ports[0];
        assert_eq!(web.label, "a/web:http");
        let ips: Vec<_> = web.endpoints.iter().map(|e| e.ip.octets()[3]).collect();
        assert_eq!(ips, vec![2, 3], "sorted, deduplicated, ready only");
        assert!(web.endpoints.iter().all(|e| e.affinity_set.is_none()));
        assert!(plan.skipped.is_empty());
    }

    #[test]
    fn names_are_stable_distinct_and_change_with_the_affinity_timeout() {
        let mut spec = svc(
            "a",
            "web",
            Some([10, 96, 0, 1]),
            vec![port("http", 80, None)],
        );
        spec.session_affinity_timeout = Some(60);
        let eps = vec![
            ep([10, 244, 0, 2], 8080, "http", true),
            ep([10, 244, 0, 3], 8080, "http", true),
        ];
        let first = plan(&[(spec.clone(), eps.clone())]);
        assert_eq!(first, plan(&[(spec.clone(), eps.clone())]));
        let p = &first.ports[0];
        assert!(
            p.chain.starts_with("svc-") && p.chain.len() == 20,
            "{}",
            p.chain
        );
        assert_ne!(p.endpoints[0].affinity_set, p.endpoints[1].affinity_set);
        let aff = p.endpoints[0].affinity_set.clone().unwrap();
        assert!(aff.starts_with("aff-"));

        spec.session_affinity_timeout = Some(120);
        let second = plan(&[(spec, eps)]);
        assert_eq!(second.ports[0].chain, p.chain);
        assert_ne!(second.ports[0].endpoints[0].affinity_set, Some(aff));
    }

    #[test]
    fn conflicts_and_bad_node_ports_are_skipped_and_the_earlier_service_wins() {
        let services = vec![
            (
                svc(
                    "b",
                    "late",
                    Some([10, 96, 0, 1]),
                    vec![port("", 80, Some(30001))],
                ),
                vec![],
            ),
            (
                svc(
                    "a",
                    "early",
                    Some([10, 96, 0, 1]),
                    vec![port("", 80, Some(30001)), port("x", 0, None)],
                ),
                vec![],
            ),
            (
                svc(
                    "c",
                    "np",
                    Some([10, 96, 0, 2]),
                    vec![port("low", 81, Some(80)), port("dup", 82, Some(30001))],
                ),
                vec![],
            ),
        ];
        let plan = plan(&services);
        let labels: Vec<_> = plan.ports.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, vec!["a/early:", "c/np:low", "c/np:dup"]);
        assert_eq!(plan.ports[0].node_port, Some(30001));
        assert_eq!(plan.ports[1].node_port, None);
        assert_eq!(plan.ports[2].node_port, None);
        let skipped: Vec<_> = plan.skipped.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            skipped,
            vec!["a/early:x", "b/late:", "c/np:low", "c/np:dup"]
        );
    }
}
