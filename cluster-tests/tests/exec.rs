//! `capstan exec` and exec probes on a real node: the command runs inside the container (its
//! files, environment and hostname), its output and exit code come back through the CLI; an
//! exec readiness probe makes the pod Ready once a file exists, and an exec liveness probe that
//! starts failing (because of a file made through `capstan exec`) gets the container restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    env: [{name: GREETING, value: hello}]
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; trap 'exit 0' TERM; while true; do sleep 1; done"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["sh", "-c", "test ! -f /tmp/dead"]}
      periodSeconds: 1
      failureThreshold: 2
"#;

fn ready(pod: &serde_json::Value) -> bool {
    pod["status"]["containerStatuses"][0]["ready"] == true
}

#[test]
fn exec_returns_output_and_exit_code_and_exec_probes_drive_readiness_and_restarts() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shell.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
    let pod = server.must_pod_phase("shell", "Running", Duration::from_secs(90));
    assert!(
        !ready(&pod),
        "ready before the readiness file exists: {pod}"
    );
    must_eventually(Duration::from_secs(30), "the exec readiness probe", || {
        server.pod_json("shell").filter(ready)
    });

    let out = server.cli(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo $GREETING from $(hostname); ls /tmp; echo oops >&2; exit 3",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "hello from shell\nready\n");
    assert_eq!(stderr, "oops\n");
    assert_eq!(server.must_cli(&["exec", "shell", "--", "true"]), "");

    for (args, want) in [
        (
            vec!["exec", "shell", "-c", "nope", "--", "true"],
            "container: Invalid value: \"nope\"",
        ),
        (vec!["exec", "absent", "--", "true"], "not found"),
    ] {
        let out = server.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }

    // The liveness probe fails from now on: the container is restarted.
    server.must_cli(&["exec", "shell", "--", "touch", "/tmp/dead"]);
    let pod = must_eventually(
        Duration::from_secs(60),
        "a restart by the liveness probe",
        || {
            server
                .pod_json("shell")
                .filter(|p| p["status"]["containerStatuses"][0]["restartCount"] == 1)
        },
    );
    let last = &pod["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(last.is_object(), "no last state: {pod}");
    // The new attempt has a fresh root filesystem: no /tmp/dead, so it stays alive.
    must_eventually(
        Duration::from_secs(30),
        "the restarted container to be ready",
        || server.pod_json("shell").filter(ready),
    );
    let out = server.cli(&["exec", "shell", "--", "ls", "/tmp"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");
}
