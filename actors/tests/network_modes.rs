//! The node agent's pod network switching between host-gw and VXLAN for real, as root, in a
//! network namespace this test creates (a Drop guard removes it, with every link and route
//! in it, also on failure): each mode programs its own way to the peers and removes what
//! the other mode left, and VXLAN mode caps the pods' MTU by the VXLAN device's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use actors::agent::network::{InterNodeMode, PodNetwork, PodNetworkConfig};
use net::{run_in_netns, NetnsManager, PeerRoute, VxlanConfig};

/// The test's directory and node namespace; on drop the namespace files are unmounted
/// (which destroys them) and the directory removed.
struct Guard {
    base: PathBuf,
    netns: NetnsManager,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for name in self.netns.list().unwrap_or_default() {
            let _ = self.netns.delete(&name);
        }
        let _ = nix::mount::umount2(self.netns.root(), nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn guard() -> Guard {
    let base = tempfile::Builder::new()
        .prefix("capstan-modes-")
        .tempdir_in("/run")
        .unwrap()
        .keep();
    let netns = NetnsManager::new(base.join("netns")).unwrap();
    Guard { base, netns }
}

/// Runs `program args` inside namespace `ns` and returns stdout.
fn run(ns: &Path, program: &'static str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = run_in_netns(ns, move || Command::new(program).args(&args).output())
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{program}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn network(g: &Guard, mode: InterNodeMode) -> PodNetwork {
    PodNetwork::new(PodNetworkConfig {
        bridge: "cbrmodes0".into(),
        mtu: 1500,
        state_dir: g.base.join("ipam"),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        proxy_table: "capstan-modes".into(),
        mode,
        vxlan: VxlanConfig::default(),
    })
}

/// Brings up `mode`'s network in `ns` and syncs it towards one peer.
fn sync(ns: &Path, network: PodNetwork) -> PodNetwork {
    let peer = PeerRoute {
        subnet: "10.244.1.0/24".parse().unwrap(),
        via: "192.168.255.2".parse().unwrap(),
    };
    run_in_netns(ns, move || {
        network
            .init("10.244.0.0/24".parse().unwrap(), "192.168.255.1")
            .unwrap();
        network.sync_peers(&[peer], "192.168.255.1").unwrap();
        network
    })
    .unwrap()
}

#[test]
fn switching_modes_removes_the_other_modes_routes_and_device() {
    let g = guard();
    let node = g.netns.create("node").unwrap();
    // An uplink on 192.168.255.0/29 whose peer stays beside it, so .2 is an on-link gateway.
    run(
        &node,
        "ip",
        &[
            "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p",
        ],
    );
    run(
        &node,
        "ip",
        &["addr", "add", "192.168.255.1/29", "dev", "uplink"],
    );
    run(&node, "ip", &["link", "set", "uplink", "up"]);
    run(&node, "ip", &["link", "set", "uplink-p", "up"]);

    sync(&node, network(&g, InterNodeMode::Vxlan));
    let routes = run(&node, "ip", &["route", "show", "proto", "202"]);
    assert_eq!(
        routes.trim(),
        "10.244.1.0/24 via 10.244.1.0 dev capstan.vx onlink",
        "{routes}"
    );
    // Pods get the VXLAN device's MTU (1500 - 50), not the configured 1500.
    let vx = sync(&node, network(&g, InterNodeMode::Vxlan));
    let pod = g.netns.create("pod").unwrap();
    let pod2 = pod.clone();
    run_in_netns(&node, move || vx.attach(&pod2, "uid-1").unwrap().unwrap()).unwrap();
    let eth0 = run(&pod, "ip", &["link", "show", "dev", "eth0"]);
    assert!(eth0.contains("mtu 1450"), "{eth0}");

    // Same node restarted in host-gw mode: the device goes, a plain route comes.
    sync(&node, network(&g, InterNodeMode::HostGw));
    let links = run(&node, "ip", &["link", "show"]);
    assert!(!links.contains("capstan.vx"), "{links}");
    let routes = run(&node, "ip", &["route", "show", "proto", "202"]);
    assert_eq!(
        routes.trim(),
        "10.244.1.0/24 via 192.168.255.2 dev uplink",
        "{routes}"
    );

    // And back: the host-gw route goes.
    sync(&node, network(&g, InterNodeMode::Vxlan));
    let routes = run(&node, "ip", &["route", "show", "proto", "202"]);
    assert_eq!(
        routes.trim(),
        "10.244.1.0/24 via 10.244.1.0 dev capstan.vx onlink",
        "{routes}"
    );
}

#[test]
fn vxlan_mode_without_a_usable_node_address_fails_with_the_reason() {
    let g = guard();
    let node = g.netns.create("node").unwrap();
    let network = network(&g, InterNodeMode::Vxlan);
    let err = run_in_netns(&node, move || {
        network
            .init("10.244.0.0/24".parse().unwrap(), "127.0.0.1")
            .unwrap_err()
            .to_string()
    })
    .unwrap();
    assert!(err.contains("node address"), "{err}");
    let network2 = self::network(&g, InterNodeMode::Vxlan);
    let err = run_in_netns(&node, move || {
        network2
            .init("10.244.0.0/24".parse().unwrap(), "not-an-ip")
            .unwrap_err()
            .to_string()
    })
    .unwrap();
    assert!(err.contains("--host-ip"), "{err}");
}
