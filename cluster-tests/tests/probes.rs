//! Probes end to end on a real node: a startup probe holds a web pod unstarted until its server
//! listens, its readiness httpGet probe makes it Ready (and a Service endpoint) only once the
//! page exists and takes it out again when the page goes; a liveness tcpSocket probe on a port
//! nothing listens on gets its container killed and restarted through the crash back-off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cluster_tests::{must_eventually, Server};
use serde_json::Value;

/// `web` serves /ok on 8080 after 3 s; a connection to 9000 deletes /ok. `dead` runs, but its
/// liveness probe checks a port nobody listens on.
const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  # httpd as pid 1 ignores SIGTERM: keep the cleanup's wait short.
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    ports:
    - {name: http, containerPort: 8080}
    command: ["sh", "-c", "mkdir -p /www; sleep 3; echo ok > /www/ok; nc -l -p 9000 -e rm /www/ok & exec httpd -f -p 8080 -h /www"]
    startupProbe:
      tcpSocket: {port: http}
      periodSeconds: 1
      failureThreshold: 30
    readinessProbe:
      httpGet: {path: /ok, port: http}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: dead
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
    livenessProbe:
      tcpSocket: {port: 8081}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"#;

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn flag(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}

fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The IPs under `addresses` and `notReadyAddresses` of Endpoints `name`.
fn endpoints(server: &Server, name: &str) -> Option<(Vec<String>, Vec<String>)> {
    let out = server.cli(&["get", "endpoints", name, "-o", "json"]);
    let ep: Value = serde_json::from_slice(&out.stdout).ok()?;
    let ips = |field: &str| -> Vec<String> {
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(str::to_string))
            .collect()
    };
    Some((ips("addresses"), ips("notReadyAddresses")))
}

#[test]
fn probes_gate_readiness_and_a_failing_liveness_probe_restarts_the_container() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    let t0 = Instant::now();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);

    // Running, but neither started nor ready while the server sleeps.
    let early = must_eventually(Duration::from_secs(30), "web to run unstarted", || {
        server.pod_json("web").filter(|p| {
            p["status"]["phase"] == "Running" && container(p)["state"]["running"].is_object()
        })
    });
    assert!(
        !flag(&container(&early)["started"]) && !flag(&container(&early)["ready"]),
        "not started before the startup probe passed: {early}"
    );
    assert!(!ready(&early), "{early}");

    let up = must_eventually(Duration::from_secs(20), "web to be Ready", || {
        server.pod_json("web").filter(ready)
    });
    assert!(
        flag(&container(&up)["started"]) && flag(&container(&up)["ready"]),
        "{up}"
    );
    assert_eq!(
        condition(&up, "ContainersReady").map(|c| c["status"].clone()),
        Some("True".into())
    );
    assert_eq!(container(&up)["restartCount"].as_i64().unwrap_or(0), 0);
    let ip = up["status"]["podIP"].as_str().unwrap().to_string();
    must_eventually(Duration::from_secs(10), "web as a ready endpoint", || {
        let (ready, _) = endpoints(&server, "web")?;
        ready.contains(&ip).then_some(())
    });

    // Take the page away (from the node's network namespace, like the probe itself).
    let netns = format!("/run/netns/{}", server.host_netns());
    let addr: std::net::SocketAddr = format!("{ip}:9000").parse().unwrap();
    net::run_in_netns(std::path::Path::new(&netns), move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop)
    })
    .unwrap()
    .unwrap();
    let down = must_eventually(Duration::from_secs(10), "web to turn unready", || {
        server.pod_json("web").filter(|p| !ready(p))
    });
    let message = condition(&down, "Ready").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("containers with unready status: [web]")
            && message.contains("Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "the probe's failure is in the condition: {down}"
    );
    assert!(flag(&container(&down)["started"]), "still started: {down}");
    assert_eq!(down["status"]["phase"], "Running");
    must_eventually(
        Duration::from_secs(10),
        "web as a not-ready endpoint",
        || {
            let (ready, not_ready) = endpoints(&server, "web")?;
            (!ready.contains(&ip) && not_ready.contains(&ip)).then_some(())
        },
    );

    // The liveness pod: killed (back-off shows) and restarted.
    let backoff = must_eventually(Duration::from_secs(20), "dead in CrashLoopBackOff", || {
        server
            .pod_json("dead")
            .filter(|p| container(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff")
    });
    assert_eq!(
        backoff["status"]["phase"], "Running",
        "restartPolicy Always: {backoff}"
    );
    let restarted = must_eventually(Duration::from_secs(25), "dead to be restarted", || {
        server.pod_json("dead").filter(|p| {
            container(p)["restartCount"].as_i64().unwrap_or(0) >= 1
                && container(p)["state"]["running"].is_object()
        })
    });
    let last = &container(&restarted)["lastState"]["terminated"];
    let code = last["exitCode"].as_i64().unwrap_or(0);
    assert!(
        code == 137 || code == 143,
        "the last state records the kill (SIGKILL or SIGTERM): {restarted}"
    );
    assert!(
        server.log().contains("container failed its probe"),
        "the agent says why it stopped the container"
    );
    eprintln!("probes scenario took {:?}", t0.elapsed());
}
