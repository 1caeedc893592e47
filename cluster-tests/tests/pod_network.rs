//! Pod networking end to end: every pod gets its own IP from the node's subnet on the node's
//! bridge, and pods reach each other by pod IP, on one node and across two nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Agent, Server};

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

#[test]
fn pods_get_ips_from_their_node_subnet_and_reach_each_other_on_one_and_across_nodes() {
    let server = Server::start(false);
    let agent = Agent::join(&server, "worker-1");
    let subnet = |node: &str| {
        must_eventually(Duration::from_secs(30), "a pod subnet for the node", || {
            let out = server.must_cli(&["get", "node", node, "-o", "json"]);
            let n: serde_json::Value = serde_json::from_str(&out).ok()?;
            n["spec"]["podCIDR"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from)
        })
    };
    let (a, b) = (subnet(&server.node), subnet(&agent.node));
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
