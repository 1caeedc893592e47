//! The node's cluster DNS as the agent runs it: Services and Endpoints from the API turned
//! into the plain [`net::dns::DnsService`] data (pure, [`dns_services`]), and the node's
//! [`net::dns::DnsServer`] started on the bridge gateway once the pod network is up, its record
//! set replaced whole when the data changed ([`NodeDns`]). It must not decide DNS answers
//! (that is `net::dns::records`) or write pod files (that is [`super::pod_files`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use api::v1;
use net::dns::{DnsConfig, DnsEndpoint, DnsPort, DnsServer, DnsService, RecordSet, SharedRecords};
use net::services::Protocol;

use crate::error::Result;

/// Kubernetes' DNS port; pods' resolvers cannot be pointed at another.
pub const DNS_PORT: u16 = 53;

/// How a node serves cluster DNS and writes its pods' resolver files.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Where names outside the cluster domain go; empty: they are refused.
    pub upstreams: Vec<SocketAddr>,
    /// The node's own `resolv.conf`, given to pods with dnsPolicy `Default` (and host-network
    /// pods under `ClusterFirst`); its search domains follow the cluster ones.
    pub host_resolv_conf: PathBuf,
    /// The node's own hosts file, the base of host-network pods' `/etc/hosts`.
    pub host_hosts: PathBuf,
}

fn protocol(p: &str) -> Option<Protocol> {
    match p {
        "" | "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        _ => None,
    }
}

/// Services as DNS needs them: a ClusterIP Service answers with its ClusterIP and its named
/// Service ports; a headless one (`clusterIP: None`) with its ready addresses (those the
/// Endpoints controller lists under `addresses`; with `publishNotReadyAddresses` it puts all
/// there), their hostnames, and the named endpoint ports. ExternalName Services (a CNAME) and
/// SCTP ports are left out.
pub fn dns_services(services: &[v1::Service], endpoints: &[v1::Endpoints]) -> Vec<DnsService> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(meta), Some(spec)) = (svc.metadata.as_ref(), svc.spec.as_ref()) else {
            continue;
        };
        if spec.r#type == "ExternalName" {
            continue;
        }
        let cluster_ip = match spec.cluster_ip.as_str() {
            "None" => None,
            ip => match ip.parse::<Ipv4Addr>() {
                Ok(ip) => Some(ip),
                // Not allocated yet: no record until it is.
                Err(_) => continue,
            },
        };
        let eps = endpoints.iter().find(|e| {
            e.metadata
                .as_ref()
                .is_some_and(|m| m.namespace == meta.namespace && m.name == meta.name)
        });
        let subsets = eps.map(|e| e.subsets.as_slice()).unwrap_or_default();
        let (ports, endpoints) = match cluster_ip {
            Some(_) => {
                let ports = spec
                    .ports
                    .iter()
                    .filter_map(|p| {
                        Some(DnsPort {
                            name: p.name.clone(),
                            protocol: protocol(&p.protocol)?,
                            port: u16::try_from(p.port).ok()?,
                        })
                    })
                    .collect();
                (ports, Vec::new())
            }
            None => {
                let mut ports: Vec<DnsPort> = Vec::new();
                let mut list: Vec<DnsEndpoint> = Vec::new();
                for subset in subsets {
                    for p in &subset.ports {
                        let (Some(protocol), Ok(port)) =
                            (protocol(&p.protocol), u16::try_from(p.port))
                        else {
                            continue;
                        };
                        let port = DnsPort {
                            name: p.name.clone(),
                            protocol,
                            port,
                        };
                        if !ports.contains(&port) {
                            ports.push(port);
                        }
                    }
                    for a in &subset.addresses {
                        let Ok(ip) = a.ip.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        let ep = DnsEndpoint {
                            ip,
                            hostname: Some(a.hostname.clone()).filter(|h| !h.is_empty()),
                        };
                        if !list.contains(&ep) {
                            list.push(ep);
                        }
                    }
                }
                (ports, list)
            }
        };
        out.push(DnsService {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            cluster_ip,
            ports,
            endpoints,
        });
    }
    out
}

/// The node's DNS server and the record set it answers from.
#[derive(Debug)]
pub struct NodeDns {
    settings: DnsSettings,
    records: SharedRecords,
    server: Option<DnsServer>,
}

impl NodeDns {
    /// Not serving yet; the record set is empty until the first [`NodeDns::update`].
    pub fn new(settings: DnsSettings) -> Result<NodeDns> {
        let records = SharedRecords::new(RecordSet::empty(&settings.cluster_domain)?);
        Ok(NodeDns {
            settings,
            records,
            server: None,
        })
    }

    /// Starts the server on `gateway:53` unless it runs (an earlier failure, e.g. the old
    /// agent's socket not closed yet, is retried by the next call).
    pub async fn ensure_serving(&mut self, gateway: Ipv4Addr) -> Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let config = DnsConfig {
            listen: SocketAddr::from((gateway, DNS_PORT)),
            upstreams: self.settings.upstreams.clone(),
        };
        self.server = Some(DnsServer::start(&config, self.records.clone()).await?);
        Ok(())
    }

    /// Rebuilds the record set from the API's Services and Endpoints and swaps it in when it
    /// changed. Returns whether it did.
    pub fn update(&self, services: &[v1::Service], endpoints: &[v1::Endpoints]) -> Result<bool> {
        let set = RecordSet::build(
            &self.settings.cluster_domain,
            &dns_services(services, endpoints),
        )?;
        if *self.records.load() == set {
            return Ok(false);
        }
        self.records.replace(set)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(n: &str) -> Option<v1::ObjectMeta> {
        Some(v1::ObjectMeta {
            name: n.into(),
            namespace: "default".into(),
            ..Default::default()
        })
    }

    fn svc(n: &str, ip: &str) -> v1::Service {
        v1::Service {
            metadata: meta(n),
            spec: Some(v1::ServiceSpec {
                cluster_ip: ip.into(),
                ports: vec![v1::ServicePort {
                    name: "http".into(),
                    port: 80,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn addr(ip: &str, hostname: &str) -> v1::EndpointAddress {
        v1::EndpointAddress {
            ip: ip.into(),
            hostname: hostname.into(),
            ..Default::default()
        }
    }

    fn eps(n: &str) -> v1::Endpoints {
        v1::Endpoints {
            metadata: meta(n),
            subsets: vec![v1::EndpointSubset {
                addresses: vec![addr("10.244.0.2", "web-0"), addr("10.244.0.3", "")],
                not_ready_addresses: vec![addr("10.244.0.4", "web-2")],
                ports: vec![v1::EndpointPort {
                    name: "http".into(),
                    port: 8080,
                    protocol: "TCP".into(),
                    ..Default::default()
                }],
            }],
        }
    }

    #[test]
    fn a_cluster_ip_service_keeps_its_service_ports_and_no_endpoints() {
        let out = dns_services(&[svc("web", "10.96.0.10")], &[eps("web")]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cluster_ip, Some("10.96.0.10".parse().unwrap()));
        assert_eq!(out[0].ports[0].port, 80);
        assert!(out[0].endpoints.is_empty());
    }

    #[test]
    fn a_headless_service_lists_only_ready_addresses_with_their_hostnames() {
        let out = dns_services(&[svc("web", "None")], &[eps("web")]);
        let ep: Vec<(String, Option<String>)> = out[0]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.hostname.clone()))
            .collect();
        assert_eq!(
            ep,
            [
                ("10.244.0.2".to_string(), Some("web-0".to_string())),
                ("10.244.0.3".to_string(), None)
            ],
            "the not-ready 10.244.0.4 is left out"
        );
        assert_eq!(
            out[0].ports[0].port, 8080,
            "headless SRV uses the target port"
        );
    }

    #[test]
    fn unallocated_and_external_name_services_get_no_records() {
        let mut ext = svc("ext", "");
        ext.spec.as_mut().unwrap().r#type = "ExternalName".into();
        assert!(dns_services(&[svc("pending", ""), ext], &[]).is_empty());
    }

    #[test]
    fn the_record_set_is_swapped_only_when_it_changed() {
        let dns = NodeDns::new(DnsSettings {
            cluster_domain: "cluster.local".into(),
            upstreams: vec![],
            host_resolv_conf: "/etc/resolv.conf".into(),
            host_hosts: "/etc/hosts".into(),
        })
        .unwrap();
        let services = [svc("web", "10.96.0.10")];
        assert!(dns.update(&services, &[]).unwrap());
        assert!(!dns.update(&services, &[]).unwrap());
        assert_eq!(
            dns.records
                .load()
                .lookup("web.default.svc.cluster.local", net::dns::QueryType::A),
            net::dns::Answer::A(vec!["10.96.0.10".parse().unwrap()])
        );
    }
}
