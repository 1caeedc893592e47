//! Two nodes: a server with its own agent plus a `capstan agent` that joins it. The scheduler
//! spreads pods over both, each node runs its own, and `capstan logs` reaches the right node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_tests::{Agent, Server};

#[test]
fn pods_spread_over_a_joined_agent_and_logs_come_from_their_node() {
    let server = Server::start(false);
    let agent = Agent::join(&server, "worker-1");
    let dir = tempfile::tempdir().unwrap();
    let mut docs = Vec::new();
    for i in 0..4 {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spread-{i}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo hello from $(hostname); sleep 2\"]\n"
        ));
    }
    let manifest = dir.path().join("pods.yaml");
    std::fs::write(&manifest, docs.join("---\n")).unwrap();
    server.must_cli(&["apply", "-f", manifest.to_str().unwrap()]);

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        let pod = server.must_pod_phase(&name, "Succeeded", Duration::from_secs(90));
        let node = pod["spec"]["nodeName"].as_str().unwrap().to_string();
        *per_node.entry(node).or_default() += 1;
        let logs = server.must_cli(&["logs", &name]);
        assert_eq!(
            logs,
            format!("hello from {name}\n"),
            "agent log:\n{}",
            agent.log()
        );
    }
    assert_eq!(
        per_node,
        BTreeMap::from([(server.node.clone(), 2), (agent.node.clone(), 2)]),
        "the least-loaded spread puts two pods on each node"
    );
}
