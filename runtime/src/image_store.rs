//! The local image store: content-addressed blobs (`<root>/images/blobs/sha256/<hex>`, digests
//! verified on import), a name → manifest-digest index (`<root>/images/refs.json`), and unpacked
//! layers shared by all containers (`<root>/layers/<hex>/`, unpacked once, atomically).
//! It owns importing OCI image layout archives, accepting verified downloads from the puller,
//! naming and resolving references; it must not mount anything, know about containers or talk
//! to registries.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::layers;

const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One named image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Normalised reference, e.g. `busybox:latest`.
    pub name: String,
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Sum of the config and compressed layer sizes, in bytes.
    pub size: u64,
}

/// The runtime-relevant parts of an image's config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// Entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// Cmd (may be empty).
    pub cmd: Vec<String>,
    /// Env as `KEY=value` strings.
    pub env: Vec<String>,
    /// Working dir, if set.
    pub working_dir: Option<String>,
}

/// A resolved image: manifest digest, config and ordered (bottom first) layer digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The reference it was resolved from (normalised).
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Runtime config.
    pub config: ImageConfig,
    /// Layer blob digests, bottom layer first.
    pub layers: Vec<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ConfigSection>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigSection {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

/// Normalises an image reference: a reference without tag or digest gets `:latest`.
pub fn normalize_reference(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') || last.contains('@') || reference.starts_with("sha256:") {
        reference.to_owned()
    } else {
        format!("{reference}:latest")
    }
}

/// Splits `sha256:<hex>` into the hex part, rejecting other algorithms and bad hex.
fn sha256_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(hex)
        }
        _ => Err(Error::InvalidImage {
            what: digest.to_owned(),
            reason: "not a sha256 digest".into(),
        }),
    }
}

/// The content-addressed image store under a runtime root.
#[derive(Debug)]
pub struct ImageStore {
    images: PathBuf,
    layers: PathBuf,
    // Serialises ref-index updates and layer unpacking within this process.
    lock: Mutex<()>,
}

impl ImageStore {
    /// Opens (creating directories if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<ImageStore> {
        let images = root.join("images");
        let layers = root.join("layers");
        for dir in [
            images.join("blobs/sha256"),
            images.join("tmp"),
            layers.clone(),
        ] {
            fs::create_dir_all(&dir).map_err(Error::io("create dir", &dir))?;
        }
        Ok(ImageStore {
            images,
            layers,
            lock: Mutex::new(()),
        })
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.images.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    fn refs_path(&self) -> PathBuf {
        self.images.join("refs.json")
    }

    fn read_refs(&self) -> Result<BTreeMap<String, String>> {
        let path = self.refs_path();
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io("read refs", path)(e)),
        }
    }

    fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<()> {
        let path = self.refs_path();
        let bytes = serde_json::to_vec_pretty(refs).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, digest: &str) -> Result<T> {
        let path = self.blob_path(digest)?;
        let bytes = fs::read(&path).map_err(Error::io("read blob", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
    }

    /// Imports an OCI image layout tar (`oci-layout`, `index.json`, `blobs/`), verifying every
    /// blob's digest, and names each manifest of `index.json` by `name` if given, else by its
    /// `org.opencontainers.image.ref.name` annotation. Returns the names recorded.
    pub fn import_archive(&self, tar_path: &Path, name: Option<&str>) -> Result<Vec<String>> {
        let file = File::open(tar_path).map_err(Error::io("open image archive", tar_path))?;
        let mut archive = tar::Archive::new(layers::decompressed(file)?);
        let mut index_bytes = None;
        let mut saw_layout = false;
        let entries = archive
            .entries()
            .map_err(Error::io("read image archive", tar_path))?;
        for entry in entries {
            let mut entry = entry.map_err(Error::io("read image archive", tar_path))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry
                .path()
                .map_err(Error::io("archive entry path", tar_path))?;
            let parts: Vec<String> = path
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                    _ => None,
                })
                .collect();
            match parts
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                ["index.json"] => {
                    let mut buf = Vec::new();
                    entry
                        .read_to_end(&mut buf)
                        .map_err(Error::io("read index.json", tar_path))?;
                    index_bytes = Some(buf);
                }
                ["oci-layout"] => saw_layout = true,
                ["blobs", "sha256", hex] => {
                    let digest = format!("sha256:{hex}");
                    self.store_blob(&digest, &mut entry)?;
                }
                _ => {}
            }
        }
        let invalid = |reason: &str| Error::InvalidImage {
            what: tar_path.display().to_string(),
            reason: reason.into(),
        };
        if !saw_layout {
            return Err(invalid("missing oci-layout file"));
        }
        let index_bytes = index_bytes.ok_or_else(|| invalid("missing index.json"))?;
        let index: Index = serde_json::from_slice(&index_bytes).map_err(|source| Error::Json {
            path: tar_path.join("index.json"),
            source,
        })?;

        let mut named = Vec::new();
        for desc in &index.manifests {
            if desc.media_type.contains("index") || desc.media_type.contains("manifest.list") {
                tracing::warn!(digest = %desc.digest, "skipping nested image index");
                continue;
            }
            self.check_manifest(&desc.digest)?;
            let image_name = match (name, desc.annotations.get(REF_NAME_ANNOTATION)) {
                (Some(n), _) => normalize_reference(n),
                (None, Some(n)) => normalize_reference(n),
                (None, None) => desc.digest.clone(),
            };
            named.push((image_name, desc.digest.clone()));
        }
        if named.is_empty() {
            return Err(invalid("index.json lists no image manifest"));
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut refs = self.read_refs()?;
        for (n, d) in &named {
            refs.insert(n.clone(), d.clone());
        }
        self.write_refs(&refs)?;
        tracing::info!(archive = %tar_path.display(), images = ?named, "image archive imported");
        Ok(named.into_iter().map(|(n, _)| n).collect())
    }

    /// Copies `reader` into the blob store, hashing on the way; rejects a digest mismatch.
    fn store_blob(&self, digest: &str, reader: &mut impl Read) -> Result<()> {
        let dest = self.blob_path(digest)?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = self.images.join("tmp").join(format!(
            "{}-{}-{n}",
            sha256_hex(digest)?,
            std::process::id()
        ));
        let mut out = File::create(&tmp).map_err(Error::io("create blob", &tmp))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(Error::io("read blob", &tmp))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(Error::io("write blob", &tmp))?;
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            let _ = fs::remove_file(&tmp);
            return Err(Error::InvalidImage {
                what: digest.to_owned(),
                reason: format!("content hashes to {actual}"),
            });
        }
        out.sync_all().map_err(Error::io("sync blob", &tmp))?;
        fs::rename(&tmp, &dest).map_err(Error::io("rename blob", &dest))
    }

    /// True if the blob `digest` is in the store (so a pull need not download it).
    pub fn has_blob(&self, digest: &str) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// A fresh, unique path in the store's tmp dir for downloading `digest` into; hand the
    /// file to [`ImageStore::ingest_file`] when complete.
    pub(crate) fn download_path(&self, digest: &str) -> Result<PathBuf> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(self.images.join("tmp").join(format!(
            "dl-{}-{}-{n}",
            sha256_hex(digest)?,
            std::process::id()
        )))
    }

    /// Moves a downloaded file into the blob store after checking it hashes to `digest`; the
    /// file is removed on a mismatch, so unverified content never enters the store.
    pub(crate) fn ingest_file(&self, digest: &str, tmp: &Path) -> Result<()> {
        let dest = self.blob_path(digest)?;
        let verified = (|| {
            let mut file = File::open(tmp).map_err(Error::io("open download", tmp))?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(Error::io("read download", tmp))?;
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(Error::InvalidImage {
                    what: digest.to_owned(),
                    reason: format!("content hashes to {actual}"),
                });
            }
            file.sync_all().map_err(Error::io("sync blob", tmp))?;
            fs::rename(tmp, &dest).map_err(Error::io("rename blob", &dest))
        })();
        if verified.is_err() {
            let _ = fs::remove_file(tmp);
        }
        verified
    }

    /// Stores an in-memory blob (a manifest) after checking it hashes to `digest`.
    pub(crate) fn store_bytes(&self, digest: &str, mut bytes: &[u8]) -> Result<()> {
        if self.has_blob(digest)? {
            return Ok(());
        }
        self.store_blob(digest, &mut bytes)
    }

    /// Names the manifest `digest` (whose config and layers must all be stored) `name`.
    pub fn record_image(&self, name: &str, digest: &str) -> Result<ImageInfo> {
        self.check_manifest(digest)?;
        let name = normalize_reference(name);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut refs = self.read_refs()?;
        refs.insert(name.clone(), digest.to_owned());
        self.write_refs(&refs)?;
        drop(_guard);
        self.info_of(name, digest.to_owned())
    }

    fn info_of(&self, name: String, digest: String) -> Result<ImageInfo> {
        let manifest: Manifest = self.read_json(&digest)?;
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        Ok(ImageInfo { name, digest, size })
    }

    /// The named image `reference` resolves to, or `None` if it is not in the store.
    pub fn get(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.resolve(reference) {
            Ok(image) => self.info_of(image.name, image.digest).map(Some),
            Err(Error::ImageNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives the image `source` resolves to the additional name `target`.
    pub fn tag(&self, source: &str, target: &str) -> Result<ImageInfo> {
        let image = self.resolve(source)?;
        self.record_image(target, &image.digest)
    }

    /// Removes the name `reference` (normalised) from the store and returns what it named.
    /// Blobs and unpacked layers stay (containers may use them); nothing collects them yet.
    pub fn remove(&self, reference: &str) -> Result<ImageInfo> {
        let name = normalize_reference(reference);
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut refs = self.read_refs()?;
        let key = if refs.contains_key(&name) {
            name
        } else {
            reference.to_owned()
        };
        let digest = refs.remove(&key).ok_or_else(|| Error::ImageNotFound {
            reference: reference.to_owned(),
        })?;
        self.write_refs(&refs)?;
        drop(_guard);
        self.info_of(key, digest)
    }

    fn check_manifest(&self, digest: &str) -> Result<()> {
        let manifest: Manifest = self.read_json(digest)?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !self.blob_path(&d.digest)?.exists() {
                return Err(Error::InvalidImage {
                    what: digest.to_owned(),
                    reason: format!("blob {} missing", d.digest),
                });
            }
        }
        Ok(())
    }

    /// Lists named images.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let refs = self.read_refs()?;
        let mut out = Vec::new();
        for (name, digest) in refs {
            out.push(self.info_of(name, digest)?);
        }
        Ok(out)
    }

    /// Resolves a reference (name, normalised name, or manifest digest) to an image.
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let refs = self.read_refs()?;
        let name = normalize_reference(reference);
        let digest = match refs.get(&name).or_else(|| refs.get(reference)) {
            Some(d) => d.clone(),
            None if reference.starts_with("sha256:") && self.blob_path(reference)?.exists() => {
                reference.to_owned()
            }
            None => {
                return Err(Error::ImageNotFound {
                    reference: reference.to_owned(),
                })
            }
        };
        let manifest: Manifest = self.read_json(&digest)?;
        let config: ConfigFile = self.read_json(&manifest.config.digest)?;
        let section = config.config.unwrap_or_default();
        Ok(Image {
            name,
            digest,
            config: ImageConfig {
                entrypoint: section.entrypoint.unwrap_or_default(),
                cmd: section.cmd.unwrap_or_default(),
                env: section.env.unwrap_or_default(),
                working_dir: section.working_dir.filter(|w| !w.is_empty()),
            },
            layers: manifest.layers.into_iter().map(|l| l.digest).collect(),
        })
    }

    /// Returns the unpacked directory of each layer (bottom first), unpacking any layer not yet
    /// unpacked into a temporary directory that is renamed into place when complete.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut dirs = Vec::new();
        for digest in &image.layers {
            let hex = sha256_hex(digest)?;
            let dir = self.layers.join(hex);
            if !dir.is_dir() {
                let tmp = self
                    .layers
                    .join(format!(".tmp-{hex}-{}", std::process::id()));
                if tmp.exists() {
                    fs::remove_dir_all(&tmp).map_err(Error::io("remove stale layer tmp", &tmp))?;
                }
                fs::create_dir_all(&tmp).map_err(Error::io("create layer tmp", &tmp))?;
                let blob = self.blob_path(digest)?;
                let file = File::open(&blob).map_err(Error::io("open layer blob", &blob))?;
                let result = layers::unpack_layer(layers::decompressed(file)?, &tmp)
                    .and_then(|()| fs::rename(&tmp, &dir).map_err(Error::io("rename layer", &dir)));
                if let Err(e) = result {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
                tracing::debug!(layer = %digest, "layer unpacked");
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }
}

/// Writes a file atomically: unique tmp file in the same directory, fsync, rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
    file.write_all(bytes).map_err(Error::io("write", &tmp))?;
    file.sync_all().map_err(Error::io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("rename", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_without_tag_get_latest() {
        assert_eq!(normalize_reference("busybox"), "busybox:latest");
        assert_eq!(normalize_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            normalize_reference("localhost:5000/busybox"),
            "localhost:5000/busybox:latest"
        );
        assert_eq!(
            normalize_reference("busybox@sha256:ab"),
            "busybox@sha256:ab"
        );
    }

    #[test]
    fn only_lowercase_sha256_digests_are_accepted() {
        assert!(sha256_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(sha256_hex(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(sha256_hex("sha256:../../etc").is_err());
        assert!(sha256_hex(&format!("sha512:{}", "a".repeat(64))).is_err());
    }
}
