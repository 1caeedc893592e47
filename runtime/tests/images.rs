//! The image store against real archives: the busybox builder's output imports, lists and
//! resolves; corrupted blobs and unknown references are refused with typed errors.

#![allow(missing_docs)]

use std::path::Path;

use runtime::{Error, ImageStore};

#[test]
fn busybox_archive_imports_lists_resolves_and_unpacks() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("bb.tar");
    runtime::busybox::build_image_archive(Path::new("/bin/busybox"), &archive, "busybox")?;
    let store = ImageStore::open(dir.path())?;
    assert_eq!(store.import_archive(&archive, None)?, ["busybox:latest"]);
    assert_eq!(
        store.import_archive(&archive, Some("tools"))?,
        ["tools:latest"]
    );

    let list = store.list()?;
    assert_eq!(
        list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["busybox:latest", "tools:latest"]
    );
    assert_eq!(list[0].digest, list[1].digest);
    assert!(list[0].size > 500_000, "busybox is big: {}", list[0].size);

    let image = store.resolve("busybox")?;
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(store.resolve(&image.digest)?.digest, image.digest);

    let dirs = store.layer_dirs(&image)?;
    assert_eq!(dirs.len(), 1);
    assert!(dirs[0].join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(dirs[0].join("bin/sh"))?,
        Path::new("busybox")
    );
    assert_eq!(store.layer_dirs(&image)?, dirs, "unpacked once, reused");

    match store.resolve("nginx:1.0") {
        Err(Error::ImageNotFound { reference }) => assert_eq!(reference, "nginx:1.0"),
        other => anyhow::bail!("expected ImageNotFound, got {other:?}"),
    }
    Ok(())
}

#[test]
fn blob_whose_content_does_not_match_its_digest_is_rejected() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("bad.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive)?);
    let mut add = |path: &str, data: &[u8]| -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, path, data)?;
        Ok(())
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add(
        &format!("blobs/sha256/{}", "0".repeat(64)),
        b"not what the digest says",
    )?;
    add("index.json", br#"{"schemaVersion":2,"manifests":[]}"#)?;
    b.finish()?;
    drop(b);
    let store = ImageStore::open(dir.path())?;
    assert!(matches!(
        store.import_archive(&archive, None),
        Err(Error::InvalidImage { .. })
    ));
    assert!(store.list()?.is_empty());
    Ok(())
}
