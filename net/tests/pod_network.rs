//! Pod networking for real, as root: "nodes" are network namespaces this test creates,
//! joined by a veth pair addressed 192.168.255.1/30 and .2/30 inside them; each node gets a
//! bridge and pod namespaces attached to it. Everything runs inside those namespaces via
//! `run_in_netns`; the host namespace is only used to create and delete the test's own
//! namespace files, which a Drop guard removes (with everything in them), also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use common::*;
use net::routes::{KernelRoutes, RouteTable};
use net::sysctl::ip_forward_enabled;
use net::{
    attach_pod, detach_pod, host_ifname, link_exists, link_ipv4_addresses, link_is_up, link_mtu,
    run_in_netns, sync_routes, Error, NodeNetwork, PeerRoute, ROUTE_PROTOCOL,
};
use netlink_packet_route::route::RouteProtocol;

/// Joins two node namespaces by a veth pair, `uplink` in both, 192.168.255.1/30 and .2/30.
fn connect_nodes(a: &Path, b: &Path) {
    let b_file = fs::File::open(b).unwrap();
    run_in_netns(a, move || {
        netlink(|h| async move {
            h.link()
                .add()
                .veth("uplink".into(), "uplink-b".into())
                .execute()
                .await
                .unwrap();
            let peer = index(&h, "uplink-b").await;
            h.link()
                .set(peer)
                .setns_by_fd(b_file.as_raw_fd())
                .execute()
                .await
                .unwrap();
            addr_up(&h, "uplink", "192.168.255.1/30").await;
        })
    })
    .unwrap();
    run_in_netns(b, || {
        netlink(|h| async move {
            let peer = index(&h, "uplink-b").await;
            h.link()
                .set(peer)
                .name("uplink".into())
                .execute()
                .await
                .unwrap();
            addr_up(&h, "uplink", "192.168.255.2/30").await;
        })
    })
    .unwrap();
}

/// A node namespace with a lone uplink (a veth whose peer stays beside it) on
/// 192.168.255.0/29, so that .2 and .3 are valid gateways for routes.
fn lone_uplink(node: &Path) {
    run_in_netns(node, || {
        netlink(|h| async move {
            h.link()
                .add()
                .veth("uplink".into(), "uplink-p".into())
                .execute()
                .await
                .unwrap();
            addr_up(&h, "uplink", "192.168.255.1/29").await;
            let peer = index(&h, "uplink-p").await;
            h.link().set(peer).up().execute().await.unwrap();
        })
    })
    .unwrap();
}

#[test]
fn pods_reach_each_other_on_one_node_and_across_nodes_via_host_gw_routes() {
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let lab = Lab::new();
    let (node_a, node_b) = (lab.ns("node-a"), lab.ns("node-b"));
    connect_nodes(&node_a, &node_b);
    let (subnet_a, subnet_b) = (net("10.244.0.0/24"), net("10.244.1.0/24"));
    let bridge = unique_bridge();
    ensure(&node_a, &bridge, subnet_a);
    ensure(&node_b, &bridge, subnet_b);
    let (ipam_a, ipam_b) = (lab.ipam("a", subnet_a), lab.ipam("b", subnet_b));
    let (a1, a2, b1) = (lab.ns("pod-a1"), lab.ns("pod-a2"), lab.ns("pod-b1"));
    let if_a1 = attach(&node_a, &a1, "uid-a1", &ipam_a, &bridge);
    let if_a2 = attach(&node_a, &a2, "uid-a2", &ipam_a, &bridge);
    let if_b1 = attach(&node_b, &b1, "uid-b1", &ipam_b, &bridge);
    assert_eq!(if_a1.address, net("10.244.0.2/24"));
    assert_eq!(if_a2.address, net("10.244.0.3/24"));
    assert_eq!(if_b1.address, net("10.244.1.2/24"));
    assert_eq!(if_b1.gateway, Ipv4Addr::new(10, 244, 1, 1));

    // Same node: through the bridge, source address preserved.
    let on_a2 = listen(&a2, if_a2.address.addr());
    let seen = exchange(&a1, &on_a2).expect("a1 -> a2 on one node");
    assert_eq!(seen.ip(), IpAddr::V4(if_a1.address.addr()));

    // Across nodes without routes: node A knows no way to 10.244.1.0/24.
    let on_b1 = listen(&b1, if_b1.address.addr());
    assert!(exchange(&a1, &on_b1).is_err(), "no route yet, must fail");

    let via_b = Ipv4Addr::new(192, 168, 255, 2);
    let via_a = Ipv4Addr::new(192, 168, 255, 1);
    let diff = in_ns(&node_a, move || {
        sync_routes(&[PeerRoute {
            subnet: subnet_b,
            via: via_b,
        }])
    })
    .expect("routes on a");
    assert_eq!(diff.add.len(), 1);
    in_ns(&node_b, move || {
        sync_routes(&[PeerRoute {
            subnet: subnet_a,
            via: via_a,
        }])
    })
    .expect("routes on b");

    let seen = exchange(&a1, &on_b1).expect("a1 -> b1 across nodes");
    assert_eq!(
        seen.ip(),
        IpAddr::V4(if_a1.address.addr()),
        "no NAT on the way"
    );
    let on_a2 = listen(&a2, if_a2.address.addr());
    let seen = exchange(&b1, &on_a2).expect("b1 -> a2 across nodes");
    assert_eq!(seen.ip(), IpAddr::V4(if_b1.address.addr()));

    // Forwarding was switched on in the node namespaces only.
    assert!(in_ns(&node_a, ip_forward_enabled).unwrap());
    assert!(!in_ns(&a1, ip_forward_enabled).unwrap());
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
}

#[test]
fn ensure_and_attach_twice_change_nothing_and_attach_repairs_a_replaced_netns() {
    let lab = Lab::new();
    let node = lab.ns("node");
    let subnet = net("10.244.7.0/24");
    let bridge = unique_bridge();
    let first = ensure(&node, &bridge, subnet);
    let second = ensure(&node, &bridge, subnet);
    assert_eq!(first, second);
    let b = bridge.clone();
    let (addrs, up) = in_ns(&node, move || (link_ipv4_addresses(&b), link_is_up(&b)));
    assert_eq!(addrs.unwrap(), vec![net("10.244.7.1/24")]);
    assert!(up.unwrap());

    let ipam = lab.ipam("node", subnet);
    let pod = lab.ns("pod");
    let once = attach(&node, &pod, "uid-1", &ipam, &bridge);
    let twice = attach(&node, &pod, "uid-1", &ipam, &bridge);
    assert_eq!(once, twice);
    assert_eq!(once.host_ifname, host_ifname("uid-1"));
    let (addrs, mtu, up) = in_ns(&pod, || {
        (
            link_ipv4_addresses("eth0"),
            link_mtu("eth0"),
            link_is_up("eth0"),
        )
    });
    assert_eq!(addrs.unwrap(), vec![once.address]);
    assert_eq!(mtu.unwrap(), MTU);
    assert!(up.unwrap());
    let defaults: Vec<_> = routes_in(&pod)
        .into_iter()
        .filter(|(dst, _, _)| dst.prefix_len() == 0)
        .collect();
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].2, Some(Ipv4Addr::new(10, 244, 7, 1)));
    let host = once.host_ifname.clone();
    let (host_mtu, host_up) = in_ns(&node, move || (link_mtu(&host), link_is_up(&host)));
    assert_eq!(host_mtu.unwrap(), MTU);
    assert!(host_up.unwrap());
    // Hairpin mode on the pod's bridge port (read back with iproute2, not our own code).
    let host = once.host_ifname.clone();
    let details = in_ns(&node, move || {
        std::process::Command::new("ip")
            .args(["-d", "link", "show", "dev", &host])
            .output()
    })
    .expect("run ip");
    let details = String::from_utf8_lossy(&details.stdout);
    assert!(details.contains("hairpin on"), "{details}");

    // The pod's namespace is replaced (e.g. the pod sandbox was recreated): attach again
    // wires the new namespace.
    lab.netns.delete("pod").unwrap();
    let pod = lab.ns("pod");
    let again = attach(&node, &pod, "uid-1", &ipam, &bridge);
    assert_eq!(again, once);
    let addrs = in_ns(&pod, || link_ipv4_addresses("eth0"));
    assert_eq!(addrs.unwrap(), vec![once.address]);
    // Same pod uid, new namespace while the old one still lives (its veth end sits in the
    // old namespace): attach moves the pod to a fresh pair in the new namespace.
    let moved = lab.ns("pod-moved");
    let again = attach(&node, &moved, "uid-1", &ipam, &bridge);
    assert_eq!(again, once);
    assert!(in_ns(&moved, || link_exists("eth0")).unwrap());
    assert!(
        !in_ns(&pod, || link_exists("eth0")).unwrap(),
        "old pair removed"
    );
    let pod = moved;
    let other = lab.ns("other");
    let if_other = attach(&node, &other, "uid-2", &ipam, &bridge);
    let listener = listen(&pod, once.address.addr());
    let seen = exchange(&other, &listener).expect("pod reachable after re-attach");
    assert_eq!(seen.ip(), IpAddr::V4(if_other.address.addr()));
}

#[test]
fn detach_and_teardown_leave_no_link_route_or_address() {
    let lab = Lab::new();
    let node = lab.ns("node");
    lone_uplink(&node);
    let subnet = net("10.244.9.0/24");
    let bridge = unique_bridge();
    let network = ensure(&node, &bridge, subnet);
    let ipam = lab.ipam("node", subnet);
    let pod = lab.ns("pod");
    let iface = attach(&node, &pod, "uid-1", &ipam, &bridge);
    let peer = PeerRoute {
        subnet: net("10.244.10.0/24"),
        via: Ipv4Addr::new(192, 168, 255, 2),
    };
    in_ns(&node, move || sync_routes(&[peer])).unwrap();
    assert!(
        routes_in(&node).iter().any(|(dst, _, _)| *dst == subnet),
        "connected route"
    );

    in_ns(&node, || detach_pod("uid-1")).unwrap();
    let host = iface.host_ifname.clone();
    assert!(!in_ns(&node, move || link_exists(&host)).unwrap());
    assert!(
        !in_ns(&pod, || link_exists("eth0")).unwrap(),
        "pod end went with the pair"
    );
    in_ns(&node, || detach_pod("uid-1")).expect("detach is idempotent");
    assert_eq!(ipam.release("uid-1").unwrap(), Some(iface.address.addr()));

    in_ns(&node, move || network.teardown()).unwrap();
    let b = bridge.clone();
    assert!(!in_ns(&node, move || link_exists(&b)).unwrap());
    in_ns(&node, || sync_routes(&[])).unwrap();
    let left = routes_in(&node);
    assert!(
        left.iter()
            .all(|(dst, proto, _)| !net("10.244.0.0/16").contains(dst)
                && *proto != RouteProtocol::from(ROUTE_PROTOCOL)),
        "routes left: {left:?}"
    );
    let addrs = addresses_in(&node);
    assert!(
        addrs.iter().all(|ip| !net("10.244.0.0/16").contains(ip)),
        "addresses left: {addrs:?}"
    );
    let b = bridge.clone();
    in_ns(&node, move || {
        NodeNetwork::ensure(&b, subnet).map(|n| n.teardown())
    })
    .unwrap()
    .unwrap();
    let b = bridge.clone();
    in_ns(&node, move || net::bridge::delete_bridge(&b)).expect("teardown is idempotent");
}

#[test]
fn sync_routes_converges_and_never_touches_foreign_routes() {
    let lab = Lab::new();
    let node = lab.ns("node");
    lone_uplink(&node);
    let foreign = net("10.244.50.0/24");
    run_in_netns(&node, move || {
        netlink(|h| async move {
            h.route()
                .add()
                .v4()
                .destination_prefix(foreign.addr(), foreign.prefix_len())
                .gateway(Ipv4Addr::new(192, 168, 255, 2))
                .execute()
                .await
                .unwrap()
        })
    })
    .unwrap();
    let route = |s: &str, via: u8| PeerRoute {
        subnet: net(s),
        via: Ipv4Addr::new(192, 168, 255, via),
    };
    let owned = |node: &Path| in_ns(node, || KernelRoutes.owned_routes()).unwrap();

    let wanted = [route("10.244.1.0/24", 2), route("10.244.2.0/24", 2)];
    in_ns(&node, move || sync_routes(&wanted)).unwrap();
    assert_eq!(owned(&node), wanted.to_vec());
    let again = in_ns(&node, move || sync_routes(&wanted)).unwrap();
    assert!(again.is_empty(), "second sync changes nothing: {again:?}");

    // 10.244.1.0/24 goes away, 10.244.2.0/24 moves to another gateway.
    let wanted = [route("10.244.2.0/24", 3)];
    let diff = in_ns(&node, move || sync_routes(&wanted)).unwrap();
    assert_eq!(diff.remove.len(), 2);
    assert_eq!(owned(&node), wanted.to_vec());
    let kernel = routes_in(&node);
    assert!(kernel.contains(&(
        net("10.244.2.0/24"),
        RouteProtocol::from(ROUTE_PROTOCOL),
        Some(Ipv4Addr::new(192, 168, 255, 3))
    )));

    in_ns(&node, || sync_routes(&[])).unwrap();
    assert!(owned(&node).is_empty());
    let kernel = routes_in(&node);
    assert!(
        kernel.contains(&(
            foreign,
            RouteProtocol::Static,
            Some(Ipv4Addr::new(192, 168, 255, 2))
        )),
        "the foreign route is untouched: {kernel:?}"
    );
    assert!(kernel
        .iter()
        .all(|(dst, _, _)| !net("10.244.0.0/22").contains(dst)));
}

#[test]
fn a_foreign_link_with_the_bridge_name_is_refused_and_left_alone() {
    let lab = Lab::new();
    let node = lab.ns("node");
    lone_uplink(&node);
    let subnet = net("10.244.3.0/24");
    match in_ns(&node, move || NodeNetwork::ensure("uplink", subnet)) {
        Err(Error::NotABridge { link }) => assert_eq!(link, "uplink"),
        other => panic!("a veth was taken for a bridge: {other:?}"),
    }
    assert!(matches!(
        in_ns(&node, || net::bridge::delete_bridge("uplink")),
        Err(Error::NotABridge { .. })
    ));
    let addrs = in_ns(&node, || link_ipv4_addresses("uplink")).unwrap();
    assert_eq!(addrs, vec![net("192.168.255.1/29")], "uplink untouched");
}

#[test]
fn attach_fails_cleanly_when_the_bridge_is_missing() {
    let lab = Lab::new();
    let node = lab.ns("node");
    let pod = lab.ns("pod");
    let pod2 = pod.clone();
    let result = in_ns(&node, move || {
        attach_pod(
            &pod2,
            "uid-x",
            Ipv4Addr::new(10, 244, 4, 2),
            net("10.244.4.0/24"),
            "nobridge0",
            MTU,
        )
    });
    assert!(
        matches!(result, Err(Error::LinkNotFound { ref link }) if link == "nobridge0"),
        "{result:?}"
    );
    let host = host_ifname("uid-x");
    assert!(!in_ns(&node, move || link_exists(&host)).unwrap());
    assert!(!in_ns(&pod, || link_exists("eth0")).unwrap());
}
