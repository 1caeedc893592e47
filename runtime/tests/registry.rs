//! Registry pulls against a real registry: Debian's `docker-registry` on a free loopback port,
//! filled with the busybox test image by `skopeo`. Covers anonymous and basic-auth pulls,
//! digest verification of a corrupted blob, deduplication of concurrent pulls, and running a
//! container from a pulled image.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use runtime::{ContainerState, PullError, RegistryAuth, RegistrySettings};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const USER: &str = "capstan";
const PASSWORD: &str = "s3cret-pass";

/// A running registry; killed (by pid) and its storage removed on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    fn start(basic_auth: bool) -> anyhow::Result<Registry> {
        anyhow::ensure!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} missing: apt-get install docker-registry (see .ci/install)"
        );
        let dir = tempfile::Builder::new().prefix("capstan-reg-").tempdir()?;
        let storage = dir.path().join("storage");
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n",
            storage.display()
        );
        if basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()?;
            anyhow::ensure!(out.status.success(), "htpasswd failed (apache2-utils)");
            std::fs::write(&htpasswd, &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let reg = Registry {
            child,
            addr,
            storage,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&reg.addr).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "registry did not listen on {}: {}",
                reg.addr,
                std::fs::read_to_string(reg.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }

    /// Pushes the busybox test image as `<addr>/busybox:test`; returns the reference.
    fn push_busybox(&self, creds: bool) -> anyhow::Result<String> {
        let archive = self.dir.path().join("busybox.tar");
        runtime::busybox::build_image_archive(Path::new("/bin/busybox"), &archive, "busybox:test")?;
        let reference = format!("{}/busybox:test", self.addr);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if creds {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let out = cmd
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{reference}"))
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(reference)
    }

    /// The registry's stored blob files (`.../blobs/sha256/xx/<hex>/data`).
    fn blob_files(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let root = self.storage.join("docker/registry/v2/blobs/sha256");
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&root)? {
            for blob in std::fs::read_dir(prefix?.path())? {
                let blob = blob?;
                let hex = blob.file_name().to_string_lossy().into_owned();
                out.push((format!("sha256:{hex}"), blob.path().join("data")));
            }
        }
        Ok(out)
    }
}

fn tokio_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[test]
fn an_image_pulled_from_a_registry_runs_a_container_and_a_repull_downloads_nothing(
) -> anyhow::Result<()> {
    let registry = Registry::start(false)?;
    let reference = registry.push_busybox(false)?;
    let mut h = Harness::empty()?;
    let puller = h.rt().puller(RegistrySettings::default());
    let rt = tokio_rt()?;

    let info = rt.block_on(puller.pull(&reference, &RegistryAuth::Anonymous))?;
    assert_eq!(info.name, reference);
    let image = h.rt().images().resolve(&reference)?;
    let first = puller.stats();
    assert_eq!(first.manifests_fetched, 1);
    assert_eq!(first.blobs_downloaded, 1 + image.layers.len() as u64);
    assert!(first.bytes_received >= info.size);

    let again = rt.block_on(puller.pull(&reference, &RegistryAuth::Anonymous))?;
    assert_eq!(again.digest, info.digest);
    let second = puller.stats();
    assert_eq!(
        second.blobs_downloaded, first.blobs_downloaded,
        "blobs re-downloaded"
    );
    assert_eq!(
        second.manifests_fetched, 2,
        "a re-pull checks the tag again"
    );

    let mut spec = h.spec("pulled", &["sh", "-c", "echo from-the-registry"]);
    spec.image = reference.clone();
    h.rt().start_container(&spec)?;
    let status = h.wait_exited(&spec.id, Duration::from_secs(20))?;
    assert!(
        matches!(status.state, ContainerState::Exited { exit_code: 0, .. }),
        "{:?}",
        status.state
    );
    let log = std::fs::read_to_string(&status.log_path)?;
    assert!(log.contains("from-the-registry"), "log: {log}");
    Ok(())
}

#[test]
fn basic_auth_refuses_missing_or_wrong_credentials_and_accepts_the_right_ones() -> anyhow::Result<()>
{
    let registry = Registry::start(true)?;
    let reference = registry.push_busybox(true)?;
    let h = Harness::empty()?;
    let puller = h.rt().puller(RegistrySettings::default());
    let rt = tokio_rt()?;

    let anonymous = rt.block_on(puller.pull(&reference, &RegistryAuth::Anonymous));
    assert!(
        matches!(anonymous, Err(PullError::Unauthorized { .. })),
        "{anonymous:?}"
    );
    let wrong = RegistryAuth::Basic {
        username: USER.into(),
        password: "not-it".into(),
    };
    let refused = rt.block_on(puller.pull(&reference, &wrong));
    assert!(
        matches!(refused, Err(PullError::Unauthorized { .. })),
        "{refused:?}"
    );
    assert!(h.rt().images().get(&reference)?.is_none());

    let right = RegistryAuth::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let info = rt.block_on(puller.pull(&reference, &right))?;
    assert_eq!(h.rt().images().get(&reference)?, Some(info));
    Ok(())
}

#[test]
fn a_corrupted_layer_blob_is_rejected_by_digest_and_never_enters_the_store() -> anyhow::Result<()> {
    let registry = Registry::start(false)?;
    let reference = registry.push_busybox(false)?;
    // The layer is by far the largest blob; flip bytes in its middle, keeping the length.
    let (layer_digest, layer_path) = registry
        .blob_files()?
        .into_iter()
        .max_by_key(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .ok_or_else(|| anyhow::anyhow!("registry stored no blobs"))?;
    let mut bytes = std::fs::read(&layer_path)?;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b = !*b;
    }
    std::fs::File::create(&layer_path)?.write_all(&bytes)?;

    let h = Harness::empty()?;
    let puller = h.rt().puller(RegistrySettings::default());
    let result = tokio_rt()?.block_on(puller.pull(&reference, &RegistryAuth::Anonymous));
    match &result {
        Err(PullError::DigestMismatch { .. }) => {}
        other => anyhow::bail!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!h.rt().images().has_blob(&layer_digest)?);
    assert!(h.rt().images().get(&reference)?.is_none());
    let leftovers: Vec<_> = std::fs::read_dir(h.root.join("images/tmp"))?.collect();
    assert!(
        leftovers.is_empty(),
        "download tmp files left: {leftovers:?}"
    );
    Ok(())
}

#[test]
fn concurrent_pulls_of_one_reference_share_one_download() -> anyhow::Result<()> {
    let registry = Registry::start(false)?;
    let reference = registry.push_busybox(false)?;
    let h = Harness::empty()?;
    let puller = h.rt().puller(RegistrySettings::default());
    let rt = tokio_rt()?;
    let (a, b, c) = rt.block_on(async {
        let auth = RegistryAuth::Anonymous;
        tokio::join!(
            puller.pull(&reference, &auth),
            puller.pull(&reference, &auth),
            puller.pull(&reference, &auth),
        )
    });
    let (a, b, c) = (a?, b?, c?);
    assert_eq!(a, b);
    assert_eq!(a, c);
    let image = h.rt().images().resolve(&reference)?;
    let stats = puller.stats();
    assert_eq!(stats.manifests_fetched, 1, "{stats:?}");
    assert_eq!(
        stats.blobs_downloaded,
        1 + image.layers.len() as u64,
        "{stats:?}"
    );
    Ok(())
}

#[test]
fn a_missing_tag_is_not_found_and_a_non_loopback_http_registry_is_not_used() -> anyhow::Result<()> {
    let registry = Registry::start(false)?;
    registry.push_busybox(false)?;
    let h = Harness::empty()?;
    let rt = tokio_rt()?;
    let puller = h.rt().puller(RegistrySettings::default());
    let missing = format!("{}/busybox:nope", registry.addr);
    let result = rt.block_on(puller.pull(&missing, &RegistryAuth::Anonymous));
    assert!(
        matches!(result, Err(PullError::NotFound { .. })),
        "{result:?}"
    );
    // Without the loopback default the client insists on https, which this registry lacks.
    let strict = h.rt().puller(RegistrySettings {
        insecure_registries: vec![],
    });
    let reference = format!("{}/busybox:test", registry.addr);
    let result = rt.block_on(strict.pull(&reference, &RegistryAuth::Anonymous));
    assert!(
        matches!(result, Err(PullError::Registry { .. })),
        "{result:?}"
    );
    Ok(())
}
