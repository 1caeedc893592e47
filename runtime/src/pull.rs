//! Pulling images from registries (distribution API v2, through `oci-client`) into the local
//! [`ImageStore`]: resolve the reference (choosing linux/amd64 from an index or manifest list),
//! download the config and layer blobs that are not stored yet, and hand each to the store,
//! which accepts it only if it hashes to its digest. Concurrent pulls of the same reference
//! (with the same credentials) in one process share one download. It must not unpack layers or
//! know about containers; unpacking happens when a container first uses the image.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::{Client, Reference};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::image_store::{normalize_reference, ImageInfo, ImageStore};
use crate::registry::{RegistryAuth, RegistrySettings};

/// Blobs of one image downloaded at the same time.
const CONCURRENT_BLOBS: usize = 3;
/// The only platform Capstan runs.
const PLATFORM: (&str, &str) = ("linux", "amd64");

/// Why a pull failed. Cloneable, because every waiter of a shared pull receives it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be parsed; fix the input.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused the credentials (or their absence); fix the credentials.
    #[error("pulling {reference}: unauthorized: {reason}")]
    Unauthorized {
        /// The reference pulled.
        reference: String,
        /// The registry's answer.
        reason: String,
    },
    /// The registry has no such repository, tag or digest.
    #[error("pulling {reference}: not found in the registry")]
    NotFound {
        /// The reference pulled.
        reference: String,
    },
    /// The image index lists no linux/amd64 image.
    #[error("pulling {reference}: no linux/amd64 image in the index")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
    },
    /// Downloaded content does not match its digest or size; nothing was stored. Retrying may
    /// help if the corruption happened in transit.
    #[error("pulling {reference}: blob {digest} rejected: {reason}")]
    DigestMismatch {
        /// The reference pulled.
        reference: String,
        /// The blob's expected digest.
        digest: String,
        /// What did not match.
        reason: String,
    },
    /// Talking to the registry failed (network, server error, protocol); retry later.
    #[error("pulling {reference}: {source}")]
    Registry {
        /// The reference pulled.
        reference: String,
        /// The client's error.
        #[source]
        source: Arc<OciDistributionError>,
    },
    /// The local store could not take the image (disk, malformed manifest).
    #[error("pulling {reference}: {source}")]
    Store {
        /// The reference pulled.
        reference: String,
        /// The store's error.
        #[source]
        source: Arc<crate::Error>,
    },
    /// The pull task died (panicked or the process is shutting down).
    #[error("pulling {reference}: pull task failed: {reason}")]
    Task {
        /// The reference pulled.
        reference: String,
        /// What happened to the task.
        reason: String,
    },
}

/// Result alias for pulls.
pub type Result<T> = std::result::Result<T, PullError>;

/// Progress of one pull, for display. May be dropped; never affects the pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest is known: manifest digest and the blobs (digest, size) it needs.
    Resolved {
        /// Manifest digest.
        digest: String,
        /// Config and layer blobs, config first.
        blobs: Vec<(String, u64)>,
    },
    /// A blob was already stored and is not downloaded.
    BlobCached {
        /// Blob digest.
        digest: String,
    },
    /// Bytes of a blob arrived.
    BlobProgress {
        /// Blob digest.
        digest: String,
        /// Bytes received so far.
        done: u64,
    },
    /// A blob was verified and stored.
    BlobStored {
        /// Blob digest.
        digest: String,
    },
}

/// Receives [`PullEvent`]s of a pull (called from the pulling task; keep it quick).
pub trait PullProgress: Send + Sync {
    /// Called for every event.
    fn event(&self, event: PullEvent);
}

/// Counters of network work done by a [`Puller`], for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Manifests (and indexes) fetched from registries.
    pub manifests_fetched: u64,
    /// Blob downloads started.
    pub blobs_downloaded: u64,
    /// Blob bytes received.
    pub bytes_received: u64,
}

type SharedPull = Shared<BoxFuture<'static, Result<ImageInfo>>>;

struct Inner {
    store: Arc<ImageStore>,
    settings: RegistrySettings,
    inflight: Mutex<HashMap<(String, RegistryAuth), SharedPull>>,
    manifests_fetched: AtomicU64,
    blobs_downloaded: AtomicU64,
    bytes_received: AtomicU64,
}

/// Pulls images from registries into an [`ImageStore`]. Cheap to clone; clones share
/// in-flight pulls and counters.
#[derive(Clone)]
pub struct Puller {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// A puller storing into `store`.
    pub fn new(store: Arc<ImageStore>, settings: RegistrySettings) -> Puller {
        Puller {
            inner: Arc::new(Inner {
                store,
                settings,
                inflight: Mutex::new(HashMap::new()),
                manifests_fetched: AtomicU64::new(0),
                blobs_downloaded: AtomicU64::new(0),
                bytes_received: AtomicU64::new(0),
            }),
        }
    }

    /// Pulls `reference` and names it by its normalised form (`busybox` → `busybox:latest`).
    /// Must run inside a tokio runtime.
    pub async fn pull(&self, reference: &str, auth: &RegistryAuth) -> Result<ImageInfo> {
        self.pull_with_progress(reference, auth, None).await
    }

    /// Like [`Puller::pull`], reporting progress to `progress` if this call starts the pull
    /// (a call joining a pull already in flight only waits for its result).
    pub async fn pull_with_progress(
        &self,
        reference: &str,
        auth: &RegistryAuth,
        progress: Option<Arc<dyn PullProgress>>,
    ) -> Result<ImageInfo> {
        let key = (normalize_reference(reference), auth.clone());
        let shared = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(pull) => {
                    tracing::debug!(reference, "joining pull in flight");
                    pull.clone()
                }
                None => {
                    let inner = Arc::clone(&self.inner);
                    let (reference, auth) = (reference.to_owned(), auth.clone());
                    let task_key = key.clone();
                    // A task, so the pull completes for the waiters even if its starter is
                    // cancelled. It removes its entry under the same lock we hold, hence only
                    // after the entry was inserted.
                    let task = tokio::spawn(async move {
                        let result = do_pull(&inner, &reference, &auth, progress).await;
                        inner
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&task_key);
                        result
                    });
                    let reference = key.0.clone();
                    let pull = async move {
                        task.await.unwrap_or_else(|e| {
                            Err(PullError::Task {
                                reference,
                                reason: e.to_string(),
                            })
                        })
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, pull.clone());
                    pull
                }
            }
        };
        shared.await
    }

    /// Network work done so far.
    pub fn stats(&self) -> PullStats {
        PullStats {
            manifests_fetched: self.inner.manifests_fetched.load(Ordering::Relaxed),
            blobs_downloaded: self.inner.blobs_downloaded.load(Ordering::Relaxed),
            bytes_received: self.inner.bytes_received.load(Ordering::Relaxed),
        }
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct IndexPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

/// If `manifest` is an image index or manifest list, the digest of its linux/amd64 entry
/// (`Some(None)` when it has none); `None` when it is a plain image manifest.
fn platform_manifest(manifest: &[u8]) -> Option<Option<String>> {
    let index: Index = serde_json::from_slice(manifest).ok()?;
    let is_index = index.manifests.is_some()
        || index.media_type.as_deref().is_some_and(|m| {
            m == OCI_IMAGE_INDEX_MEDIA_TYPE || m == IMAGE_MANIFEST_LIST_MEDIA_TYPE
        });
    if !is_index {
        return None;
    }
    Some(
        index
            .manifests
            .unwrap_or_default()
            .into_iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| (p.os.as_str(), p.architecture.as_str()) == PLATFORM)
            })
            .map(|e| e.digest),
    )
}

fn client_for(settings: &RegistrySettings, registry: &str) -> Client {
    let protocol = if settings.is_insecure(registry) {
        ClientProtocol::HttpsExcept(vec![registry.to_owned()])
    } else {
        ClientProtocol::Https
    };
    // A client per pull: oci-client keeps the first credentials it saw per registry, and a
    // pull must use exactly the credentials it was given.
    Client::new(ClientConfig {
        protocol,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    })
}

fn registry_error(reference: &str, e: OciDistributionError) -> PullError {
    match e {
        OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized {
            reference: reference.to_owned(),
            reason: format!("registry refused {url}"),
        },
        OciDistributionError::AuthenticationFailure(reason) => PullError::Unauthorized {
            reference: reference.to_owned(),
            reason,
        },
        OciDistributionError::ImageManifestNotFoundError(_) => PullError::NotFound {
            reference: reference.to_owned(),
        },
        OciDistributionError::ServerError { code: 404, .. } => PullError::NotFound {
            reference: reference.to_owned(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => PullError::Unauthorized {
            reference: reference.to_owned(),
            reason: message,
        },
        OciDistributionError::RegistryError { envelope, url } => {
            use oci_client::errors::OciErrorCode as C;
            let codes: Vec<&C> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    C::ManifestUnknown | C::NameUnknown | C::BlobUnknown | C::NotFound
                )
            }) {
                PullError::NotFound {
                    reference: reference.to_owned(),
                }
            } else if codes
                .iter()
                .any(|c| matches!(c, C::Unauthorized | C::Denied))
            {
                PullError::Unauthorized {
                    reference: reference.to_owned(),
                    reason: format!("registry refused {url}"),
                }
            } else {
                PullError::Registry {
                    reference: reference.to_owned(),
                    source: Arc::new(OciDistributionError::RegistryError { envelope, url }),
                }
            }
        }
        OciDistributionError::DigestError(d) => PullError::DigestMismatch {
            reference: reference.to_owned(),
            digest: String::new(),
            reason: d.to_string(),
        },
        other => PullError::Registry {
            reference: reference.to_owned(),
            source: Arc::new(other),
        },
    }
}

fn store_error(reference: &str) -> impl FnOnce(crate::Error) -> PullError + '_ {
    move |e| PullError::Store {
        reference: reference.to_owned(),
        source: Arc::new(e),
    }
}

async fn blocking<T: Send + 'static>(
    reference: &str,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PullError::Task {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })?
        .map_err(store_error(reference))
}

const ACCEPTED: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

async fn do_pull(
    inner: &Inner,
    reference: &str,
    auth: &RegistryAuth,
    progress: Option<Arc<dyn PullProgress>>,
) -> Result<ImageInfo> {
    let parsed: Reference =
        reference
            .parse()
            .map_err(|e: oci_client::ParseError| PullError::InvalidReference {
                reference: reference.to_owned(),
                reason: e.to_string(),
            })?;
    let registry = parsed.resolve_registry().to_owned();
    let client = client_for(&inner.settings, &registry);
    let oci_auth = auth.to_oci();
    tracing::info!(reference, %registry, "pulling image");

    inner.manifests_fetched.fetch_add(1, Ordering::Relaxed);
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(&parsed, &oci_auth, ACCEPTED)
        .await
        .map_err(|e| registry_error(reference, e))?;
    if let Some(pinned) = parsed.digest() {
        if digest != pinned {
            return Err(PullError::DigestMismatch {
                reference: reference.to_owned(),
                digest: pinned.to_owned(),
                reason: format!("registry answered with manifest {digest}"),
            });
        }
    }
    let mut image_ref = parsed.clone();
    if let Some(choice) = platform_manifest(&bytes) {
        let chosen = choice.ok_or_else(|| PullError::NoMatchingPlatform {
            reference: reference.to_owned(),
        })?;
        image_ref = Reference::with_digest(
            parsed.registry().to_owned(),
            parsed.repository().to_owned(),
            chosen.clone(),
        );
        inner.manifests_fetched.fetch_add(1, Ordering::Relaxed);
        (bytes, digest) = client
            .pull_manifest_raw(&image_ref, &oci_auth, ACCEPTED)
            .await
            .map_err(|e| registry_error(reference, e))?;
        if digest != chosen {
            return Err(PullError::DigestMismatch {
                reference: reference.to_owned(),
                digest: chosen,
                reason: format!("registry answered with manifest {digest}"),
            });
        }
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| PullError::Store {
        reference: reference.to_owned(),
        source: Arc::new(crate::Error::InvalidImage {
            what: digest.clone(),
            reason: format!("not an image manifest: {e}"),
        }),
    })?;
    let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .collect();
    if let Some(p) = &progress {
        p.event(PullEvent::Resolved {
            digest: digest.clone(),
            blobs: blobs.iter().map(|b| (b.digest.clone(), b.size)).collect(),
        });
    }

    let downloads: Vec<BoxFuture<'_, Result<()>>> = blobs
        .iter()
        .map(|blob| {
            fetch_blob(
                inner,
                &client,
                &image_ref,
                reference,
                blob,
                progress.clone(),
            )
            .boxed()
        })
        .collect();
    futures::stream::iter(downloads)
        .buffer_unordered(CONCURRENT_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;

    let store = Arc::clone(&inner.store);
    let name = normalize_reference(reference);
    let info = blocking(reference, move || {
        store.store_bytes(&digest, &bytes)?;
        store.record_image(&name, &digest)
    })
    .await?;
    tracing::info!(reference, digest = %info.digest, size = info.size, "image pulled");
    Ok(info)
}

/// Downloads `blob` unless it is already stored.
async fn fetch_blob(
    inner: &Inner,
    client: &Client,
    image_ref: &Reference,
    reference: &str,
    blob: &Descriptor,
    progress: Option<Arc<dyn PullProgress>>,
) -> Result<()> {
    let store = Arc::clone(&inner.store);
    let digest = blob.digest.clone();
    if blocking(reference, move || store.has_blob(&digest)).await? {
        if let Some(p) = &progress {
            p.event(PullEvent::BlobCached {
                digest: blob.digest.clone(),
            });
        }
        return Ok(());
    }
    download_blob(
        inner,
        client,
        image_ref,
        reference,
        blob,
        progress.as_deref(),
    )
    .await
}

/// Removes a download's tmp file unless it was moved into the store (also on cancellation).
struct TmpFile(PathBuf);

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn download_blob(
    inner: &Inner,
    client: &Client,
    image_ref: &Reference,
    reference: &str,
    blob: &Descriptor,
    progress: Option<&dyn PullProgress>,
) -> Result<()> {
    let mismatch = |reason: String| PullError::DigestMismatch {
        reference: reference.to_owned(),
        digest: blob.digest.clone(),
        reason,
    };
    let io_error = |e: std::io::Error| PullError::Store {
        reference: reference.to_owned(),
        source: Arc::new(crate::Error::Io {
            op: "write download",
            path: PathBuf::new(),
            source: e,
        }),
    };
    let path = inner
        .store
        .download_path(&blob.digest)
        .map_err(store_error(reference))?;
    let tmp = TmpFile(path);
    inner.blobs_downloaded.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(reference, blob = %blob.digest, size = blob.size, media_type = %blob.media_type, "downloading blob");
    let mut stream = client
        .pull_blob_stream(image_ref, blob.digest.as_str())
        .await
        .map_err(|e| match registry_error(reference, e) {
            PullError::DigestMismatch { reason, .. } => mismatch(reason),
            other => other,
        })?;
    let mut file = tokio::fs::File::create(&tmp.0).await.map_err(io_error)?;
    let mut done = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            // oci-client verifies the stream against the digest and fails its last read.
            let digest_failure = e
                .get_ref()
                .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
            if digest_failure {
                mismatch(e.to_string())
            } else {
                PullError::Registry {
                    reference: reference.to_owned(),
                    source: Arc::new(OciDistributionError::IoError(e)),
                }
            }
        })?;
        file.write_all(&chunk).await.map_err(io_error)?;
        done += chunk.len() as u64;
        inner
            .bytes_received
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if let Some(p) = progress {
            p.event(PullEvent::BlobProgress {
                digest: blob.digest.clone(),
                done,
            });
        }
    }
    file.flush().await.map_err(io_error)?;
    drop(file);
    if blob.size != 0 && done != blob.size {
        return Err(mismatch(format!(
            "received {done} bytes, manifest says {}",
            blob.size
        )));
    }
    let store = Arc::clone(&inner.store);
    let (digest, path) = (blob.digest.clone(), tmp.0.clone());
    blocking(reference, move || store.ingest_file(&digest, &path))
        .await
        .map_err(|e| match e {
            PullError::Store { source, .. }
                if matches!(*source, crate::Error::InvalidImage { .. }) =>
            {
                mismatch(source.to_string())
            }
            other => other,
        })?;
    if let Some(p) = progress {
        p.event(PullEvent::BlobStored {
            digest: blob.digest.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_resolves_to_its_linux_amd64_manifest() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[
              {"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}},
              {"digest":"sha256:win","platform":{"os":"windows","architecture":"amd64"}},
              {"digest":"sha256:amd","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert_eq!(platform_manifest(index), Some(Some("sha256:amd".into())));
    }

    #[test]
    fn an_index_without_linux_amd64_has_no_choice_and_a_manifest_is_not_an_index() {
        let index = br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests":[{"digest":"sha256:arm","platform":{"os":"linux","architecture":"arm64"}}]}"#;
        assert_eq!(platform_manifest(index), Some(None));
        let manifest =
            br#"{"schemaVersion":2,"config":{"digest":"sha256:c","size":1},"layers":[]}"#;
        assert_eq!(platform_manifest(manifest), None);
    }
}
