//! Pod-to-pod TCP throughput across two nodes, host-gw routes against VXLAN: two node
//! namespaces joined by a veth pair (MTU 1500), a pod on each (MTU 1400, under the VXLAN
//! device's 1450 so both modes carry the same segments), 512 MiB sent from one pod to the
//! other in each mode, best of three. Prints MiB/s per mode. Run as root:
//! `cargo bench -p net --bench pod_throughput`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use net::{run_in_netns, sync_routes, PeerRoute, VxlanConfig, VxlanDevice, VxlanPeer};

const BYTES: usize = 512 << 20;
const ROUNDS: usize = 3;

/// Joins two node namespaces by a veth pair `uplink`, 192.168.255.1/30 and .2/30.
fn connect_nodes(a: &Path, b: &Path) {
    let b_file = std::fs::File::open(b).unwrap();
    in_ns(a, move || {
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
    });
    in_ns(b, || {
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
    });
}

/// Sends [`BYTES`] from pod `from` to a listener in pod `to`; returns MiB/s.
fn transfer(from: &Path, to: &Path, to_ip: Ipv4Addr) -> f64 {
    let listener = listen(to, to_ip);
    let target = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < BYTES {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed after {total} bytes");
            total += n;
        }
        conn.write_all(b"k").unwrap();
    });
    let mut client = in_ns(from, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(3))
    })
    .unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let start = Instant::now();
    let mut sent = 0;
    while sent < BYTES {
        client.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    let mut ack = [0u8; 1];
    client.read_exact(&mut ack).unwrap();
    let secs = start.elapsed().as_secs_f64();
    reader.join().unwrap();
    (BYTES as f64 / (1 << 20) as f64) / secs
}

fn best(from: &Path, to: &Path, to_ip: Ipv4Addr) -> f64 {
    (0..ROUNDS)
        .map(|_| transfer(from, to, to_ip))
        .fold(0.0, f64::max)
}

fn main() {
    let lab = Lab::new();
    let (node_a, node_b) = (lab.ns("node-a"), lab.ns("node-b"));
    connect_nodes(&node_a, &node_b);
    let (subnet_a, subnet_b) = (net("10.244.0.0/24"), net("10.244.1.0/24"));
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 255, 1),
        Ipv4Addr::new(192, 168, 255, 2),
    );
    let bridge = unique_bridge();
    ensure(&node_a, &bridge, subnet_a);
    ensure(&node_b, &bridge, subnet_b);
    let (pod_a, pod_b) = (lab.ns("pod-a"), lab.ns("pod-b"));
    attach(&node_a, &pod_a, "uid-a", &lab.ipam("a", subnet_a), &bridge);
    let to = attach(&node_b, &pod_b, "uid-b", &lab.ipam("b", subnet_b), &bridge);
    let to_ip = to.address.addr();

    // host-gw
    in_ns(&node_a, move || {
        sync_routes(&[PeerRoute {
            subnet: subnet_b,
            via: ip_b,
        }])
    })
    .unwrap();
    in_ns(&node_b, move || {
        sync_routes(&[PeerRoute {
            subnet: subnet_a,
            via: ip_a,
        }])
    })
    .unwrap();
    let host_gw = best(&pod_a, &pod_b, to_ip);

    // VXLAN: host-gw routes removed first, as the agent does when switching modes.
    for (node, local, subnet, peer) in [
        (&node_a, ip_a, subnet_a, (subnet_b, ip_b)),
        (&node_b, ip_b, subnet_b, (subnet_a, ip_a)),
    ] {
        run_in_netns(node, move || {
            sync_routes(&[]).unwrap();
            let device = VxlanDevice::ensure(&VxlanConfig::default(), local, subnet).unwrap();
            device
                .sync(&[VxlanPeer {
                    subnet: peer.0,
                    node_ip: peer.1,
                }])
                .unwrap();
        })
        .unwrap();
    }
    let vxlan = best(&pod_a, &pod_b, to_ip);

    println!("pod-to-pod TCP, {} MiB, best of {ROUNDS}:", BYTES >> 20);
    println!("  host-gw  {host_gw:>8.0} MiB/s");
    println!(
        "  vxlan    {vxlan:>8.0} MiB/s  ({:.0}% of host-gw)",
        vxlan / host_gw * 100.0
    );
}
