//! The Service data path against the direct one: TCP throughput and connection rate from a
//! client pod to a server pod, once by the pod's IP and once through a ClusterIP that
//! Capstan's nftables proxy DNATs to it, alternating, in one run. Everything lives in
//! network namespaces this bench creates (a node with a bridge and two pods) and removes,
//! also on a panic. Run as root: `cargo bench -p net --bench service_path`.
//! Target (issue 6): ClusterIP / pod IP at least 0.95 for both figures.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use net::{
    attach_pod, run_in_netns, sync_services, Endpoint, Ipv4Net, NetnsManager, NodeNetwork, PodIpam,
    Protocol, ProxyConfig, ServicePort, ServiceSpec,
};
use nix::mount::{umount2, MntFlags};

const MTU: u32 = 1500;
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SINK_PORT: u16 = 8080;
const ACCEPT_PORT: u16 = 8081;
/// Bytes sent per throughput round.
const STREAM_BYTES: usize = 2 << 30;
/// How long one connection-rate round runs.
const CONNECT_ROUND: Duration = Duration::from_secs(1);
/// Rounds per figure and path (the median is printed).
const ROUNDS: usize = 7;

/// The node namespace and its two pods; Drop removes them.
struct Lab {
    base: PathBuf,
    netns: NetnsManager,
    node: PathBuf,
    client: PathBuf,
    server_ip: Ipv4Addr,
}

impl Lab {
    fn new() -> Lab {
        let id = std::process::id();
        let base = PathBuf::from(format!("/run/capstan-pathbench-{id:08x}"));
        let netns = NetnsManager::new(base.join("netns")).expect("netns root");
        let node = netns.create("node").expect("node netns");
        let mut lab = Lab {
            base,
            netns,
            node,
            client: PathBuf::new(),
            server_ip: Ipv4Addr::UNSPECIFIED,
        };
        let subnet: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let bridge = format!("cbb{id:08x}");
        let b = bridge.clone();
        in_ns(&lab.node, move || NodeNetwork::ensure(&b, subnet)).expect("bridge");
        in_ns(&lab.node, || {
            let knob = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
            assert!(
                knob.exists(),
                "Service proxying needs br_netfilter: modprobe br_netfilter"
            );
            fs::write(knob, "1").expect("bridge-nf-call-iptables");
            // As on a real node: a default route (to nowhere) so ClusterIPs are routable.
            for args in [
                "link add up0 type veth peer name up0-peer",
                "addr add 192.168.254.1/24 dev up0",
                "link set up0 up",
                "link set up0-peer up",
                "route add default via 192.168.254.2",
            ] {
                let status = Command::new("ip")
                    .args(args.split(' '))
                    .status()
                    .expect("ip");
                assert!(status.success(), "ip {args}");
            }
        });
        let ipam = PodIpam::open(lab.base.join("ipam"), subnet).expect("ipam");
        let attach = |name: &str| {
            let pod = lab.netns.create(name).expect("pod netns");
            let ip = ipam.allocate(name).expect("allocate");
            let (p, uid, b) = (pod.clone(), name.to_owned(), bridge.clone());
            in_ns(&lab.node, move || attach_pod(&p, &uid, ip, subnet, &b, MTU)).expect("attach");
            (pod, ip)
        };
        let (server, server_ip) = attach("server");
        lab.server_ip = server_ip;
        lab.client = attach("client").0;
        let sink = in_ns(&server, || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, SINK_PORT))
        })
        .expect("bind sink");
        let accept = in_ns(&server, || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, ACCEPT_PORT))
        })
        .expect("bind accept");
        std::thread::spawn(move || serve(sink, drain));
        std::thread::spawn(move || serve(accept, |_| ()));
        lab
    }

    fn program_service(&self) {
        let cfg = ProxyConfig {
            table: format!("capstan-b{:08x}", std::process::id()),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
            node_ips: vec![Ipv4Addr::new(192, 168, 254, 1)],
        };
        let port = |name: &str, port: u16| ServicePort {
            name: name.into(),
            protocol: Protocol::Tcp,
            port,
            node_port: None,
        };
        let endpoint = |name: &str, port: u16| Endpoint {
            ip: self.server_ip,
            port,
            port_name: name.into(),
            ready: true,
        };
        let service = ServiceSpec {
            namespace: "bench".into(),
            name: "server".into(),
            cluster_ip: Some(CLUSTER_IP),
            ports: vec![port("sink", SINK_PORT), port("accept", ACCEPT_PORT)],
            session_affinity_timeout: None,
        };
        let services = vec![(
            service,
            vec![endpoint("sink", SINK_PORT), endpoint("accept", ACCEPT_PORT)],
        )];
        in_ns(&self.node, move || sync_services(&cfg, &services)).expect("sync services");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
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

/// Accepts connections (blocking, so the accept path adds no polling delay), handing each
/// to `handle` and then closing it. The thread ends with the process.
fn serve(listener: TcpListener, handle: fn(&mut TcpStream)) {
    for stream in listener.incoming() {
        match stream {
            Ok(mut stream) => handle(&mut stream),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => panic!("accept: {err}"),
        }
    }
}

/// Reads to EOF, then answers one byte so the sender knows everything arrived.
fn drain(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    let _ = stream.write_all(b"k");
}

fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    run_in_netns(ns, f).expect("enter netns")
}

/// Sends [`STREAM_BYTES`] to `ip` and returns Gbit/s.
fn throughput(lab: &Lab, ip: Ipv4Addr) -> f64 {
    in_ns(&lab.client, move || {
        let chunk = vec![0x5au8; 1 << 16];
        let started = Instant::now();
        let mut stream = TcpStream::connect(SocketAddrV4::new(ip, SINK_PORT)).expect("connect");
        let mut sent = 0;
        while sent < STREAM_BYTES {
            stream.write_all(&chunk).expect("send");
            sent += chunk.len();
        }
        stream.shutdown(Shutdown::Write).expect("shutdown");
        let mut ack = [0u8; 1];
        stream.read_exact(&mut ack).expect("ack");
        (sent as f64 * 8.0) / started.elapsed().as_secs_f64() / 1e9
    })
}

/// Opens, completes and resets connections to `ip` for [`CONNECT_ROUND`]; connections/s.
fn connection_rate(lab: &Lab, ip: Ipv4Addr) -> f64 {
    in_ns(&lab.client, move || {
        let to = SocketAddr::V4(SocketAddrV4::new(ip, ACCEPT_PORT));
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < CONNECT_ROUND {
            let mut stream =
                TcpStream::connect_timeout(&to, Duration::from_secs(3)).expect("connect");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).expect("read");
            // Reset instead of TIME_WAIT, so a round never runs out of client ports.
            nix::sys::socket::setsockopt(
                &stream,
                nix::sys::socket::sockopt::Linger,
                &nix::libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                },
            )
            .expect("SO_LINGER");
            count += 1;
        }
        count as f64 / started.elapsed().as_secs_f64()
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs this benchmark and prints its table.
pub fn main() {
    let lab = Lab::new();
    lab.program_service();
    let paths = [("pod IP", lab.server_ip), ("ClusterIP", CLUSTER_IP)];
    // Warm up both paths (ARP, conntrack, caches).
    for (_, ip) in paths {
        throughput(&lab, ip);
        connection_rate(&lab, ip);
    }
    let mut stream = [Vec::new(), Vec::new()];
    let mut connect = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (i, (_, ip)) in paths.iter().enumerate() {
            stream[i].push(throughput(&lab, *ip));
            connect[i].push(connection_rate(&lab, *ip));
        }
    }
    let [direct, service] = stream.map(median);
    let [direct_c, service_c] = connect.map(median);
    println!("service data path, medians of {ROUNDS} alternating rounds (target ratio >= 0.95)");
    println!("| Figure | pod IP | ClusterIP | ClusterIP / pod IP |");
    println!("|---|---|---|---|");
    println!(
        "| TCP throughput | {direct:.2} Gbit/s | {service:.2} Gbit/s | {:.3} |",
        service / direct
    );
    println!(
        "| Connection rate | {direct_c:.0} /s | {service_c:.0} /s | {:.3} |",
        service_c / direct_c
    );
}
