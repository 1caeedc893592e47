//! imagePullSecrets end to end: Debian's `docker-registry` with htpasswd auth runs inside the
//! server's network namespace (on its loopback, where the node pulls from), the busybox test
//! image is pushed there with `skopeo`, and a pod whose image needs credentials fails to pull
//! without a secret and runs with a `kubernetes.io/dockerconfigjson` Secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use cluster_tests::{must_eventually, Server};

const USER: &str = "puller";
const PASSWORD: &str = "pull-s3cret";
const PORT: u16 = 5055;

/// The registry process, killed by pid on drop.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program args` inside network namespace `netns`.
fn in_netns(netns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd
}

fn start_registry(netns: &str, dir: &Path) -> Registry {
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .unwrap();
    assert!(htpasswd.status.success(), "htpasswd (apache2-utils)");
    std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: 127.0.0.1:{PORT}\nauth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
        dir.join("storage").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = in_netns(netns, "/usr/bin/docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let registry = Registry(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let up = in_netns(netns, "bash")
            .args(["-c", &format!("echo > /dev/tcp/127.0.0.1/{PORT}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registry did not listen: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

fn push_busybox(netns: &str, dir: &Path) -> String {
    let archive = dir.join("busybox.tar");
    runtime::busybox::build_image_archive(Path::new("/bin/busybox"), &archive, "busybox:test")
        .unwrap();
    let reference = format!("127.0.0.1:{PORT}/private/busybox:1");
    let out = in_netns(netns, "skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("--dest-creds={USER}:{PASSWORD}"))
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}

fn pod(name: &str, image: &str, secret: Option<&str>) -> String {
    let secrets = secret
        .map(|s| format!("  imagePullSecrets: [{{name: {s}}}]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{secrets}  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: Always\n    command: [\"sh\", \"-c\", \"echo pulled-and-ran\"]\n"
    )
}

#[test]
fn a_private_image_pulls_only_with_its_pull_secret() {
    let server = Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let _registry = start_registry(server.host_netns(), dir.path());
    let image = push_busybox(server.host_netns(), dir.path());

    let apply = |name: &str, text: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        server.must_cli(&["apply", "-f", path.to_str().unwrap()]);
    };
    apply("nosecret", &pod("nosecret", &image, None));
    let waiting = must_eventually(Duration::from_secs(60), "an unauthorized pull", || {
        let p = server.pod_json("nosecret")?;
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        matches!(
            w["reason"].as_str(),
            Some("ErrImagePull" | "ImagePullBackOff")
        )
        .then_some(w)
    });
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("unauthorized"),
        "{waiting}"
    );

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = format!(r#"{{"auths":{{"127.0.0.1:{PORT}":{{"auth":"{auth}"}}}}}}"#);
    let config = base64::engine::general_purpose::STANDARD.encode(config);
    apply(
        "secret",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {config}\n"
        ),
    );
    apply("withsecret", &pod("withsecret", &image, Some("regcred")));
    server.must_pod_phase("withsecret", "Succeeded", Duration::from_secs(90));
    let log = server.must_cli(&["logs", "withsecret"]);
    assert!(log.contains("pulled-and-ran"), "{log}");
}
