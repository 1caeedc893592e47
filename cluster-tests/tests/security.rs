//! securityContext end to end: a pod runs as the user and group it asks for, with a read-only
//! root filesystem, no_new_privs and the default seccomp filter; `runAsNonRoot` without a
//! user holds the container with `CreateContainerConfigError`; an unknown seccomp profile
//! type is refused at apply, naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: confined
spec:
  restartPolicy: Never
  securityContext: {runAsUser: 1000, runAsGroup: 3000, fsGroup: 4000}
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    securityContext: {readOnlyRootFilesystem: true}
    command: ["sh", "-c", "echo ids=$(id -u):$(id -g):$(id -G); grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; touch /x 2>/dev/null || echo rootfs=read-only; unshare -U true 2>/dev/null || echo unshare=denied"]
---
apiVersion: v1
kind: Pod
metadata:
  name: nonroot
spec:
  containers:
  - name: main
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    securityContext: {runAsNonRoot: true}
    command: ["true"]
"#;

#[test]
fn security_contexts_confine_pods_and_bad_ones_are_refused() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sec.yaml");
    std::fs::write(&path, MANIFEST).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);

    server.must_pod_phase("confined", "Succeeded", Duration::from_secs(90));
    let log = server.must_cli(&["logs", "confined"]);
    for want in [
        "ids=1000:3000:3000 4000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
        "rootfs=read-only",
        "unshare=denied",
    ] {
        assert!(log.contains(want), "missing {want:?} in:\n{log}");
    }

    let waiting = must_eventually(
        Duration::from_secs(60),
        "CreateContainerConfigError",
        || {
            let p = server.pod_json("nonroot")?;
            let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (w["reason"] == "CreateContainerConfigError").then_some(w)
        },
    );
    assert!(
        waiting["message"]
            .as_str()
            .unwrap()
            .contains("runAsNonRoot"),
        "{waiting}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        MANIFEST
            .split("---")
            .next()
            .unwrap()
            .replace("name: confined", "name: badseccomp")
            .replace(
                "{readOnlyRootFilesystem: true}",
                "{seccompProfile: {type: Strict}}",
            ),
    )
    .unwrap();
    let out = server.cli(&["apply", "-f", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("spec.containers[0].securityContext.seccompProfile.type"),
        "{stderr}"
    );
    assert!(server.pod_json("badseccomp").is_none());
}
