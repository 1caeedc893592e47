//! Volumes end to end on a real node: emptyDir (disk and memory) shared by two containers,
//! configMap with items and subPath, secret (in memory, with its mode), downwardAPI, hostPath
//! and a PersistentVolumeClaim bound to a hostPath volume, all seen from inside the
//! containers; a ConfigMap update reaches the running pod; a missing ConfigMap holds the pod
//! with `CreateContainerConfigError` until it exists; deleting the pod leaves no mount.
//! Environment variables come from the same ConfigMap and Secret and from pod fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster_tests::{must_eventually, Server};

fn manifest(host: &str, mode: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  app.conf: "mode={mode}"
  unused: "x"
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
data:
  password: aHVudGVyMg==
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-data
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  hostPath: {{path: "{host}/pv"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  volumeName: pv-data
  resources:
    requests: {{storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {{app: vols}}
spec:
  volumes:
  - name: scratch
    emptyDir: {{}}
  - name: shm
    emptyDir: {{medium: Memory, sizeLimit: 8Mi}}
  - name: config
    configMap:
      name: app-config
      items: [{{key: app.conf, path: conf/app.ini}}]
  - name: secret
    secret: {{secretName: app-secret, defaultMode: 256}}
  - name: info
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  - name: host
    hostPath: {{path: "{host}/dir", type: DirectoryOrCreate}}
  - name: data
    persistentVolumeClaim: {{claimName: data}}
  containers:
  - name: writer
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
    command: ["sh", "-c", "echo from-writer > /scratch/msg; trap 'exit 0' TERM; while true; do sleep 1; done"]
  - name: reader
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts:
    - {{name: scratch, mountPath: /scratch, readOnly: true}}
    - {{name: shm, mountPath: /shm}}
    - {{name: config, mountPath: /config}}
    - {{name: config, mountPath: /etc/app.ini, subPath: conf/app.ini}}
    - {{name: secret, mountPath: /secret}}
    - {{name: info, mountPath: /info}}
    - {{name: host, mountPath: /host}}
    - {{name: data, mountPath: /data}}
    env:
    - {{name: PASS, valueFrom: {{secretKeyRef: {{name: app-secret, key: password}}}}}}
    - {{name: MY_POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: GREETING, value: "hi-$(MY_POD)"}}
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: app-config}}}}
    command:
    - sh
    - -c
    - |
      until [ -f /scratch/msg ]; do sleep 0.2; done
      echo "scratch=$(cat /scratch/msg)"
      echo "env=$PASS $GREETING $CFG_unused"
      echo "subpath=$(cat /etc/app.ini)"
      echo "secret=$(cat /secret/password) mode=$(stat -c %a /secret/..data/password)"
      echo "name=$(cat /info/name) labels=$(cat /info/labels)"
      grep -q ' /shm tmpfs ' /proc/mounts && echo shm=tmpfs
      touch /config/new 2>/dev/null || echo config=read-only
      touch /scratch/new 2>/dev/null || echo scratch=read-only
      echo from-pod > /host/out && echo from-pod > /data/out && echo host=written
      trap 'exit 0' TERM
      while true; do echo "config=$(cat /config/conf/app.ini)"; sleep 1; done
"#
    )
}

fn reader_log(server: &Server) -> String {
    String::from_utf8_lossy(&server.cli(&["logs", "vols", "-c", "reader"]).stdout).into_owned()
}

#[test]
fn every_volume_type_is_seen_from_inside_and_config_updates_arrive() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("pv")).unwrap();
    let path = dir.path().join("vols.yaml");
    std::fs::write(&path, manifest(host.to_str().unwrap(), "prod")).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
    let pod = server.must_pod_phase("vols", "Running", Duration::from_secs(90));
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();

    let log = must_eventually(Duration::from_secs(30), "the reader's checks", || {
        let log = reader_log(&server);
        log.contains("config=mode=").then_some(log)
    });
    for want in [
        "scratch=from-writer",
        "env=hunter2 hi-vols x",
        "subpath=mode=prod",
        "secret=hunter2 mode=400",
        "name=vols labels=app=\"vols\"",
        "shm=tmpfs",
        "config=read-only",
        "scratch=read-only",
        "host=written",
        "config=mode=prod",
    ] {
        assert!(log.contains(want), "missing {want:?} in:\n{log}");
    }
    assert_eq!(
        std::fs::read_to_string(host.join("dir/out")).unwrap(),
        "from-pod\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("pv/out")).unwrap(),
        "from-pod\n"
    );
    let volumes = server.data_dir().join("pods").join(&uid).join("volumes");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let secret_dir = volumes.join("secret");
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs ") && l.split(' ').nth(1) == secret_dir.to_str()),
        "the secret volume is not a tmpfs: {mounts}"
    );

    // An update of the ConfigMap reaches the running container (not through the subPath).
    std::fs::write(&path, manifest(host.to_str().unwrap(), "canary")).unwrap();
    server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
    must_eventually(Duration::from_secs(40), "the ConfigMap update", || {
        reader_log(&server)
            .contains("config=mode=canary")
            .then_some(())
    });

    server.must_cli(&["delete", "pod", "vols", "--timeout", "60"]);
    assert!(!volumes.exists(), "the pod's volumes are still on the node");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&uid),
        "a volume of the pod is still mounted"
    );
    assert!(
        host.join("dir/out").exists(),
        "a hostPath must survive the pod"
    );
}

#[test]
fn a_missing_config_map_holds_the_pod_until_it_is_created() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        r#"apiVersion: v1
kind: Pod
metadata:
  name: waits
spec:
  volumes:
  - {name: config, configMap: {name: later}}
  containers:
  - name: c
    image: busybox:latest
    imagePullPolicy: IfNotPresent
    volumeMounts: [{name: config, mountPath: /config}]
    command: ["sh", "-c", "echo \"key=$(cat /config/key)\"; trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
    )
    .unwrap();
    server.must_cli(&["apply", "-f", pod.to_str().unwrap()]);
    let status = must_eventually(
        Duration::from_secs(60),
        "CreateContainerConfigError",
        || {
            let p = server.pod_json("waits")?;
            let waiting = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
            (waiting["reason"] == "CreateContainerConfigError").then_some(waiting)
        },
    );
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("configmap \"later\" not found"),
        "message: {message}"
    );
    assert_eq!(
        server.pod_json("waits").unwrap()["status"]["phase"],
        "Pending"
    );

    let cm = dir.path().join("cm.yaml");
    std::fs::write(
        &cm,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {key: here}\n",
    )
    .unwrap();
    server.must_cli(&["apply", "-f", cm.to_str().unwrap()]);
    server.must_pod_phase("waits", "Running", Duration::from_secs(60));
    must_eventually(Duration::from_secs(20), "the file in the log", || {
        let out = server.cli(&["logs", "waits"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("key=here")
            .then_some(())
    });
}
