//! Stopping the server and starting it again keeps every object, and a running container
//! survives the agent's restart and is re-adopted (not restarted, not duplicated). The node
//! keeps its pod subnet and the pod its address; a pod started after the restart gets a new
//! address from the same subnet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{alive, example, must_eventually, Server};

#[test]
fn objects_survive_a_server_restart_and_the_running_container_is_readopted() {
    let mut server = Server::start(false);
    server.must_cli(&["apply", "-f", &example("sleeper-pod.yaml")]);
    let pod = server.must_pod_phase("sleeper", "Running", Duration::from_secs(90));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let rv_before: i64 = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let pod_ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let subnet = node_subnet(&server);
    assert!(in_subnet(&pod_ip, &subnet), "{pod_ip} not in {subnet}");
    let containers = server.containers_of(&uid);
    assert_eq!(containers.len(), 1);
    let runtime::ContainerState::Running { pid, .. } = containers[0].state.clone() else {
        panic!("not running: {containers:?}")
    };

    server.stop();
    assert!(alive(pid), "the container must outlive the server");
    server.restart();

    let pod = server.pod_json("sleeper").expect("the pod is still stored");
    assert_eq!(pod["metadata"]["uid"], uid.as_str());
    let rv_after: i64 = pod["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after >= rv_before);
    let ns = server.must_cli(&["get", "namespaces"]);
    assert!(
        ns.lines().any(|l| l.starts_with("default ")),
        "namespaces: {ns}"
    );

    // Give the new agent time to sync, then check it adopted the container.
    std::thread::sleep(Duration::from_secs(3));
    let pod = server.must_pod_phase("sleeper", "Running", Duration::from_secs(30));
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "status: {pod}"
    );
    let containers = server.containers_of(&uid);
    assert_eq!(containers.len(), 1, "{containers:?}");
    assert!(
        matches!(containers[0].state, runtime::ContainerState::Running { pid: p, .. } if p == pid)
    );
    assert_eq!(
        node_subnet(&server),
        subnet,
        "the node's pod subnet changed"
    );
    assert_eq!(pod["status"]["podIP"], pod_ip.as_str(), "status: {pod}");

    // A new pod gets a fresh address from the same subnet (the live one is not handed out).
    let manifest = std::fs::read_to_string(example("sleeper-pod.yaml"))
        .unwrap()
        .replace("name: sleeper", "name: sleeper-two");
    let file = server.data_dir().join("sleeper-two.yaml");
    std::fs::write(&file, manifest).unwrap();
    server.must_cli(&["apply", "-f", file.to_str().unwrap()]);
    let two = server.must_pod_phase("sleeper-two", "Running", Duration::from_secs(60));
    let two_ip = two["status"]["podIP"].as_str().unwrap();
    assert!(in_subnet(two_ip, &subnet), "{two_ip} not in {subnet}");
    assert_ne!(two_ip, pod_ip, "an address in use was handed out again");
    server.must_cli(&["delete", "pod", "sleeper-two", "--timeout", "60"]);

    // The re-adopted container is still managed: deleting the pod stops it.
    server.must_cli(&["delete", "pod", "sleeper", "--timeout", "60"]);
    must_eventually(Duration::from_secs(30), "the container to stop", || {
        (!alive(pid)).then_some(())
    });
    assert!(server.pod_json("sleeper").is_none());
    assert!(server.containers_of(&uid).is_empty());
}

/// The test node's `spec.podCIDR`.
fn node_subnet(server: &Server) -> String {
    let out = server.must_cli(&["get", "node", &server.node, "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&out).unwrap();
    node["spec"]["podCIDR"]
        .as_str()
        .unwrap_or_else(|| panic!("no podCIDR: {node}"))
        .to_string()
}

/// Whether IPv4 `ip` lies in the CIDR `subnet`.
fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (base, len) = subnet.split_once('/').unwrap();
    let (ip, base): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (ip.parse().unwrap(), base.parse().unwrap());
    let mask = u32::MAX
        .checked_shl(32 - len.parse::<u32>().unwrap())
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}
