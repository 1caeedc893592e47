//! VXLAN between nodes for real, as root: "nodes" are network namespaces this test creates,
//! each on its own /24 behind a router namespace that knows nothing of pod subnets, so pods
//! on different nodes can only reach each other encapsulated (host-gw cannot work: no node
//! is on another's segment). Each node gets a bridge, a VXLAN device and a pod. Entries are
//! read back with iproute2 (`ip neigh`, `bridge fdb`, `ip route`), not with our own code.
//! The [`Lab`] guard removes every namespace (and so every link) also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::*;
use net::vxlan::{link_stats, vtep_mac, VxlanConfig, VxlanDevice, VxlanPeer, DEFAULT_VXLAN_DEVICE};
use net::{link_exists, link_mtu, sync_routes, Error, Ipv4Net, PodInterface};

const DEV: &str = DEFAULT_VXLAN_DEVICE;

/// One node: its namespace, address, pod subnet, VXLAN device and one pod.
struct Node {
    ns: PathBuf,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
    device: VxlanDevice,
    pod: PathBuf,
    iface: PodInterface,
}

impl Node {
    fn peer(&self) -> VxlanPeer {
        VxlanPeer {
            subnet: self.subnet,
            node_ip: self.ip,
        }
    }

    fn listen(&self) -> TcpListener {
        listen(&self.pod, self.iface.address.addr())
    }

    /// Makes this node's VXLAN entries match `peers`; returns how many entries changed.
    fn sync(&self, peers: &[&Node]) -> usize {
        let peers: Vec<VxlanPeer> = peers.iter().map(|n| n.peer()).collect();
        let device = self.device.clone();
        let diff = in_ns(&self.ns, move || device.sync(&peers)).expect("vxlan sync");
        diff.add.len() + diff.remove.len()
    }

    /// Runs an iproute2 command inside the node and returns its stdout.
    fn ip(&self, program: &'static str, args: &'static [&'static str]) -> String {
        let out = in_ns(&self.ns, move || {
            std::process::Command::new(program).args(args).output()
        })
        .expect("run iproute2");
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn neighbours(&self) -> String {
        self.ip("ip", &["neigh", "show", "dev", DEV])
    }

    fn fdb(&self) -> String {
        self.ip("bridge", &["fdb", "show", "dev", DEV])
    }

    fn vxlan_routes(&self) -> String {
        self.ip("ip", &["route", "show", "proto", "202"])
    }
}

/// Connects node namespace `node` to `router` by a veth pair: 192.168.<10+i>.1/24 on the
/// router, .2/24 on the node's `uplink`, and the node's default route via the router.
fn join_router(router: &Path, node: &Path, i: u8) -> Ipv4Addr {
    let node_file = std::fs::File::open(node).unwrap();
    let (r_if, n_if) = (format!("r{i}"), format!("n{i}"));
    let (r_if2, n_if2) = (r_if.clone(), n_if.clone());
    in_ns(router, move || {
        netlink(|h| async move {
            h.link()
                .add()
                .veth(r_if2.clone(), n_if2.clone())
                .execute()
                .await
                .unwrap();
            let peer = index(&h, &n_if2).await;
            h.link()
                .set(peer)
                .setns_by_fd(node_file.as_raw_fd())
                .execute()
                .await
                .unwrap();
            addr_up(&h, &r_if2, &format!("192.168.{}.1/24", 10 + i)).await;
        })
    });
    in_ns(node, move || {
        netlink(|h| async move {
            let peer = index(&h, &n_if).await;
            h.link()
                .set(peer)
                .name("uplink".into())
                .execute()
                .await
                .unwrap();
            addr_up(&h, "uplink", &format!("192.168.{}.2/24", 10 + i)).await;
            h.route()
                .add()
                .v4()
                .gateway(Ipv4Addr::new(192, 168, 10 + i, 1))
                .execute()
                .await
                .unwrap();
        })
    });
    Ipv4Addr::new(192, 168, 10 + i, 2)
}

fn router(lab: &Lab) -> PathBuf {
    let router = lab.ns("router");
    in_ns(&router, net::sysctl::enable_ip_forward).unwrap();
    router
}

/// Node `i` behind `router`: pod subnet 10.244.<i>.0/24, a bridge, the VXLAN device and one
/// attached pod.
fn node(lab: &Lab, router: &Path, i: u8, bridge: &str) -> Node {
    let ns = lab.ns(&format!("node-{i}"));
    let ip = join_router(router, &ns, i);
    let subnet = net(&format!("10.244.{i}.0/24"));
    ensure(&ns, bridge, subnet);
    let device = in_ns(&ns, move || {
        VxlanDevice::ensure(&VxlanConfig::default(), ip, subnet)
    })
    .expect("ensure vxlan");
    let pod = lab.ns(&format!("pod-{i}"));
    let ipam = lab.ipam(&format!("node-{i}"), subnet);
    let iface = attach(&ns, &pod, &format!("uid-{i}"), &ipam, bridge);
    Node {
        ns,
        ip,
        subnet,
        device,
        pod,
        iface,
    }
}

/// A TCP exchange from `from`'s pod to `to`'s pod; the listener saw the client's own pod
/// address (no NAT on the way).
fn must_reach(from: &Node, to: &Node) {
    let listener = to.listen();
    let seen = exchange(&from.pod, &listener)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", from.subnet, to.subnet));
    assert_eq!(seen.ip(), IpAddr::V4(from.iface.address.addr()));
}

fn stats(node: &Node) -> net::vxlan::LinkStats {
    in_ns(&node.ns, || link_stats(DEV)).unwrap()
}

#[test]
fn pods_on_two_then_three_nodes_reach_each_other_only_through_vxlan() {
    let lab = Lab::new();
    let router = router(&lab);
    let bridge = unique_bridge();
    let a = node(&lab, &router, 1, &bridge);
    let b = node(&lab, &router, 2, &bridge);
    assert_eq!(
        in_ns(&a.ns, || link_mtu(DEV)).unwrap(),
        1450,
        "uplink MTU - 50"
    );
    assert_eq!(a.device.mtu(), 1450);
    assert!(!a.fdb().contains(" dst "), "no peers yet: {}", a.fdb());

    // Same node still works, and without peers nothing crosses: the router has no route to
    // pod subnets.
    let a2 = lab.ns("pod-1b");
    let a2_if = attach(&a.ns, &a2, "uid-1b", &lab.ipam("node-1", a.subnet), &bridge);
    let seen = exchange(&a2, &a.listen()).expect("same node");
    assert_eq!(seen.ip(), IpAddr::V4(a2_if.address.addr()));
    assert!(
        exchange(&a.pod, &b.listen()).is_err(),
        "no peers yet, must fail"
    );

    assert_eq!(a.sync(&[&b]), 3);
    assert_eq!(b.sync(&[&a]), 3);
    assert_eq!(a.sync(&[&b]), 0, "a second sync changes nothing");
    let before = stats(&a);
    must_reach(&a, &b);
    must_reach(&b, &a);
    let after = stats(&a);
    assert!(
        after.tx_packets > before.tx_packets && after.rx_packets > before.rx_packets,
        "traffic went through the vxlan device: {before:?} -> {after:?}"
    );

    // What iproute2 sees on a: one neighbour, one FDB entry and one onlink route for b.
    let mac_b = vtep_mac(b.subnet).to_string();
    let neigh = a.neighbours();
    assert!(
        neigh.contains(&format!("10.244.2.0 lladdr {mac_b} PERMANENT")),
        "{neigh}"
    );
    let fdb = a.fdb();
    assert!(
        fdb.contains(&format!("{mac_b} dst 192.168.12.2 self permanent")),
        "{fdb}"
    );
    let routes = a.vxlan_routes();
    assert!(
        routes.contains(&format!("10.244.2.0/24 via 10.244.2.0 dev {DEV} onlink")),
        "{routes}"
    );
    let link = a.ip("ip", &["link", "show", "dev", DEV]);
    assert!(
        link.contains("link/ether 0a:58:0a:f4:01:00 "),
        "MAC derived from the subnet: {link}"
    );
    let addrs = in_ns(&a.ns, || net::link_ipv4_addresses(DEV)).unwrap();
    assert_eq!(addrs, vec![net("10.244.1.0/32")]);

    // A third node joins.
    let c = node(&lab, &router, 3, &bridge);
    assert_eq!(a.sync(&[&b, &c]), 3);
    assert_eq!(b.sync(&[&a, &c]), 3);
    assert_eq!(c.sync(&[&a, &b]), 6);
    for (from, to) in [(&a, &c), (&c, &a), (&b, &c), (&c, &b), (&a, &b)] {
        must_reach(from, to);
    }

    // The third node leaves: its entries and route go from a and b, and a cannot reach it.
    assert_eq!(a.sync(&[&b]), 3);
    assert_eq!(b.sync(&[&a]), 3);
    let mac_c = vtep_mac(c.subnet).to_string();
    for n in [&a, &b] {
        let (neigh, fdb, routes) = (n.neighbours(), n.fdb(), n.vxlan_routes());
        assert!(
            !neigh.contains("10.244.3.0") && !neigh.contains(&mac_c),
            "{neigh}"
        );
        assert!(
            !fdb.contains(&mac_c) && !fdb.contains("192.168.13.2"),
            "{fdb}"
        );
        assert!(!routes.contains("10.244.3.0"), "{routes}");
    }
    assert!(exchange(&a.pod, &c.listen()).is_err(), "c is gone for a");
    must_reach(&a, &b);
}

#[test]
fn sync_never_touches_foreign_entries_and_teardown_leaves_nothing() {
    let lab = Lab::new();
    let router = router(&lab);
    let bridge = unique_bridge();
    let a = node(&lab, &router, 1, &bridge);
    let b = node(&lab, &router, 2, &bridge);
    a.sync(&[&b]);
    b.sync(&[&a]);
    // Foreign entries on our device: another MAC scheme, another route protocol.
    a.ip(
        "ip",
        &[
            "neigh",
            "add",
            "10.244.99.9",
            "lladdr",
            "02:00:00:00:00:09",
            "dev",
            DEV,
            "nud",
            "permanent",
        ],
    );
    a.ip(
        "bridge",
        &[
            "fdb",
            "append",
            "02:00:00:00:00:09",
            "dev",
            DEV,
            "dst",
            "192.168.99.9",
            "self",
            "permanent",
        ],
    );
    a.ip(
        "ip",
        &[
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            "10.244.99.9",
            "dev",
            DEV,
            "onlink",
            "proto",
            "static",
        ],
    );
    assert_eq!(a.sync(&[&b]), 0, "foreign entries are not ours");
    assert_eq!(a.sync(&[]), 3);
    assert!(a
        .neighbours()
        .contains("10.244.99.9 lladdr 02:00:00:00:00:09"));
    assert!(a.fdb().contains("02:00:00:00:00:09 dst 192.168.99.9"));
    let all = a.ip("ip", &["route", "show"]);
    assert!(all.contains("10.244.99.0/24 via 10.244.99.9"), "{all}");
    assert!(!a.vxlan_routes().contains("10.244.2.0"));

    // Host-gw with no peers (switching modes) leaves the vxlan routes alone.
    a.sync(&[&b]);
    in_ns(&a.ns, || sync_routes(&[])).unwrap();
    assert!(
        a.vxlan_routes().contains("10.244.2.0/24"),
        "{}",
        a.vxlan_routes()
    );
    must_reach(&a, &b);

    // Ensure again with the same settings keeps the device and its entries.
    let (ip, subnet) = (a.ip, a.subnet);
    let again = in_ns(&a.ns, move || {
        VxlanDevice::ensure(&VxlanConfig::default(), ip, subnet)
    })
    .unwrap();
    assert_eq!(again, a.device);
    assert_eq!(a.sync(&[&b]), 0);

    let device = a.device.clone();
    in_ns(&a.ns, move || device.teardown()).unwrap();
    assert!(!in_ns(&a.ns, || link_exists(DEV)).unwrap());
    let routes = a.ip("ip", &["route", "show"]);
    assert!(
        !routes.contains(DEV) && !a.vxlan_routes().contains("10.244."),
        "{routes}"
    );
    let neigh = a.ip("ip", &["neigh", "show"]);
    assert!(
        !neigh.contains(DEV) && !neigh.contains(&vtep_mac(b.subnet).to_string()),
        "{neigh}"
    );
    let fdb = a.ip("bridge", &["fdb", "show"]);
    assert!(
        !fdb.contains("0a:58:0a:f4") && !fdb.contains(" dst "),
        "{fdb}"
    );
    let addrs = addresses_in(&a.ns);
    assert!(!addrs.contains(&Ipv4Addr::new(10, 244, 1, 0)), "{addrs:?}");
    in_ns(&a.ns, || net::delete_vxlan(DEV)).expect("teardown is idempotent");
    assert!(
        exchange(&a.pod, &b.listen()).is_err(),
        "no path after teardown"
    );
}

#[test]
fn a_changed_node_address_recreates_the_device_and_a_foreign_link_is_refused() {
    let lab = Lab::new();
    let router = router(&lab);
    let bridge = unique_bridge();
    let a = node(&lab, &router, 1, &bridge);
    let b = node(&lab, &router, 2, &bridge);
    a.sync(&[&b]);
    b.sync(&[&a]);
    // a gets a second address on its uplink and is announced there from now on.
    a.ip("ip", &["addr", "add", "192.168.11.3/24", "dev", "uplink"]);
    let subnet = a.subnet;
    let moved = in_ns(&a.ns, move || {
        VxlanDevice::ensure(
            &VxlanConfig::default(),
            Ipv4Addr::new(192, 168, 11, 3),
            subnet,
        )
    })
    .unwrap();
    assert_eq!(moved.local(), Ipv4Addr::new(192, 168, 11, 3));
    let details = a.ip("ip", &["-d", "link", "show", "dev", DEV]);
    assert!(details.contains("local 192.168.11.3"), "{details}");
    assert!(details.contains("nolearning"), "{details}");
    assert!(details.contains("dstport 4789"), "{details}");
    let a_moved = Node {
        ip: Ipv4Addr::new(192, 168, 11, 3),
        device: moved,
        ..a
    };
    // The recreated device lost its entries; sync puts them back.
    assert_eq!(a_moved.sync(&[&b]), 3);
    assert_eq!(b.sync(&[&a_moved]), 2, "only b's FDB entry for a changes");
    must_reach(&a_moved, &b);
    must_reach(&b, &a_moved);

    let err = in_ns(&a_moved.ns, || {
        VxlanDevice::ensure(
            &VxlanConfig {
                device: "uplink".into(),
                ..VxlanConfig::default()
            },
            Ipv4Addr::new(192, 168, 11, 2),
            net("10.244.1.0/24"),
        )
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::NotAVxlan { ref link } if link == "uplink"),
        "{err}"
    );
    assert!(matches!(
        in_ns(&a_moved.ns, || net::delete_vxlan("uplink")),
        Err(Error::NotAVxlan { .. })
    ));
    let err = in_ns(&a_moved.ns, || {
        VxlanDevice::ensure(
            &VxlanConfig::default(),
            Ipv4Addr::new(192, 168, 77, 7),
            net("10.244.1.0/24"),
        )
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("no link in this network namespace holds it"),
        "{err}"
    );
}
