//! Pod networking end to end: every pod gets its own IP from the node's subnet on the node's
//! bridge, and pods reach each other by pod IP, on one node and across nodes: two nodes in
//! one namespace, and three nodes in namespaces of their own, routed through the server's,
//! with `--network-mode vxlan`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use cluster_tests::{must_eventually, Agent, Server, ServerOptions};

fn apply(server: &Server, name: &str, node: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n"
        ),
    )
    .unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
}

fn pod_ip(server: &Server, name: &str) -> String {
    let pod = server.must_pod_phase(name, "Running", Duration::from_secs(90));
    pod["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Starts a listener pod on `server_node`, a client pod on `client_node` that connects to it
/// by pod IP, and checks the client got the listener's answer.
fn check_pod_to_pod(
    server: &Server,
    tag: &str,
    server_node: &str,
    client_node: &str,
) -> (String, String) {
    let listener = format!("listen-{tag}");
    apply(
        server,
        &listener,
        server_node,
        "echo pong-from-$(hostname) | nc -l -p 8080; sleep 1",
    );
    let ip = pod_ip(server, &listener);
    let client = format!("client-{tag}");
    let script =
        format!("for i in $(seq 1 50); do nc {ip} 8080 && exit 0; sleep 0.2; done; exit 1");
    apply(server, &client, client_node, &script);
    let pod = server.must_pod_phase(&client, "Succeeded", Duration::from_secs(90));
    let logs = server.must_cli(&["logs", &client]);
    assert_eq!(
        logs.trim(),
        format!("pong-from-{listener}"),
        "client status: {pod}\nserver log:\n{}",
        server.log()
    );
    (
        ip,
        pod["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The pod subnet the control plane assigned to `node`, once it did.
fn subnet(server: &Server, node: &str) -> String {
    must_eventually(Duration::from_secs(30), "a pod subnet for the node", || {
        let out = server.must_cli(&["get", "node", node, "-o", "json"]);
        let n: serde_json::Value = serde_json::from_str(&out).ok()?;
        n["spec"]["podCIDR"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
    })
}

#[test]
fn pods_get_ips_from_their_node_subnet_and_reach_each_other_on_one_and_across_nodes() {
    let server = Server::start(false);
    let agent = Agent::join(&server, "worker-1");
    let (a, b) = (subnet(&server, &server.node), subnet(&server, &agent.node));
    assert_ne!(a, b, "each node has its own subnet");
    assert!(
        a.starts_with("10.244.") && b.starts_with("10.244."),
        "{a} {b}"
    );

    let (listen_ip, client_ip) = check_pod_to_pod(&server, "same", &server.node, &server.node);
    let prefix = a.trim_end_matches("0/24");
    assert!(
        listen_ip.starts_with(prefix) && client_ip.starts_with(prefix),
        "{listen_ip} {client_ip} in {a}"
    );
    assert_ne!(listen_ip, client_ip);

    let (listen_ip, client_ip) = check_pod_to_pod(&server, "across", &server.node, &agent.node);
    assert!(
        client_ip.starts_with(b.trim_end_matches("0/24")),
        "{client_ip} in {b}"
    );
    assert!(listen_ip.starts_with(prefix));
}

/// The server's address on its uplink; agents are on 10.99.<i>.2.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const VXLAN: &[&str] = &["--network-mode", "vxlan"];
const DEV: &str = "capstan.vx";

/// Runs an iproute2 `program` (`ip`, `bridge`) in network namespace `netns`, returns stdout.
fn iproute(netns: &str, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} -n {netns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VXLAN device's (tx, rx) packet counters in `netns`.
fn vxlan_packets(netns: &str) -> (u64, u64) {
    let out = iproute(netns, "ip", &["-s", "-j", "link", "show", "dev", DEV]);
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stats = &links[0]["stats64"];
    (
        stats["tx"]["packets"].as_u64().unwrap(),
        stats["rx"]["packets"].as_u64().unwrap(),
    )
}

#[test]
fn pods_on_three_routed_nodes_reach_each_other_over_vxlan_and_a_leaving_node_is_unprogrammed() {
    let server = Server::start_with(ServerOptions {
        debug: false,
        uplink: Some(SERVER_IP),
        args: VXLAN.iter().map(|a| a.to_string()).collect(),
    });
    let w1 = Agent::join_routed(&server, SERVER_IP, "worker-1", 1, VXLAN);
    let mut w2 = Agent::join_routed(&server, SERVER_IP, "worker-2", 2, VXLAN);
    let nodes = [
        (
            server.host_netns().to_string(),
            SERVER_IP,
            subnet(&server, &server.node),
        ),
        (
            w1.netns(&server).to_string(),
            w1.ip,
            subnet(&server, &w1.node),
        ),
        (
            w2.netns(&server).to_string(),
            w2.ip,
            subnet(&server, &w2.node),
        ),
    ];
    // Every node programs the other two: an FDB entry towards each node address.
    for (netns, me, _) in &nodes {
        must_eventually(
            Duration::from_secs(30),
            "fdb entries for both peers",
            || {
                let fdb = iproute(netns, "bridge", &["fdb", "show", "dev", DEV]);
                nodes
                    .iter()
                    .filter(|(_, ip, _)| ip != me)
                    .all(|(_, ip, _)| fdb.contains(&format!("dst {ip} self permanent")))
                    .then_some(())
            },
        );
    }
    let before: Vec<(u64, u64)> = nodes.iter().map(|(ns, _, _)| vxlan_packets(ns)).collect();

    let (l, c) = check_pod_to_pod(&server, "same", &server.node, &server.node);
    assert_ne!(l, c);
    check_pod_to_pod(&server, "w1-to-server", &server.node, &w1.node);
    check_pod_to_pod(&server, "w2-to-w1", &w1.node, &w2.node);
    let (listen_ip, client_ip) = check_pod_to_pod(&server, "server-to-w2", &w2.node, &server.node);
    assert!(
        listen_ip.starts_with(nodes[2].2.trim_end_matches("0/24")),
        "{listen_ip}"
    );
    assert!(
        client_ip.starts_with(nodes[0].2.trim_end_matches("0/24")),
        "{client_ip}"
    );

    for ((netns, _, _), (tx0, rx0)) in nodes.iter().zip(&before) {
        let (tx, rx) = vxlan_packets(netns);
        assert!(
            tx > *tx0 && rx > *rx0,
            "{netns}: vxlan counters {tx0}/{rx0} -> {tx}/{rx}"
        );
        // Our routes are all onlink through the vxlan device: no host-gw route exists.
        let routes = iproute(netns, "ip", &["route", "show", "proto", "202"]);
        assert_eq!(routes.lines().count(), 2, "{netns}: {routes}");
        assert!(
            routes
                .lines()
                .all(|l| l.contains(&format!("dev {DEV} onlink"))),
            "{netns}: {routes}"
        );
    }

    // worker-2 leaves: the others drop its FDB entry, neighbour and route.
    w2.stop();
    server.must_cli(&["delete", "node", &w2.node]);
    let (w2_ip, w2_subnet) = (nodes[2].1, nodes[2].2.clone());
    let w2_vtep = w2_subnet.trim_end_matches("/24").to_string();
    for (netns, _, _) in &nodes[..2] {
        must_eventually(Duration::from_secs(30), "worker-2's entries to go", || {
            let fdb = iproute(netns, "bridge", &["fdb", "show", "dev", DEV]);
            let neigh = iproute(netns, "ip", &["neigh", "show", "dev", DEV]);
            let routes = iproute(netns, "ip", &["route", "show", "proto", "202"]);
            (!fdb.contains(&format!("dst {w2_ip} "))
                && !neigh.contains(&format!("{w2_vtep} "))
                && !routes.contains(&w2_subnet)
                && routes.lines().count() == 1)
                .then_some(())
        });
    }
    check_pod_to_pod(&server, "after-leave", &w1.node, &server.node);
}
