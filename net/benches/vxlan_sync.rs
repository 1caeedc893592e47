//! Programs a VXLAN device for 1,000 peer nodes (3,000 neighbour, FDB and route entries) in a
//! throwaway network namespace, then re-syncs with no change, with one node replaced, and
//! tears down, printing how long each step took. Run as root:
//! `cargo bench -p net --bench vxlan_sync`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use net::{run_in_netns, Ipv4Net, NetnsManager, VxlanConfig, VxlanDevice, VxlanPeer};
use nix::mount::{umount2, MntFlags};

const PEERS: u32 = 1_000;

/// Unmounts the namespace and removes its directory on drop, also after a panic.
struct Scratch(PathBuf, PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        while umount2(&self.1, MntFlags::MNT_DETACH).is_ok() {}
        while umount2(&self.0.join("netns"), MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Peer `i`: pod subnet 10.(1 + i / 256).(i % 256).0/24 at node address 172.16.0.0 + 2 + i.
fn peer(i: u32) -> VxlanPeer {
    VxlanPeer {
        subnet: Ipv4Net::new(Ipv4Addr::from(0x0a01_0000 + (i << 8)), 24).unwrap(),
        node_ip: Ipv4Addr::from(0xac10_0002 + i),
    }
}

fn main() {
    let base = PathBuf::from(format!("/run/capstan-vxbench-{:08x}", std::process::id()));
    let netns = NetnsManager::new(base.join("netns")).expect("netns root");
    let ns = netns.create("node").expect("netns");
    let _scratch = Scratch(base, ns.clone());
    let ns2 = ns.clone();
    run_in_netns(&ns, move || {
        for args in [
            &[
                "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p",
            ][..],
            &["addr", "add", "172.16.0.1/12", "dev", "uplink"],
            &["link", "set", "uplink", "up"],
            &["link", "set", "uplink-p", "up"],
        ] {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?} in {}", ns2.display());
        }
    })
    .expect("enter netns");
    let all: Vec<VxlanPeer> = (0..PEERS).map(peer).collect();
    let mut replaced = all.clone();
    replaced[0] = peer(PEERS);
    let report = run_in_netns(&ns, move || {
        let local = Ipv4Addr::new(172, 16, 0, 1);
        let subnet: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        let mut lines = Vec::new();
        let start = Instant::now();
        let device = VxlanDevice::ensure(&VxlanConfig::default(), local, subnet).expect("ensure");
        lines.push(format!("{:<24} {:>8.1} ms", "create device", ms(start)));
        let start = Instant::now();
        VxlanDevice::ensure(&VxlanConfig::default(), local, subnet).expect("ensure");
        lines.push(format!(
            "{:<24} {:>8.1} ms",
            "ensure (unchanged)",
            ms(start)
        ));
        for (what, peers) in [
            ("initial sync", &all),
            ("no change", &all),
            ("one node replaced", &replaced),
        ] {
            let start = Instant::now();
            let diff = device.sync(peers).expect("sync");
            lines.push(format!(
                "{what:<24} {:>8.1} ms  ({} added, {} removed)",
                ms(start),
                diff.add.len(),
                diff.remove.len()
            ));
        }
        let start = Instant::now();
        device.teardown().expect("teardown");
        lines.push(format!("{:<24} {:>8.1} ms", "teardown", ms(start)));
        lines
    })
    .expect("enter netns");
    println!("VXLAN device with {PEERS} peer nodes:");
    for line in report {
        println!("  {line}");
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}
