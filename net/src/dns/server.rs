//! The cluster DNS server: hickory-server on UDP and TCP, answering names inside the cluster
//! domain from a shared [`RecordSet`] that the agent replaces whole when Services or Endpoints
//! change, and forwarding every other name to upstream servers through hickory's forwarder
//! (a caching hickory-resolver).
//!
//! One server per node (like NodeLocal DNSCache, not a cluster-wide CoreDNS Service): the node
//! agent already holds every Service and Endpoints for its proxy, so it can build the records
//! with no extra watch, answers stay on the node (no ClusterIP hop, no conntrack entry per
//! query), and a node's DNS fails with the node rather than for the whole cluster. It listens
//! on the node bridge's gateway address, port 53, in the node's network namespace; pods'
//! `resolv.conf` names their own gateway. Several nodes on one host each have their own
//! bridge, so their servers do not collide.
//!
//! Sockets are bound, and upstream sockets opened, in the network namespace of the thread that
//! runs the tokio runtime the server is spawned on. This module owns the wire protocol and the
//! record swap; it must not read API objects or decide which names exist (that is
//! [`super::records`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::resolver::config::{NameServerConfig, ResolverOpts};
use hickory_server::server::{Request, RequestInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{
    AuthLookup, AxfrPolicy, Catalog, LookupControlFlow, LookupError, LookupOptions, LookupRecords,
    ZoneHandler, ZoneType,
};
use hickory_server::Server;

use super::records::{Answer, QueryType, RecordSet};

/// TTL of cluster records, as CoreDNS's kubernetes plugin has it: short, Endpoints change.
pub const CLUSTER_TTL: u32 = 5;
/// How long an idle TCP client may keep its connection.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Response buffer per TCP connection (responses queued before the writer blocks).
const TCP_RESPONSE_BUFFER: usize = 16;

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address cannot be bound (in use, not on this host): fix the address or
    /// stop the other server.
    #[error("cannot listen for DNS on {addr} ({protocol}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cluster domain is not a DNS name: fix the input.
    #[error("invalid cluster domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The rejected domain.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A replacement record set is for another domain than the server's: build it for the
    /// server's domain.
    #[error("record set for domain {got:?} given to the DNS server of {expected:?}")]
    DomainMismatch {
        /// The server's domain.
        expected: String,
        /// The set's domain.
        got: String,
    },
    /// The upstream forwarder cannot be configured: fix the upstream list.
    #[error("cannot configure DNS forwarding: {reason}")]
    Forwarder {
        /// Why.
        reason: String,
    },
    /// `resolv.conf` has no usable nameserver: fix the file or pass upstreams explicitly.
    #[error("{path}: {reason}")]
    ResolvConf {
        /// The file.
        path: String,
        /// Why it gave no upstreams.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// How one node's DNS server is set up.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to listen, UDP and TCP (the node bridge's gateway, port 53).
    pub listen: SocketAddr,
    /// Servers that answer names outside the cluster domain, tried in order; empty: such
    /// names are refused.
    pub upstreams: Vec<SocketAddr>,
}

/// The record set the server answers from, shared with whoever rebuilds it.
#[derive(Clone, Debug)]
pub struct SharedRecords(Arc<ArcSwap<RecordSet>>);

impl SharedRecords {
    /// Shares `set`.
    pub fn new(set: RecordSet) -> SharedRecords {
        SharedRecords(Arc::new(ArcSwap::from_pointee(set)))
    }

    /// Replaces the whole set; queries in flight finish on the old one. The domain must not
    /// change (the server's zone is fixed when it starts).
    pub fn replace(&self, set: RecordSet) -> Result<()> {
        let current = self.0.load();
        if current.domain() != set.domain() {
            return Err(Error::DomainMismatch {
                expected: current.domain().to_string(),
                got: set.domain().to_string(),
            });
        }
        self.0.store(Arc::new(set));
        Ok(())
    }

    /// The current set.
    pub fn load(&self) -> Arc<RecordSet> {
        self.0.load_full()
    }
}

/// A running DNS server; it stops when dropped (or through [`DnsServer::shutdown`]).
#[derive(Debug)]
pub struct DnsServer {
    records: SharedRecords,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` and serves `records` on the current tokio runtime
    /// (port 0 binds a free port, the same number for TCP as for UDP is not promised).
    pub async fn start(config: &DnsConfig, records: SharedRecords) -> Result<DnsServer> {
        let catalog = catalog(&records, &config.upstreams)?;
        let udp = tokio::net::UdpSocket::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                protocol: "udp",
                source,
            })?;
        let tcp = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                protocol: "tcp",
                source,
            })?;
        let local = |r: std::io::Result<SocketAddr>, protocol| {
            r.map_err(|source| Error::Bind {
                addr: config.listen,
                protocol,
                source,
            })
        };
        let udp_addr = local(udp.local_addr(), "udp")?;
        let tcp_addr = local(tcp.local_addr(), "tcp")?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                r = server.block_until_done() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "DNS server stopped");
                    }
                }
                // Sent or dropped: either way the owner is done with the server.
                _ = stopped => {
                    if let Err(e) = server.shutdown_gracefully().await {
                        tracing::warn!(error = %e, "DNS server shut down with an error");
                    }
                }
            }
        });
        tracing::info!(udp = %udp_addr, tcp = %tcp_addr, upstreams = ?config.upstreams, domain = %records.load().domain(), "DNS server listening");
        Ok(DnsServer {
            records,
            udp_addr,
            tcp_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The record set this server answers from.
    pub fn records(&self) -> &SharedRecords {
        &self.records
    }

    /// Stops accepting queries and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The catalog: the cluster zone, and the root forwarded upstream when there are upstreams.
fn catalog(records: &SharedRecords, upstreams: &[SocketAddr]) -> Result<Catalog> {
    let zone = ClusterZone::new(records.clone())?;
    let mut catalog = Catalog::new();
    catalog.upsert(zone.origin.clone(), vec![Arc::new(zone)]);
    if !upstreams.is_empty() {
        let config = ForwardConfig {
            name_servers: upstreams.iter().map(|a| name_server(*a)).collect(),
            options: Some(ResolverOpts::default()),
        };
        let forwarder = ForwardZoneHandler::builder_tokio(config)
            .build()
            .map_err(|reason| Error::Forwarder { reason })?;
        catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(forwarder)]);
    }
    Ok(catalog)
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
    for c in &mut ns.connections {
        c.port = addr.port();
    }
    ns
}

/// The nameservers of a `resolv.conf` (port 53), in file order, parsed by hickory-resolver.
pub fn upstreams_from_resolv_conf(path: &std::path::Path) -> Result<Vec<SocketAddr>> {
    let data = std::fs::read(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })?;
    let (config, _) =
        hickory_server::resolver::system_conf::parse_resolv_conf(data).map_err(|e| {
            Error::ResolvConf {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
    Ok(config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect())
}

/// The cluster domain as a hickory zone answering from the shared record set.
struct ClusterZone {
    origin: LowerName,
    records: SharedRecords,
    soa: Record,
}

impl ClusterZone {
    fn new(records: SharedRecords) -> Result<ClusterZone> {
        let domain = records.load().domain().to_string();
        let fqdn = |s: &str| {
            Name::from_ascii(format!("{s}.")).map_err(|e| Error::InvalidDomain {
                domain: domain.clone(),
                reason: e.to_string(),
            })
        };
        let origin = fqdn(&domain)?;
        // CoreDNS's SOA for the cluster zone; the minimum is the negative-caching TTL.
        let soa = SOA::new(
            fqdn(&format!("ns.dns.{domain}"))?,
            fqdn(&format!("hostmaster.{domain}"))?,
            1,
            7200,
            1800,
            86400,
            CLUSTER_TTL,
        );
        Ok(ClusterZone {
            origin: LowerName::from(&origin),
            soa: Record::from_rdata(origin, CLUSTER_TTL, RData::SOA(soa)),
            records,
        })
    }

    fn answer(
        &self,
        name: &LowerName,
        rtype: RecordType,
    ) -> std::result::Result<AuthLookup, LookupError> {
        let set = self.records.load();
        let owner = Name::from(name);
        let text = name.to_string();
        if rtype == RecordType::SOA && *name == self.origin {
            return Ok(section(vec![self.soa.clone()], Vec::new()));
        }
        let qtype = match rtype {
            RecordType::A => QueryType::A,
            RecordType::SRV => QueryType::Srv,
            _ => QueryType::Other,
        };
        match set.lookup(&text, qtype) {
            Answer::A(ips) if !ips.is_empty() => Ok(section(
                ips.iter()
                    .map(|ip| Record::from_rdata(owner.clone(), CLUSTER_TTL, RData::A(A(*ip))))
                    .collect(),
                Vec::new(),
            )),
            Answer::Srv(targets) if !targets.is_empty() => {
                let mut answers = Vec::new();
                let mut extra = Vec::new();
                for t in &targets {
                    let Ok(target) = Name::from_ascii(format!("{}.", t.target)) else {
                        continue;
                    };
                    for ip in set.addresses(&t.target) {
                        extra.push(Record::from_rdata(
                            target.clone(),
                            CLUSTER_TTL,
                            RData::A(A(*ip)),
                        ));
                    }
                    let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        CLUSTER_TTL,
                        RData::SRV(SRV::new(0, weight, t.port, target)),
                    ));
                }
                Ok(section(answers, extra))
            }
            Answer::A(_) | Answer::Srv(_) | Answer::NoData => Err(LookupError::NameExists),
            Answer::NxDomain => Err(LookupError::from(ResponseCode::NXDomain)),
            // Cannot happen inside the zone; refuse rather than guess.
            Answer::Forward => Err(LookupError::from(ResponseCode::Refused)),
        }
    }
}

fn section(answers: Vec<Record>, additionals: Vec<Record>) -> AuthLookup {
    let additionals = (!additionals.is_empty()).then_some(LookupRecords::Section(additionals));
    AuthLookup::answers(LookupRecords::Section(answers), additionals)
}

#[async_trait::async_trait]
impl ZoneHandler for ClusterZone {
    fn zone_type(&self) -> ZoneType {
        ZoneType::Primary
    }

    fn axfr_policy(&self) -> AxfrPolicy {
        AxfrPolicy::Deny
    }

    fn origin(&self) -> &LowerName {
        &self.origin
    }

    async fn lookup(
        &self,
        name: &LowerName,
        rtype: RecordType,
        _request_info: Option<&RequestInfo<'_>>,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        LookupControlFlow::Break(self.answer(name, rtype))
    }

    async fn search(
        &self,
        request: &Request,
        lookup_options: LookupOptions,
    ) -> (
        LookupControlFlow<AuthLookup>,
        Option<hickory_server::proto::rr::TSigResponseContext>,
    ) {
        let flow = match request.request_info() {
            Ok(info) => {
                self.lookup(
                    info.query.name(),
                    info.query.query_type(),
                    Some(&info),
                    lookup_options,
                )
                .await
            }
            Err(e) => LookupControlFlow::Break(Err(e)),
        };
        (flow, None)
    }

    async fn nsec_records(
        &self,
        _name: &LowerName,
        _lookup_options: LookupOptions,
    ) -> LookupControlFlow<AuthLookup> {
        // The zone is not signed.
        LookupControlFlow::Break(Err(LookupError::from(ResponseCode::NotImp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{DnsEndpoint, DnsPort, DnsService};
    use crate::services::Protocol;

    fn zone() -> ClusterZone {
        let svc = DnsService {
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
                    ip: "10.244.1.5".parse().unwrap(),
                    hostname: Some("db-0".into()),
                },
                DnsEndpoint {
                    ip: "10.244.1.6".parse().unwrap(),
                    hostname: Some("db-1".into()),
                },
            ],
        };
        let set = RecordSet::build("cluster.local", &[svc]).unwrap();
        ClusterZone::new(SharedRecords::new(set)).unwrap()
    }

    fn name(s: &str) -> LowerName {
        LowerName::from(Name::from_ascii(s).unwrap())
    }

    #[test]
    fn srv_answers_carry_the_targets_addresses_as_additionals() {
        let mut answer = zone()
            .answer(
                &name("_pg._tcp.db.prod.svc.cluster.local."),
                RecordType::SRV,
            )
            .unwrap();
        let srv: Vec<String> = answer.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(
            srv,
            [
                "0 50 5432 db-0.db.prod.svc.cluster.local.",
                "0 50 5432 db-1.db.prod.svc.cluster.local."
            ]
        );
        let extra: Vec<String> = answer
            .take_additionals()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            extra,
            [
                "db-0.db.prod.svc.cluster.local. 10.244.1.5",
                "db-1.db.prod.svc.cluster.local. 10.244.1.6"
            ]
        );
    }

    #[test]
    fn missing_names_are_nxdomain_and_other_types_nodata() {
        let z = zone();
        let nx = z.answer(&name("web.prod.svc.cluster.local."), RecordType::A);
        assert!(matches!(nx, Err(e) if e.is_nx_domain()));
        let nodata = z.answer(&name("db.prod.svc.cluster.local."), RecordType::AAAA);
        assert!(matches!(nodata, Err(LookupError::NameExists)));
        let soa = z.answer(&name("cluster.local."), RecordType::SOA).unwrap();
        assert_eq!(soa.iter().count(), 1);
    }

    #[test]
    fn a_set_for_another_domain_is_not_swapped_in() {
        let shared = SharedRecords::new(RecordSet::empty("cluster.local").unwrap());
        let err = shared.replace(RecordSet::empty("other.local").unwrap());
        assert!(matches!(err, Err(Error::DomainMismatch { .. })));
        assert!(shared
            .replace(RecordSet::empty("cluster.local").unwrap())
            .is_ok());
    }

    #[test]
    fn resolv_conf_nameservers_become_upstreams_and_junk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:2\n",
        )
        .unwrap();
        assert_eq!(
            upstreams_from_resolv_conf(&path).unwrap(),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        std::fs::write(&path, "search example.org\n").unwrap();
        let err = upstreams_from_resolv_conf(&path).unwrap_err().to_string();
        assert!(err.contains("resolv.conf"), "{err}");
    }
}
