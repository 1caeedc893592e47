//! Builds a tiny single-layer OCI image layout tar around a static busybox binary, so a node
//! can run containers without any registry. Owns the image's contents (applet links, passwd,
//! group, tmp) and its reproducible encoding (fixed mtimes, so the same binary gives the same
//! digests). It must not import the image; the store does that.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Applets linked to `/bin/busybox` in the image.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "ls", "sleep", "env", "true", "false", "id", "hostname", "ps",
    "wget", "nc", "ip", "mkdir", "rm", "cp", "mv", "ln", "touch", "grep", "sed", "head", "tail",
    "wc", "date", "kill", "mount", "umount", "ping", "ifconfig", "printf", "test", "[", "pwd",
    "uname", "whoami", "chmod", "chown", "find", "xargs", "sort", "uniq", "tr", "cut", "awk", "vi",
    "top", "free", "df", "du", "dd", "yes", "seq", "nslookup", "httpd", "stat", "readlink",
    "basename", "dirname", "stty", "tee", "timeout", "usleep", "watch", "which",
];

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const MTIME: u64 = 1_700_000_000;

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Builds the uncompressed layer tar.
fn layer_tar(busybox: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin/", 0o755),
        ("dev/", 0o755),
        ("etc/", 0o755),
        ("home/", 0o755),
        ("proc/", 0o555),
        ("root/", 0o700),
        ("sys/", 0o555),
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/bin/", 0o755),
        ("var/", 0o755),
    ] {
        b.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            std::io::empty(),
        )?;
    }
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64),
        "bin/busybox",
        busybox,
    )?;
    let mut seen = std::collections::BTreeSet::new();
    for applet in APPLETS.iter().filter(|a| seen.insert(**a)) {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (path, text) in [("etc/passwd", PASSWD), ("etc/group", GROUP)] {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, text.len() as u64),
            path,
            text.as_bytes(),
        )?;
    }
    b.into_inner()
}

/// Builds an OCI image layout tar at `out_tar` holding one image named `reference`
/// (annotation `org.opencontainers.image.ref.name`), whose single gzip layer contains
/// `busybox_bin` as `/bin/busybox` plus applet links; config `Cmd ["sh"]` and a standard `PATH`.
pub fn build_image_archive(busybox_bin: &Path, out_tar: &Path, reference: &str) -> Result<()> {
    let busybox = fs::read(busybox_bin).map_err(Error::io("read busybox", busybox_bin))?;
    let io_err = Error::io("build busybox image", out_tar);
    let layer = layer_tar(&busybox).map_err(io_err)?;
    let diff_id = sha256_digest(&layer);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)
        .and_then(|()| gz.flush())
        .map_err(Error::io("compress layer", out_tar))?;
    let layer_gz = gz.finish().map_err(Error::io("compress layer", out_tar))?;
    let layer_digest = sha256_digest(&layer_gz);

    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": { "Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config = config.to_string().into_bytes();
    let config_digest = sha256_digest(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest, "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest, "size": layer_gz.len(),
        }],
    });
    let manifest = manifest.to_string().into_bytes();
    let manifest_digest = sha256_digest(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": reference },
        }],
    });
    let index = index.to_string().into_bytes();
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;

    let file = File::create(out_tar).map_err(Error::io("create image archive", out_tar))?;
    let mut b = tar::Builder::new(file);
    let mut add = |path: String, data: &[u8]| {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, data.len() as u64),
            path,
            data,
        )
    };
    let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    add("oci-layout".into(), layout)
        .and_then(|()| add(blob(&config_digest), &config))
        .and_then(|()| add(blob(&layer_digest), &layer_gz))
        .and_then(|()| add(blob(&manifest_digest), &manifest))
        .and_then(|()| add("index.json".into(), &index))
        .map_err(Error::io("write image archive", out_tar))?;
    let file = b
        .into_inner()
        .map_err(Error::io("finish image archive", out_tar))?;
    file.sync_all()
        .map_err(Error::io("sync image archive", out_tar))
}
