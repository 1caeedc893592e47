//! etcd's `Maintenance.Snapshot` on both ends: the server streams a [`Store::backup`] in
//! chunks followed by its SHA-256 (etcd's wire protocol, so `etcdctl snapshot save` works), and
//! [`save_snapshot`] is the client `capstan store snapshot save` uses: it writes the stream to
//! `<file>.part`, fsyncs it, verifies the checksum (and the backup format, if it is a Capstan
//! backup) and only then renames it into place, so a failed transfer never leaves a file that
//! looks complete.
//!
//! Owns only the transport; the backup format and restore are in `crate::backup`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Status};

use super::pb;
use super::{header, status};
use crate::backup::{verify_backup, verify_checksum, BackupError, BackupInfo, CHECKSUM_LEN};
use crate::store::Store;

/// Bytes per response message (etcd's `snapshotSendBufferSize`).
const CHUNK: usize = 32 * 1024;
/// How long [`save_snapshot`] waits for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The gRPC method etcd clients call.
const SNAPSHOT_METHOD: &str = "/etcdserverpb.Maintenance/Snapshot";

/// The response stream of `Maintenance.Snapshot`.
pub(crate) type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

/// Serves one `Maintenance.Snapshot` call: takes a backup of `store` and streams it as etcd
/// does (data chunks with the bytes still to come, then the checksum in a last message).
pub(crate) async fn serve(store: &Store) -> Result<SnapshotStream, Status> {
    let taker = store.clone();
    let backup = tokio::task::spawn_blocking(move || taker.backup())
        .await
        .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
        .map_err(|e| match e {
            BackupError::Store(e) => status(e),
            other => Status::internal(other.to_string()),
        })?;
    let header = header(store, backup.info.revision);
    let bytes = backup.bytes;
    let body = bytes.len().saturating_sub(CHECKSUM_LEN);
    let mut sent = 0usize;
    let chunks = std::iter::from_fn(move || {
        if sent >= bytes.len() {
            return None;
        }
        // The checksum travels alone, in the last message, with nothing remaining.
        let end = if sent < body {
            (sent + CHUNK).min(body)
        } else {
            bytes.len()
        };
        let blob = bytes[sent..end].to_vec();
        sent = end;
        Some(Ok(pb::SnapshotResponse {
            header,
            remaining_bytes: body.saturating_sub(sent) as u64,
            blob,
        }))
    });
    Ok(Box::pin(futures::stream::iter(chunks)))
}

/// Why [`save_snapshot`] failed; nothing was left at the target path.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The endpoint could not be reached; check the URL and that the member runs.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        reason: String,
    },
    /// The member refused or broke off the snapshot stream; retry.
    #[error("snapshot from {endpoint} failed: {status}")]
    Rpc {
        /// The endpoint.
        endpoint: String,
        /// The gRPC status.
        status: Box<Status>,
    },
    /// What arrived is not a complete snapshot.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What [`save_snapshot`] wrote.
#[derive(Clone, Debug)]
pub struct SavedSnapshot {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The revision in the response header (the backup's revision for a Capstan member).
    pub revision: i64,
    /// The backup's header; `None` for a snapshot from a real etcd (a bolt database).
    pub info: Option<BackupInfo>,
}

/// Streams a snapshot from the etcd API at `endpoint` (`http://host:port` or `host:port`)
/// into `path`, atomically: `<path>.part`, fsync, verify the checksum, rename, fsync the
/// directory.
pub async fn save_snapshot(endpoint: &str, path: &Path) -> Result<SavedSnapshot, SnapshotError> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let connect = |reason: String| SnapshotError::Connect {
        endpoint: url.clone(),
        reason,
    };
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| connect(e.to_string()))?;
    let rpc = |status: Status| SnapshotError::Rpc {
        endpoint: url.clone(),
        status: Box::new(status),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| connect(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<pb::SnapshotRequest, pb::SnapshotResponse>::default();
    let method = tonic::codegen::http::uri::PathAndQuery::from_static(SNAPSHOT_METHOD);
    let mut stream = grpc
        .server_streaming(Request::new(pb::SnapshotRequest {}), method, codec)
        .await
        .map_err(rpc)?
        .into_inner();

    let part = part_path(path);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    let mut file = std::fs::File::create(&part).map_err(io(&part))?;
    let received = async {
        let mut revision = 0;
        let mut size = 0u64;
        while let Some(message) = stream.message().await.map_err(rpc)? {
            if let Some(h) = &message.header {
                revision = revision.max(h.revision);
            }
            file.write_all(&message.blob).map_err(io(&part))?;
            size += message.blob.len() as u64;
        }
        file.sync_all().map_err(io(&part))?;
        let bytes = std::fs::read(&part).map_err(io(&part))?;
        let info = match verify_backup(&bytes) {
            Ok(info) => Some(info),
            // Not a Capstan backup, but a whole one (an etcd snapshot): keep it as etcdctl does.
            Err(BackupError::Format(_)) if verify_checksum(&bytes).is_ok() => None,
            Err(e) => return Err(e.into()),
        };
        Ok::<_, SnapshotError>((revision, size, info))
    }
    .await;
    let (revision, size, info) = match received {
        Ok(received) => received,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, path).map_err(io(path))?;
    sync_parent(path).map_err(io(path))?;
    Ok(SavedSnapshot {
        path: path.to_path_buf(),
        size,
        revision: info.as_ref().map_or(revision, |i| i.revision),
        info,
    })
}

/// `<path>.part`, where the snapshot is written before it is complete (as etcdctl does).
fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// Makes the rename durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}
