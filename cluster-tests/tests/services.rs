//! A Service end to end: the API server allocates its ClusterIP, the Endpoints controller lists
//! the ready pods of a Deployment, the node agent programs nftables, and a client pod reaches
//! every backend through the ClusterIP, found through its `ECHO_SERVICE_*` variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_tests::{must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 2
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: busybox:latest
        imagePullPolicy: IfNotPresent
        ports:
        - {name: http, containerPort: 8080}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do echo $(hostname) | nc -l -p 8080; done"]
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports:
  - {name: web, port: 80, targetPort: http}
"#;

#[test]
fn a_client_pod_reaches_every_ready_backend_through_the_cluster_ip() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);

    let svc: serde_json::Value =
        serde_json::from_str(&server.must_cli(&["get", "service", "echo", "-o", "json"])).unwrap();
    let ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("10.96."),
        "a ClusterIP from the service CIDR: {svc}"
    );

    let backends: BTreeSet<String> =
        must_eventually(Duration::from_secs(90), "two ready endpoints", || {
            let out = server.cli(&["get", "endpoints", "echo", "-o", "json"]);
            let ep: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let addrs = ep["subsets"][0]["addresses"].as_array()?.clone();
            (addrs.len() == 2 && ep["subsets"][0]["ports"][0]["port"] == 8080).then(|| {
                addrs
                    .iter()
                    .map(|a| {
                        a["targetRef"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
        });

    // The client finds the Service through the variables the agent sets (kubelet's
    // environment discovery), not through the address the test read.
    let client = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox:latest\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"echo env $ECHO_SERVICE_HOST $ECHO_SERVICE_PORT $ECHO_SERVICE_PORT_WEB $ECHO_PORT; for i in $(seq 1 40); do nc -w 2 $ECHO_SERVICE_HOST $ECHO_SERVICE_PORT; sleep 0.1; done; true\"]\n";
    let cpath = dir.path().join("client.yaml");
    std::fs::write(&cpath, client).unwrap();
    server.must_cli(&["apply", "-f", cpath.to_str().unwrap()]);
    server.must_pod_phase("client", "Succeeded", Duration::from_secs(120));
    let logs = server.must_cli(&["logs", "client"]);
    assert_eq!(
        logs.lines().next(),
        Some(format!("env {ip} 80 80 tcp://{ip}:80").as_str()),
        "Service variables in the client's environment; log:\n{logs}"
    );
    let seen: BTreeSet<String> = logs
        .lines()
        .skip(1)
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        seen,
        backends,
        "every backend answered through {ip}; log:\n{logs}\nserver log:\n{}",
        server.log()
    );
}
