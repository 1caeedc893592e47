//! The walking skeleton end to end: a Pod from a YAML file to a real container, its phases as a
//! watch sees them, its log through `capstan logs`, and its exit code in the status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use api::Kind;
use cluster_tests::{example, Server};
use futures::StreamExt;

fn phase_of(obj: &api::v1::Object) -> Option<(String, String)> {
    match obj.kind.as_ref()? {
        api::v1::object::Kind::Pod(p) => Some((
            p.metadata.as_ref()?.name.clone(),
            p.status.as_ref()?.phase.clone(),
        )),
        _ => None,
    }
}

#[test]
fn hello_pod_goes_pending_running_succeeded_and_its_log_is_readable() {
    let server = Server::start(false);
    let url = server.url();
    let netns = format!("/run/netns/{}", server.host_netns());
    // The watcher runs inside the server's network namespace, where its API listens.
    let (tx, phases) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let seen = net::run_in_netns(std::path::Path::new(&netns), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(watch_phases(url))
        });
        let _ = tx.send(seen.unwrap());
    });
    std::thread::sleep(Duration::from_millis(300));

    let out = server.must_cli(&["apply", "-f", &example("hello-pod.yaml")]);
    assert_eq!(out.trim(), "pod/hello created");

    let pod = server.must_pod_phase("hello", "Succeeded", Duration::from_secs(90));
    let seen = phases.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        seen,
        vec!["Pending", "Running", "Succeeded"],
        "server log:\n{}",
        server.log()
    );
    check_finished(&server, &pod);
}

async fn watch_phases(url: String) -> Vec<String> {
    let client = api::client::Client::connect(url).await.unwrap();
    let mut events = client.watch(Kind::Pod, "default", "", "").await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    while let Some(ev) = events.next().await {
        let ev = ev.unwrap();
        let Some((name, phase)) = ev.object.as_ref().and_then(phase_of) else {
            continue;
        };
        if name == "hello" && seen.last() != Some(&phase) {
            seen.push(phase.clone());
        }
        if phase == "Succeeded" || phase == "Failed" {
            return seen;
        }
    }
    seen
}

fn check_finished(server: &Server, pod: &serde_json::Value) {
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0, "status: {pod}");
    assert_eq!(term["reason"], "Completed");
    assert_eq!(pod["spec"]["nodeName"], server.node.as_str());
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(
        ip.starts_with("10.244."),
        "the pod has an IP from the node's subnet: {pod}"
    );

    let logs = server.must_cli(&["logs", "hello"]);
    assert_eq!(logs, "Hello from Capstan\n");

    let table = server.must_cli(&["get", "pods"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("hello "))
        .expect("hello row");
    assert!(
        row.contains("0/1") && row.contains("Completed"),
        "row: {row}"
    );
}

#[test]
fn a_failing_container_reports_its_exit_code_and_both_streams_are_logged() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("fail.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: fail
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]
"#,
    )
    .unwrap();
    server.must_cli(&["apply", "-f", manifest.to_str().unwrap()]);
    let pod = server.must_pod_phase("fail", "Failed", Duration::from_secs(90));
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "status: {pod}");
    assert_eq!(term["reason"], "Error");
    let logs = server.must_cli(&["logs", "fail", "-c", "main"]);
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["to-err", "to-out"]);
}

#[test]
fn a_missing_image_with_pull_policy_never_waits_with_err_image_never_pull() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("never.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: never\nspec:\n  containers:\n  - name: main\n    image: not-imported:1.0\n    imagePullPolicy: Never\n",
    )
    .unwrap();
    server.must_cli(&["apply", "-f", manifest.to_str().unwrap()]);
    let pod = cluster_tests::must_eventually(Duration::from_secs(60), "ErrImageNeverPull", || {
        let pod = server.pod_json("never")?;
        let reason = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].clone();
        (reason == "ErrImageNeverPull").then_some(pod)
    });
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    let table = server.must_cli(&["get", "pods"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("never ") && l.contains("ErrImageNeverPull")),
        "{table}"
    );
}
