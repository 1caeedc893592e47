//! Init containers and lifecycle hooks on a real node: two init containers run one after the
//! other before the app container, its postStart hook runs once it started, and on deletion
//! its preStop hook runs before SIGTERM reaches it. Every step appends to a hostPath file the
//! test reads afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

fn manifest(dir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ordered
spec:
  terminationGracePeriodSeconds: 20
  volumes:
  - {{name: host, hostPath: {{path: "{dir}", type: Directory}}}}
  initContainers:
  - name: first
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: host, mountPath: /host}}]
    command: ["sh", "-c", "sleep 1; echo init-first >> /host/order"]
  - name: second
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: host, mountPath: /host}}]
    command: ["sh", "-c", "echo init-second >> /host/order"]
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: host, mountPath: /host}}]
    command: ["sh", "-c", "trap 'echo sigterm >> /host/order; exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo post-start >> /host/order"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo pre-stop >> /host/order; sleep 1"]}}
"#
    )
}

#[test]
fn init_containers_run_in_order_and_hooks_surround_the_app() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let path = dir.path().join("ordered.yaml");
    std::fs::write(&path, manifest(host.to_str().unwrap())).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);

    let pod = server.must_pod_phase("ordered", "Running", Duration::from_secs(90));
    let inits = pod["status"]["initContainerStatuses"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(inits.len(), 2, "{pod}");
    for init in &inits {
        assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{pod}");
        assert_eq!(init["ready"], true, "{pod}");
    }
    let initialized = pod["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .cloned()
        .unwrap();
    assert_eq!(initialized["status"], "True", "{pod}");
    let order = host.join("order");
    must_eventually(Duration::from_secs(30), "the postStart hook", || {
        std::fs::read_to_string(&order)
            .ok()
            .filter(|o| o.contains("post-start"))
    });

    server.must_cli(&["delete", "pod", "ordered", "--timeout", "60"]);
    let lines: Vec<String> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            "init-first",
            "init-second",
            "post-start",
            "pre-stop",
            "sigterm"
        ],
        "the steps ran out of order"
    );
}
