//! A Deployment end to end on a real server: three busybox replicas come up as real containers
//! through the Deployment and ReplicaSet controllers, the Deployment reports them available, and
//! deleting the Deployment removes its ReplicaSet and pods (garbage collector).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["sleep", "3600"]
"#;

fn json(server: &Server, args: &[&str]) -> Option<serde_json::Value> {
    let out = server.cli(args);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn pods(server: &Server) -> Vec<serde_json::Value> {
    json(server, &["get", "pods", "-l", "app=web", "-o", "json"])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn a_deployment_of_three_replicas_runs_three_pods_and_its_deletion_removes_them() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", file.to_str().unwrap()]);

    must_eventually(
        Duration::from_secs(120),
        "3 running pods of deployment web",
        || {
            let ps = pods(&server);
            let running = ps
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (ps.len() == 3 && running == 3).then_some(())
        },
    );
    for p in pods(&server) {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(
            name.starts_with("web-"),
            "{name} is named after its ReplicaSet"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }
    let dep = must_eventually(Duration::from_secs(60), "deployment web available", || {
        json(&server, &["get", "deployment", "web", "-o", "json"]).filter(|d| {
            d["status"]["availableReplicas"] == 3 && d["status"]["updatedReplicas"] == 3
        })
    });
    assert_eq!(
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1",
        "server log:\n{}",
        server.log()
    );

    server.must_cli(&["delete", "deployment", "web"]);
    must_eventually(
        Duration::from_secs(90),
        "the deployment's pods to be gone",
        || pods(&server).is_empty().then_some(()),
    );
}
