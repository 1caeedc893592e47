//! The cluster DNS server for real, as root, only inside network namespaces this test creates:
//! a "node" namespace with a bridge (`10.244.0.1/24`) where the server listens on the gateway,
//! port 53, as the agent runs it, and a pod namespace attached to the bridge that asks it over
//! UDP and TCP. Names outside the cluster domain are forwarded to a second test server on
//! `127.0.0.2:53` inside the node namespace (never the machine's real upstream). A Drop guard
//! stops both servers and unmounts every namespace (destroying its links), also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use net::dns::{DnsConfig, DnsEndpoint, DnsPort, DnsServer, DnsService, RecordSet, SharedRecords};
use net::{attach_pod, run_in_netns, Ipv4Net, NetnsManager, NodeNetwork, PodIpam, Protocol};
use nix::mount::{umount2, MntFlags};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
const UPSTREAM: &str = "127.0.0.2:53";

/// A node namespace with a bridge, one pod, the cluster DNS server and the test upstream.
struct Lab {
    base: PathBuf,
    netns: NetnsManager,
    pod: PathBuf,
    records: SharedRecords,
    servers: Vec<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Lab {
    fn new() -> Lab {
        let id = rand::random::<u32>();
        let base = PathBuf::from(format!("/run/capstan-dnstest-{id:08x}"));
        let netns = NetnsManager::new(base.join("netns")).expect("netns root");
        let mut lab = Lab {
            netns,
            pod: PathBuf::new(),
            records: SharedRecords::new(cluster_records(&services())),
            servers: Vec::new(),
            base,
        };
        let node = lab.netns.create("node").expect("node netns");
        let subnet: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let bridge = format!("cbr{id:08x}");
        let b = bridge.clone();
        run_in_netns(&node, move || NodeNetwork::ensure(&b, subnet))
            .unwrap()
            .expect("bridge");
        let ipam = PodIpam::open(lab.base.join("ipam"), subnet).expect("ipam");
        lab.pod = lab.netns.create("pod").expect("pod netns");
        let ip = ipam.allocate("pod").expect("allocate");
        let p = lab.pod.clone();
        run_in_netns(&node, move || {
            attach_pod(&p, "pod", ip, subnet, &bridge, 1500)
        })
        .unwrap()
        .expect("attach");
        let upstream = SharedRecords::new(upstream_records());
        lab.serve(&node, UPSTREAM.parse().unwrap(), vec![], upstream);
        let records = lab.records.clone();
        lab.serve(
            &node,
            SocketAddr::from((GATEWAY, 53)),
            vec![UPSTREAM.parse().unwrap()],
            records,
        );
        lab
    }

    /// Runs a DNS server on its own current-thread runtime in namespace `ns` (so its sockets,
    /// and the forwarder's upstream sockets, live there) until the lab is dropped.
    fn serve(
        &mut self,
        ns: &Path,
        listen: SocketAddr,
        upstreams: Vec<SocketAddr>,
        records: SharedRecords,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.to_path_buf();
        let thread = std::thread::spawn(move || {
            run_in_netns(&ns, move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let cfg = DnsConfig { listen, upstreams };
                    match DnsServer::start(&cfg, records).await {
                        Ok(server) => {
                            ready_tx.send(Ok(())).unwrap();
                            let _ = stopped.await;
                            server.shutdown().await;
                        }
                        Err(e) => ready_tx.send(Err(e.to_string())).unwrap(),
                    }
                });
            })
            .expect("enter node netns");
        });
        let started = ready_rx.recv_timeout(Duration::from_secs(10));
        self.servers.push((stop, thread));
        started.expect("server start").expect("server start");
    }

    /// Asks the cluster DNS server from the pod, over UDP or TCP.
    fn ask(&self, name: &str, rtype: RecordType, tcp: bool) -> Message {
        let query = {
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
            m.to_vec().unwrap()
        };
        let server = SocketAddr::from((GATEWAY, 53));
        let reply = run_in_netns(&self.pod, move || -> std::io::Result<Vec<u8>> {
            if tcp {
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(&(query.len() as u16).to_be_bytes())?;
                s.write_all(&query)?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len)?;
                let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
                s.read_exact(&mut buf)?;
                Ok(buf)
            } else {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                s.send_to(&query, server)?;
                let mut buf = vec![0u8; 4096];
                let n = s.recv(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("query {name} {rtype}: {e}"));
        Message::from_vec(&reply).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (stop, thread) in self.servers.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
        let root = self.netns.root().to_path_buf();
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.flatten() {
                while umount2(&entry.path(), MntFlags::MNT_DETACH).is_ok() {}
            }
        }
        while umount2(&root, MntFlags::MNT_DETACH).is_ok() {}
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn port(name: &str, port: u16) -> DnsPort {
    DnsPort {
        name: name.into(),
        protocol: Protocol::Tcp,
        port,
    }
}

/// A ClusterIP Service `web` and a headless StatefulSet-style Service `db` (ready endpoints
/// only, as the agent passes them).
fn services() -> Vec<DnsService> {
    vec![
        DnsService {
            name: "web".into(),
            namespace: "default".into(),
            cluster_ip: Some(ip("10.96.0.10")),
            ports: vec![port("http", 80)],
            endpoints: vec![DnsEndpoint {
                ip: ip("10.244.0.20"),
                hostname: None,
            }],
        },
        DnsService {
            name: "db".into(),
            namespace: "default".into(),
            cluster_ip: None,
            ports: vec![port("pg", 5432)],
            endpoints: vec![
                DnsEndpoint {
                    ip: ip("10.244.0.30"),
                    hostname: Some("db-0".into()),
                },
                DnsEndpoint {
                    ip: ip("10.244.0.31"),
                    hostname: Some("db-1".into()),
                },
            ],
        },
    ]
}

fn cluster_records(services: &[DnsService]) -> RecordSet {
    RecordSet::build("cluster.local", services).unwrap()
}

/// What the test upstream knows: one name in its own zone `upstream.test`.
fn upstream_records() -> RecordSet {
    let svc = DnsService {
        name: "www".into(),
        namespace: "ext".into(),
        cluster_ip: Some(ip("192.0.2.80")),
        ports: vec![],
        endpoints: vec![],
    };
    RecordSet::build("upstream.test", &[svc]).unwrap()
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_node_dns_server_answers_service_headless_and_pod_names_and_forwards_the_rest() {
    let lab = Lab::new();

    let web = lab.ask("web.default.svc.cluster.local.", RecordType::A, false);
    assert_eq!(web.metadata.response_code, ResponseCode::NoError);
    assert!(
        web.metadata.authoritative,
        "cluster answers are authoritative"
    );
    assert_eq!(
        addresses(&web),
        [ip("10.96.0.10")],
        "the ClusterIP: {web:?}"
    );

    let db = lab.ask("db.default.svc.cluster.local.", RecordType::A, false);
    assert_eq!(
        addresses(&db),
        [ip("10.244.0.30"), ip("10.244.0.31")],
        "a headless Service answers with its ready endpoints: {db:?}"
    );
    let db0 = lab.ask("db-0.db.default.svc.cluster.local.", RecordType::A, false);
    assert_eq!(addresses(&db0), [ip("10.244.0.30")], "{db0:?}");

    let srv = lab.ask(
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
        false,
    );
    let mut targets: Vec<String> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target)),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "5432 db-0.db.default.svc.cluster.local.",
            "5432 db-1.db.default.svc.cluster.local."
        ],
        "{srv:?}"
    );
    assert_eq!(
        srv.additionals.len(),
        2,
        "target addresses ride along: {srv:?}"
    );
    let srv = lab.ask(
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
        true,
    );
    assert!(
        matches!(&srv.answers[..], [r] if matches!(&r.data, RData::SRV(s) if s.port == 80)),
        "SRV over TCP: {srv:?}"
    );

    let nx = lab.ask("nope.default.svc.cluster.local.", RecordType::A, false);
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain, "{nx:?}");
    assert!(
        nx.authorities
            .iter()
            .any(|r| r.record_type() == RecordType::SOA),
        "negative answers carry the zone's SOA for caching: {nx:?}"
    );
    let nodata = lab.ask("web.default.svc.cluster.local.", RecordType::AAAA, false);
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty(), "no IPv6 records: {nodata:?}");

    let fwd = lab.ask("www.ext.svc.upstream.test.", RecordType::A, false);
    assert_eq!(fwd.metadata.response_code, ResponseCode::NoError, "{fwd:?}");
    assert_eq!(
        addresses(&fwd),
        [ip("192.0.2.80")],
        "forwarded to the upstream: {fwd:?}"
    );
    let fwd_nx = lab.ask("missing.upstream.test.", RecordType::A, true);
    assert_eq!(
        fwd_nx.metadata.response_code,
        ResponseCode::NXDomain,
        "the upstream's NXDOMAIN comes back: {fwd_nx:?}"
    );

    // A new Service appears: the agent swaps the whole set, the next query sees it.
    let mut more = services();
    more.push(DnsService {
        name: "api".into(),
        namespace: "prod".into(),
        cluster_ip: Some(ip("10.96.0.99")),
        ports: vec![],
        endpoints: vec![],
    });
    lab.records.replace(cluster_records(&more)).unwrap();
    let api = lab.ask("api.prod.svc.cluster.local.", RecordType::A, false);
    assert_eq!(addresses(&api), [ip("10.96.0.99")], "{api:?}");
}
