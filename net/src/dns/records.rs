//! The cluster DNS record set: `<svc>.<ns>.svc.<domain>` A records (ClusterIP, or one per
//! ready endpoint for headless Services), `<hostname>.<svc>.<ns>.svc.<domain>` A records and
//! SRV records for named ports. Pure data and lookups; it must not do I/O or forward queries
//! (names outside the cluster domain are reported as [`Answer::Forward`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::services::Protocol;

/// The default cluster domain, as in Kubernetes.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors while building a record set; all are input errors, fix the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster domain is empty or not a valid DNS name.
    #[error("invalid cluster domain {domain:?}")]
    InvalidDomain {
        /// The rejected domain.
        domain: String,
    },
}

/// A named port of a Service, for SRV records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsPort {
    /// Port name; unnamed ports get no SRV record.
    pub name: String,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Service port (ClusterIP) or target port (headless).
    pub port: u16,
}

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsEndpoint {
    /// Endpoint IP.
    pub ip: Ipv4Addr,
    /// Optional hostname (`<hostname>.<svc>.<ns>.svc.<domain>`).
    pub hostname: Option<String>,
}

/// A Service as DNS needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsService {
    /// Service name.
    pub name: String,
    /// Service namespace.
    pub namespace: String,
    /// ClusterIP, `None` for headless Services.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Ports (named ones give SRV records).
    pub ports: Vec<DnsPort>,
    /// Ready endpoints only.
    pub endpoints: Vec<DnsEndpoint>,
}

/// One SRV record (priority 0, weight 100 like CoreDNS when single-target; kept simple).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    /// Target port.
    pub port: u16,
    /// Fully qualified target name (no trailing dot).
    pub target: String,
}

/// What the record set says about a query name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The name exists and has these A records (may be empty: NODATA).
    A(Vec<Ipv4Addr>),
    /// The name exists and has these SRV records.
    Srv(Vec<SrvRecord>),
    /// The name exists, but not with the asked type (NODATA).
    NoData,
    /// The name is inside the cluster domain but does not exist.
    NxDomain,
    /// The name is outside the cluster domain: forward it upstream.
    Forward,
}

/// The query types the record set answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryType {
    /// IPv4 address.
    A,
    /// Service location.
    Srv,
    /// Anything else (AAAA, TXT, ...): NODATA for existing names.
    Other,
}

/// An immutable set of cluster DNS records, rebuilt by the agent when Services change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordSet {
    domain: String,
    a: BTreeMap<String, Vec<Ipv4Addr>>,
    srv: BTreeMap<String, Vec<SrvRecord>>,
    /// Every name that exists: record owners and their ancestors up to the domain (empty
    /// non-terminals such as `svc.cluster.local` answer NODATA, not NXDOMAIN).
    names: BTreeSet<String>,
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl RecordSet {
    /// Builds the records of `services` under `domain` (e.g. `cluster.local`).
    pub fn build(domain: &str, services: &[DnsService]) -> Result<RecordSet> {
        let domain = normalize(domain);
        if domain.is_empty() || domain.split('.').any(str::is_empty) {
            return Err(Error::InvalidDomain { domain });
        }
        let mut set = RecordSet {
            domain,
            ..Default::default()
        };
        for svc in services {
            let base = normalize(&format!(
                "{}.{}.svc.{}",
                svc.name, svc.namespace, set.domain
            ));
            let ips: Vec<Ipv4Addr> = match svc.cluster_ip {
                Some(ip) => vec![ip],
                None => svc.endpoints.iter().map(|e| e.ip).collect(),
            };
            set.a.entry(base.clone()).or_default().extend(ips);
            for ep in &svc.endpoints {
                if let Some(h) = ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                    set.a
                        .entry(normalize(&format!("{h}.{base}")))
                        .or_default()
                        .push(ep.ip);
                }
            }
            for p in svc.ports.iter().filter(|p| !p.name.is_empty()) {
                let name = normalize(&format!("_{}._{}.{base}", p.name, p.protocol.as_str()));
                let targets: Vec<SrvRecord> = if svc.cluster_ip.is_some() {
                    vec![SrvRecord {
                        port: p.port,
                        target: base.clone(),
                    }]
                } else {
                    svc.endpoints
                        .iter()
                        .map(|e| SrvRecord {
                            port: p.port,
                            target: match e.hostname.as_deref().filter(|h| !h.is_empty()) {
                                Some(h) => normalize(&format!("{h}.{base}")),
                                None => {
                                    let o = e.ip.octets();
                                    format!("{}-{}-{}-{}.{base}", o[0], o[1], o[2], o[3])
                                }
                            },
                        })
                        .collect()
                };
                set.srv.entry(name).or_default().extend(targets);
            }
        }
        // Headless endpoints without a hostname are SRV targets by their dashed IP.
        let extra: Vec<(String, Ipv4Addr)> = services
            .iter()
            .filter(|s| s.cluster_ip.is_none())
            .flat_map(|s| {
                let base = normalize(&format!("{}.{}.svc.{}", s.name, s.namespace, set.domain));
                s.endpoints
                    .iter()
                    .filter(|e| e.hostname.as_deref().is_none_or(str::is_empty))
                    .map(move |e| {
                        let o = e.ip.octets();
                        (format!("{}-{}-{}-{}.{base}", o[0], o[1], o[2], o[3]), e.ip)
                    })
            })
            .collect();
        for (name, ip) in extra {
            set.a.entry(name).or_default().push(ip);
        }
        let mut names = BTreeSet::from([set.domain.clone()]);
        for owner in set.a.keys().chain(set.srv.keys()) {
            let mut name = owner.as_str();
            while name.len() > set.domain.len() {
                names.insert(name.to_string());
                name = name.split_once('.').map_or("", |(_, parent)| parent);
            }
        }
        set.names = names;
        Ok(set)
    }

    /// The cluster domain of this set.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// An empty set for `domain`: every name inside it is NXDOMAIN (the apex is NODATA).
    pub fn empty(domain: &str) -> Result<RecordSet> {
        RecordSet::build(domain, &[])
    }

    /// The A records of `name` (an SRV target, say), empty when it has none.
    pub fn addresses(&self, name: &str) -> &[Ipv4Addr] {
        self.a.get(&normalize(name)).map_or(&[], Vec::as_slice)
    }

    /// Answers a query for `name` (case-insensitive, trailing dot optional).
    pub fn lookup(&self, name: &str, qtype: QueryType) -> Answer {
        let name = normalize(name);
        let inside = name == self.domain || name.ends_with(&format!(".{}", self.domain));
        if !inside {
            return Answer::Forward;
        }
        match (qtype, self.a.get(&name), self.srv.get(&name)) {
            (QueryType::A, Some(ips), _) => Answer::A(ips.clone()),
            (QueryType::Srv, _, Some(srv)) => Answer::Srv(srv.clone()),
            _ if self.names.contains(&name) => Answer::NoData,
            _ => Answer::NxDomain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn set() -> RecordSet {
        let web = DnsService {
            name: "web".into(),
            namespace: "default".into(),
            cluster_ip: Some(ip("10.96.0.10")),
            ports: vec![
                DnsPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                },
                DnsPort {
                    name: String::new(),
                    protocol: Protocol::Tcp,
                    port: 81,
                },
            ],
            endpoints: vec![DnsEndpoint {
                ip: ip("10.244.0.2"),
                hostname: None,
            }],
        };
        let db = DnsService {
            name: "db".into(),
            namespace: "prod".into(),
            cluster_ip: None,
            ports: vec![DnsPort {
                name: "pg".into(),
                protocol: Protocol::Tcp,
                port: 5432,
            }],
            endpoints: vec![
                DnsEndpoint {
                    ip: ip("10.244.1.5"),
                    hostname: Some("db-0".into()),
                },
                DnsEndpoint {
                    ip: ip("10.244.1.6"),
                    hostname: None,
                },
            ],
        };
        RecordSet::build("cluster.local", &[web, db]).unwrap()
    }

    #[test]
    fn a_cluster_ip_service_resolves_to_its_cluster_ip() {
        assert_eq!(
            set().lookup("web.default.svc.cluster.local.", QueryType::A),
            Answer::A(vec![ip("10.96.0.10")])
        );
        assert_eq!(
            set().lookup("WEB.Default.svc.cluster.local", QueryType::A),
            Answer::A(vec![ip("10.96.0.10")]),
            "lookups are case-insensitive"
        );
    }

    #[test]
    fn a_headless_service_resolves_to_each_ready_endpoint() {
        assert_eq!(
            set().lookup("db.prod.svc.cluster.local", QueryType::A),
            Answer::A(vec![ip("10.244.1.5"), ip("10.244.1.6")])
        );
        assert_eq!(
            set().lookup("db-0.db.prod.svc.cluster.local", QueryType::A),
            Answer::A(vec![ip("10.244.1.5")])
        );
    }

    #[test]
    fn named_ports_get_srv_records_targeting_service_or_endpoint_hostnames() {
        assert_eq!(
            set().lookup("_http._tcp.web.default.svc.cluster.local", QueryType::Srv),
            Answer::Srv(vec![SrvRecord {
                port: 80,
                target: "web.default.svc.cluster.local".into()
            }])
        );
        assert_eq!(
            set().lookup("_pg._tcp.db.prod.svc.cluster.local", QueryType::Srv),
            Answer::Srv(vec![
                SrvRecord {
                    port: 5432,
                    target: "db-0.db.prod.svc.cluster.local".into()
                },
                SrvRecord {
                    port: 5432,
                    target: "10-244-1-6.db.prod.svc.cluster.local".into()
                },
            ])
        );
    }

    #[test]
    fn unknown_names_inside_the_domain_are_nxdomain_and_outside_are_forwarded() {
        let s = set();
        assert_eq!(
            s.lookup("nope.default.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(
            s.lookup("web.default.svc.cluster.local", QueryType::Other),
            Answer::NoData
        );
        assert_eq!(s.lookup("svc.cluster.local", QueryType::A), Answer::NoData);
        assert_eq!(
            s.lookup("prod.svc.cluster.local", QueryType::A),
            Answer::NoData
        );
        assert_eq!(
            s.lookup("_tcp.db.prod.svc.cluster.local", QueryType::Srv),
            Answer::NoData,
            "an empty non-terminal under a SRV owner exists"
        );
        assert_eq!(s.lookup("cluster.local", QueryType::A), Answer::NoData);
        assert_eq!(
            s.lookup("other.svc.cluster.local", QueryType::A),
            Answer::NxDomain
        );
        assert_eq!(s.lookup("example.com", QueryType::A), Answer::Forward);
        assert_eq!(s.lookup("notcluster.local", QueryType::A), Answer::Forward);
    }

    #[test]
    fn an_empty_domain_is_rejected() {
        assert!(RecordSet::build("", &[]).is_err());
        assert!(RecordSet::build("a..b", &[]).is_err());
    }
}
