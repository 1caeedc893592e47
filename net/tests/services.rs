//! Service proxying for real, as root, only inside network namespaces this test creates: a
//! "node" namespace with a bridge, an uplink (a veth whose peer stays beside it,
//! 192.168.254.1/24, default route behind it, as a real node routes ClusterIPs) and pod
//! namespaces attached to the bridge, three of them running a TCP server on :8080 that
//! answers its own name. Rules go into a uniquely
//! named table in the node namespace. A Drop guard unmounts every namespace (destroying its
//! links and tables) and stops the servers, also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use net::services::{self, NftCommand};
use net::{
    attach_pod, run_in_netns, sync_services, Endpoint, Ipv4Net, NetnsManager, NodeNetwork, PodIpam,
    Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec,
};
use nix::mount::{umount2, MntFlags};
use serde_json::Value;

const MTU: u32 = 1500;
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 254, 1);
const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const STICKY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const SELF_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 12);
const EMPTY_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 13);
const NEW_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 14);
const WEB_NODE_PORT: u16 = 30080;
const EMPTY_NODE_PORT: u16 = 30099;

/// A node namespace with bridge and uplink, three server pods and one client pod.
struct Lab {
    base: PathBuf,
    netns: NetnsManager,
    node: PathBuf,
    bridge: String,
    /// (name, netns, address) of the server pods `p1`..`p3`.
    servers: Vec<(String, PathBuf, Ipv4Addr)>,
    client: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    cfg: ProxyConfig,
}

impl Lab {
    fn new(node_ips: Vec<Ipv4Addr>) -> Lab {
        let id = rand::random::<u32>();
        let base = PathBuf::from(format!("/run/capstan-svctest-{id:08x}"));
        let netns = NetnsManager::new(base.join("netns")).expect("netns root");
        let mut lab = Lab {
            node: PathBuf::new(),
            bridge: format!("cbr{id:08x}"),
            servers: Vec::new(),
            client: PathBuf::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            cfg: ProxyConfig {
                table: format!("capstan-t{id:08x}"),
                pod_cidr: "10.244.0.0/16".parse().unwrap(),
                node_ips,
            },
            base,
            netns,
        };
        lab.node = lab.netns.create("node").expect("node netns");
        let subnet: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let bridge = lab.bridge.clone();
        let b = bridge.clone();
        in_ns(&lab.node, move || NodeNetwork::ensure(&b, subnet)).expect("bridge");
        in_ns(&lab.node, || {
            // As for Kubernetes: a pod's reply to another pod on the bridge must pass the
            // node's conntrack to be un-DNATed, or the client sees the pod's address.
            let knob = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
            assert!(
                knob.exists(),
                "Service proxying needs br_netfilter: modprobe br_netfilter"
            );
            fs::write(knob, "1").expect("bridge-nf-call-iptables");
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
                    .expect("run ip");
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
        for name in ["p1", "p2", "p3"] {
            let (pod, ip) = attach(name);
            lab.servers.push((name.to_owned(), pod, ip));
        }
        lab.client = attach("client").0;
        for (name, pod, _) in lab.servers.clone() {
            let listener = in_ns(&pod, || TcpListener::bind((Ipv4Addr::UNSPECIFIED, 8080)))
                .expect("bind :8080 in pod");
            let stop = lab.stop.clone();
            lab.threads
                .push(std::thread::spawn(move || serve(listener, &name, &stop)));
        }
        lab
    }

    fn sync(&self, services: &[(ServiceSpec, Vec<Endpoint>)]) -> services::SyncStats {
        let (cfg, services) = (self.cfg.clone(), services.to_vec());
        in_ns(&self.node, move || sync_services(&cfg, &services)).expect("sync services")
    }

    /// Endpoints on :8080 for the server pods named in `ready` (the others not ready).
    fn endpoints(&self, ready: &[&str]) -> Vec<Endpoint> {
        self.servers
            .iter()
            .map(|(name, _, ip)| Endpoint {
                ip: *ip,
                port: 8080,
                port_name: "http".into(),
                ready: ready.contains(&name.as_str()),
            })
            .collect()
    }

    fn pod(&self, name: &str) -> &Path {
        &self.servers.iter().find(|(n, _, _)| n == name).unwrap().1
    }

    /// Syncs through a proxy that keeps its state across calls (incremental after the first).
    fn sync_with(
        &self,
        proxy: &Arc<Mutex<ServiceProxy>>,
        services: &[(ServiceSpec, Vec<Endpoint>)],
    ) -> services::SyncStats {
        let (cfg, services, proxy) = (self.cfg.clone(), services.to_vec(), proxy.clone());
        in_ns(&self.node, move || {
            proxy.lock().unwrap().sync(&cfg, &services)
        })
        .expect("sync services")
    }

    /// The proxy's tables (the main one and its shards) as `nft -j` lists them, made
    /// comparable: no handles, no sticky clients (affinity set elements expire as time
    /// passes), elements and objects sorted.
    fn table_contents(&self) -> Vec<String> {
        let tables: Vec<String> = services::owned_tables(&self.cfg.table).collect();
        let json = in_ns(&self.node, move || {
            let mut all = Vec::new();
            for table in tables {
                let out = Command::new("nft")
                    .args(["-j", "list", "table", "ip", &table])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                let root: Value = serde_json::from_slice(&out.stdout).unwrap();
                all.extend(root["nftables"].as_array().unwrap().iter().cloned());
            }
            serde_json::to_vec(&serde_json::json!({ "nftables": all })).unwrap()
        });
        let root: Value = serde_json::from_slice(&json).unwrap();
        let mut items: Vec<String> = root["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| item.get("metainfo").is_none())
            .cloned()
            .map(|mut item| {
                normalize(&mut item);
                item.to_string()
            })
            .collect();
        items.sort();
        items
    }

    fn tables(&self) -> String {
        in_ns(&self.node, || {
            let out = Command::new("nft")
                .args(["list", "tables"])
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
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

/// Drops handles and affinity elements, sorts set elements (see [`Lab::table_contents`]).
fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("handle");
            let sticky = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("aff-"));
            if sticky {
                map.remove("elem");
            }
            if let Some(Value::Array(elems)) = map.get_mut("elem") {
                elems.sort_by_key(|e| e.to_string());
            }
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Answers every connection with `name` until `stop` is set.
fn serve(listener: TcpListener, name: &str, stop: &AtomicBool) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                let _ = stream.write_all(name.as_bytes());
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("accept: {err}"),
        }
    }
}

fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    run_in_netns(ns, f).expect("enter netns")
}

/// Opens `n` connections from namespace `from` to `to` and counts the names answered.
fn ask(from: &Path, to: SocketAddrV4, n: usize) -> std::io::Result<BTreeMap<String, usize>> {
    in_ns(from, move || {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let mut stream =
                TcpStream::connect_timeout(&SocketAddr::V4(to), Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut name = String::new();
            stream.read_to_string(&mut name)?;
            *seen.entry(name).or_insert(0) += 1;
        }
        Ok(seen)
    })
}

fn service(name: &str, ip: Ipv4Addr, node_port: Option<u16>, affinity: Option<u32>) -> ServiceSpec {
    ServiceSpec {
        namespace: "default".into(),
        name: name.into(),
        cluster_ip: Some(ip),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
        }],
        session_affinity_timeout: affinity,
    }
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

#[test]
fn cluster_ip_spreads_evenly_over_ready_endpoints_and_rejects_without_any() {
    let lab = Lab::new(vec![NODE_IP]);
    let all = lab.endpoints(&["p1", "p2", "p3"]);
    let stats = lab.sync(&[
        (service("web", WEB_IP, None, None), all.clone()),
        (service("empty", EMPTY_IP, None, None), lab.endpoints(&[])),
    ]);
    assert_eq!((stats.service_ports, stats.endpoints), (2, 3));
    assert_eq!(stats.without_endpoints, 1);

    let seen = ask(&lab.client, at(WEB_IP, 80), 300).expect("client -> ClusterIP");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|n| *n >= 60), "uneven: {seen:?}");

    // From the node itself (nat output).
    let seen = ask(&lab.node, at(WEB_IP, 80), 30).expect("node -> ClusterIP");
    assert_eq!(seen.values().sum::<usize>(), 30);

    // p2 stops being ready: it gets no new connections.
    lab.sync(&[
        (
            service("web", WEB_IP, None, None),
            lab.endpoints(&["p1", "p3"]),
        ),
        (service("empty", EMPTY_IP, None, None), lab.endpoints(&[])),
    ]);
    let seen = ask(&lab.client, at(WEB_IP, 80), 100).expect("client -> ClusterIP");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["p1", "p3"],
        "{seen:?}"
    );

    // No ready endpoint: refused at once, from pods and from the node.
    for from in [&lab.client, &lab.node] {
        let err = ask(from, at(EMPTY_IP, 80), 1).expect_err("no endpoints");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    }
}

#[test]
fn node_port_session_affinity_and_hairpin_work() {
    let lab = Lab::new(vec![NODE_IP]);
    let all = lab.endpoints(&["p1", "p2", "p3"]);
    let services = vec![
        (
            service("web", WEB_IP, Some(WEB_NODE_PORT), None),
            all.clone(),
        ),
        (service("sticky", STICKY_IP, None, Some(600)), all.clone()),
        (service("self", SELF_IP, None, None), lab.endpoints(&["p1"])),
        (
            service("empty", EMPTY_IP, Some(EMPTY_NODE_PORT), None),
            lab.endpoints(&[]),
        ),
    ];
    let stats = lab.sync(&services);
    assert_eq!(stats.node_ports, 2);

    // NodePort on the node's address, from a pod and from the node; masqueraded, so the
    // server could answer even a client it has no route to.
    let seen = ask(&lab.client, at(NODE_IP, WEB_NODE_PORT), 60).expect("pod -> NodePort");
    assert_eq!(seen.len(), 3, "{seen:?}");
    let seen = ask(&lab.node, at(NODE_IP, WEB_NODE_PORT), 10).expect("node -> NodePort");
    assert_eq!(seen.values().sum::<usize>(), 10);
    let err = ask(&lab.client, at(NODE_IP, EMPTY_NODE_PORT), 1).expect_err("no endpoints");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    // Not a NodePort on other addresses: the ClusterIP does not answer on 30080.
    assert!(ask(&lab.client, at(WEB_IP, WEB_NODE_PORT), 1).is_err());

    // ClientIP affinity: one client sticks to one endpoint, also across a resync.
    let seen = ask(&lab.client, at(STICKY_IP, 80), 30).expect("client -> sticky");
    assert_eq!(seen.len(), 1, "{seen:?}");
    lab.sync(&services);
    let again = ask(&lab.client, at(STICKY_IP, 80), 30).expect("client -> sticky");
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>()
    );
    // ... while another client may land elsewhere, but also sticks.
    let seen = ask(lab.pod("p3"), at(STICKY_IP, 80), 20).expect("p3 -> sticky");
    assert_eq!(seen.len(), 1, "{seen:?}");

    // Hairpin: p1 reaches itself through its Service.
    let seen = ask(lab.pod("p1"), at(SELF_IP, 80), 5).expect("p1 -> its own Service");
    assert_eq!(seen, BTreeMap::from([("p1".to_owned(), 5)]));
}

#[test]
fn resync_deletes_stale_objects_and_teardown_removes_only_our_table() {
    // No node addresses configured: NodePorts answer on every local address.
    let lab = Lab::new(vec![]);
    in_ns(&lab.node, || {
        let status = Command::new("nft")
            .args(["add", "table", "ip", "foreign"])
            .status()
            .unwrap();
        assert!(status.success());
    });
    let all = lab.endpoints(&["p1", "p2", "p3"]);
    lab.sync(&[
        (
            service("web", WEB_IP, Some(WEB_NODE_PORT), Some(60)),
            all.clone(),
        ),
        (service("other", STICKY_IP, None, None), all.clone()),
        (service("self", SELF_IP, None, None), lab.endpoints(&["p1"])),
    ]);
    let seen = ask(lab.pod("p1"), at(SELF_IP, 80), 5).expect("p1 -> its own Service");
    assert_eq!(seen, BTreeMap::from([("p1".to_owned(), 5)]));
    let seen = ask(&lab.client, at(NODE_IP, WEB_NODE_PORT), 10).expect("NodePort via fib");
    assert_eq!(seen.values().sum::<usize>(), 10);

    let table = lab.cfg.table.clone();
    let before = in_ns(&lab.node, move || {
        NftCommand::default().list_objects_of(&table)
    });
    let stats = lab.sync(&[(service("web", WEB_IP, None, None), lab.endpoints(&["p1"]))]);
    // Gone: the chains of "other" and "self" (one each: endpoints are rules in the
    // Service's chain, not chains of their own), web's ext chain, its 3 affinity sets.
    assert_eq!(stats.deleted_objects, 1 + 1 + 1 + 3);
    let table = lab.cfg.table.clone();
    let after = in_ns(&lab.node, move || {
        NftCommand::default().list_objects_of(&table)
    });
    assert!(after.0.len() < before.0.len());
    assert!(!after.1.iter().any(|s| s.starts_with("aff-")), "{after:?}");
    assert_eq!(
        ask(&lab.client, at(WEB_IP, 80), 10).unwrap(),
        BTreeMap::from([("p1".to_owned(), 10)])
    );
    assert!(
        ask(&lab.client, at(STICKY_IP, 80), 1).is_err(),
        "removed Service"
    );

    let cfg = lab.cfg.clone();
    in_ns(&lab.node, move || services::teardown(&cfg)).expect("teardown");
    let tables = lab.tables();
    assert!(!tables.contains(&lab.cfg.table), "{tables}");
    assert!(tables.contains("table ip foreign"), "{tables}");
    assert!(ask(&lab.client, at(WEB_IP, 80), 1).is_err(), "no more DNAT");
    let cfg = lab.cfg.clone();
    in_ns(&lab.node, move || services::teardown(&cfg)).expect("teardown is idempotent");
}

#[test]
fn an_incremental_sync_behaves_exactly_like_a_full_sync() {
    let lab = Lab::new(vec![NODE_IP]);
    let all = lab.endpoints(&["p1", "p2", "p3"]);
    let proxy = Arc::new(Mutex::new(ServiceProxy::new()));
    let first = lab.sync_with(
        &proxy,
        &[
            (
                service("web", WEB_IP, Some(WEB_NODE_PORT), None),
                all.clone(),
            ),
            (service("sticky", STICKY_IP, None, Some(600)), all.clone()),
            (service("doomed", SELF_IP, None, None), all.clone()),
        ],
    );
    assert!(first.full_sync);
    let stuck = ask(&lab.client, at(STICKY_IP, 80), 10).expect("client -> sticky");
    assert_eq!(stuck.len(), 1, "{stuck:?}");

    // p2 turns unready for web, "doomed" goes, "new" comes; "sticky" is left alone.
    let after = vec![
        (
            service("web", WEB_IP, Some(WEB_NODE_PORT), None),
            lab.endpoints(&["p1", "p3"]),
        ),
        (service("sticky", STICKY_IP, None, Some(600)), all.clone()),
        (service("new", NEW_IP, None, None), lab.endpoints(&["p2"])),
    ];
    let stats = lab.sync_with(&proxy, &after);
    assert!(!stats.full_sync, "{stats:?}");
    assert_eq!(stats.changed_ports, 3, "web, doomed and new");

    // The removed endpoint gets none of 150 new connections; the others share them.
    let seen = ask(&lab.client, at(WEB_IP, 80), 150).expect("client -> ClusterIP");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["p1", "p3"],
        "{seen:?}"
    );
    assert!(seen.values().all(|n| *n >= 40), "uneven: {seen:?}");
    let seen = ask(&lab.client, at(NODE_IP, WEB_NODE_PORT), 60).expect("pod -> NodePort");
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["p1", "p3"],
        "{seen:?}"
    );
    // The new Service answers (also hairpin, from its own pod), the deleted one does not.
    let seen = ask(&lab.client, at(NEW_IP, 80), 10).expect("client -> new Service");
    assert_eq!(seen, BTreeMap::from([("p2".to_owned(), 10)]));
    let seen = ask(lab.pod("p2"), at(NEW_IP, 80), 5).expect("p2 -> its own Service");
    assert_eq!(seen, BTreeMap::from([("p2".to_owned(), 5)]));
    assert!(
        ask(&lab.client, at(SELF_IP, 80), 1).is_err(),
        "deleted Service"
    );
    // The untouched Service kept its sticky client.
    let again = ask(&lab.client, at(STICKY_IP, 80), 10).expect("client -> sticky");
    assert_eq!(
        again.keys().collect::<Vec<_>>(),
        stuck.keys().collect::<Vec<_>>()
    );

    // And the table is object for object what a full sync of the same Services makes.
    let incremental = lab.table_contents();
    let full = lab.sync(&after);
    assert!(full.full_sync);
    assert_eq!(
        full.deleted_objects, 0,
        "the incremental sync left nothing stale"
    );
    assert_eq!(incremental, lab.table_contents());

    // Someone deletes the tables behind the proxy's back: the next update is refused and
    // the proxy rewrites them in the same call.
    let tables: Vec<String> = services::owned_tables(&lab.cfg.table).collect();
    in_ns(&lab.node, move || {
        for table in tables {
            let status = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .status()
                .unwrap();
            assert!(status.success());
        }
    });
    let mut last = after.clone();
    last[0].1 = lab.endpoints(&["p1"]);
    let stats = lab.sync_with(&proxy, &last);
    assert!(stats.full_sync, "{stats:?}");
    let seen = ask(&lab.client, at(WEB_IP, 80), 20).expect("client -> ClusterIP");
    assert_eq!(seen, BTreeMap::from([("p1".to_owned(), 20)]));
}

/// Chain and set names of a proxy's tables (main and shards, merged), via the crate's own
/// listing.
trait ListObjects {
    fn list_objects_of(&self, table: &str) -> (Vec<String>, Vec<String>);
}

impl ListObjects for NftCommand {
    fn list_objects_of(&self, table: &str) -> (Vec<String>, Vec<String>) {
        use net::services::Nft;
        let objects = self.list_owned(table).expect("list objects");
        (
            objects
                .iter()
                .flat_map(|(t, o)| o.chains.iter().map(move |c| format!("{t}/{c}")))
                .collect(),
            objects
                .values()
                .flat_map(|o| o.sets.iter().cloned())
                .collect(),
        )
    }
}
