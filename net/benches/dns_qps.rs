//! Queries per second of the cluster DNS server on one core: the server runs on a
//! current-thread tokio runtime on a thread pinned to CPU 0, answering from a record set of
//! 1000 Services (half headless, with 3 endpoints each); 64 concurrent UDP clients on
//! loopback, on another runtime pinned to CPU 1 when there is one, each keep one query in
//! flight. The mix is what pods send: the ClusterIP name (A), a headless name (A), its AAAA
//! (NODATA) and a search-list miss (NXDOMAIN). Run with `cargo bench -p net --bench dns_qps`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RecordType};
use net::dns::{DnsConfig, DnsEndpoint, DnsPort, DnsServer, DnsService, RecordSet, SharedRecords};
use net::Protocol;

const SERVICES: u32 = 1000;
const CLIENTS: usize = 64;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(5);

fn pin(cpu: usize) -> bool {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

fn records() -> RecordSet {
    let services: Vec<DnsService> = (0..SERVICES)
        .map(|i| {
            let headless = i % 2 == 1;
            DnsService {
                name: format!("svc-{i}"),
                namespace: "default".into(),
                cluster_ip: (!headless).then(|| Ipv4Addr::from(0x0a60_0000 + i)),
                ports: vec![DnsPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                }],
                endpoints: (0..3)
                    .map(|j| DnsEndpoint {
                        ip: Ipv4Addr::from(0x0af4_0000 + i * 4 + j),
                        hostname: None,
                    })
                    .collect(),
            }
        })
        .collect();
    RecordSet::build("cluster.local", &services).unwrap()
}

fn query(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m.to_vec().unwrap()
}

/// Runs this benchmark and prints its table.
pub fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let pinned = pin(0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = DnsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstreams: vec![],
            };
            let server = DnsServer::start(&cfg, SharedRecords::new(records()))
                .await
                .unwrap();
            addr_tx.send(server.udp_addr()).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
        pinned
    });
    let addr = addr_rx.recv().unwrap();

    let queries = Arc::new(vec![
        query("svc-10.default.svc.cluster.local.", RecordType::A),
        query("svc-11.default.svc.cluster.local.", RecordType::A),
        query("svc-11.default.svc.cluster.local.", RecordType::AAAA),
        query("example.com.default.svc.cluster.local.", RecordType::A),
    ]);
    let answered = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let client_cpu = if cpus > 1 { 1 } else { 0 };
    let (a, d, q) = (answered.clone(), done.clone(), queries.clone());
    let clients = std::thread::spawn(move || {
        pin(client_cpu);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let (a, d, q) = (a.clone(), d.clone(), q.clone());
                tasks.push(tokio::spawn(async move {
                    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    sock.connect(addr).await.unwrap();
                    let mut buf = [0u8; 1500];
                    let mut i = c;
                    while !d.load(Ordering::Relaxed) {
                        sock.send(&q[i % q.len()]).await.unwrap();
                        i += 1;
                        // A lost datagram must not stall the client for good.
                        match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
                            .await
                        {
                            Ok(Ok(_)) => {
                                a.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(e)) => panic!("recv: {e}"),
                            Err(_) => {}
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    });

    std::thread::sleep(WARMUP);
    let start_count = answered.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(MEASURE);
    let count = answered.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    clients.join().unwrap();
    let _ = stop_tx.send(());
    let pinned = server.join().unwrap();

    let qps = count as f64 / elapsed.as_secs_f64();
    println!(
        "dns: {qps:.0} queries/s on one core ({count} answers in {:.2}s, {CLIENTS} UDP clients, \
         {SERVICES} services, server pinned to cpu 0: {pinned}, clients on cpu {client_cpu}, {cpus} cpus)",
        elapsed.as_secs_f64()
    );
}
