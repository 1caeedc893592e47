//! Backups of the whole store, as etcd's `snapshot save` and `etcdutl snapshot restore` make
//! and use them: a consistent point-in-time copy of all MVCC state (key-values, history back to
//! the compaction revision, leases, the revision and the compaction revision), and the restore
//! that turns one into the data directory of a new member.
//!
//! File format (version 1), all integers little-endian:
//!
//! ```text
//! "CAPSTNBK" | u32 format version | u64 n | n bytes header (bincode) | u64 m | m bytes payload
//! | zero padding to a multiple of 512 bytes | SHA-256 of everything before (32 bytes)
//! ```
//!
//! The payload is exactly what a Raft snapshot of the state machine carries. Like etcd's
//! snapshot, the body is a multiple of 512 bytes followed by its SHA-256, so `etcdctl snapshot
//! save` accepts the stream too. A restored member starts as if it had installed a snapshot at
//! the very first log position with the new cluster's membership, so every member restored
//! from the same file with the same `--initial-cluster` holds the same Raft state and they
//! form the cluster without anyone initialising it.
//!
//! This module owns the format and the restore; streaming a backup over the etcd API lives in
//! `etcd::snapshot`.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use openraft::storage::RaftStateMachine;
use openraft::{LogId, Membership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cluster::ClusterConfig;
use crate::codec;
use crate::error::Error;
use crate::member::Member;
use crate::state_machine::StateMachineStore;
use crate::store::Store;
use crate::types::{NodeId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"CAPSTNBK";
const FORMAT_VERSION: u32 = 1;
/// The body is padded to this size, as etcd's (bolt) snapshots are page-aligned.
const ALIGN: usize = 512;
/// Length of the SHA-256 checksum that ends a backup.
pub const CHECKSUM_LEN: usize = 32;

/// Why a backup could not be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file's checksum does not match its content: it is truncated or damaged.
    #[error("backup checksum mismatch: the file is truncated or damaged (expected {expected}, computed {actual})")]
    Checksum {
        /// The checksum at the end of the file (hex).
        expected: String,
        /// The checksum of the content (hex).
        actual: String,
    },
    /// The file is not a Capstan store backup of a version this build reads.
    #[error("not a Capstan store backup: {0}")]
    Format(String),
    /// Restoring needs a new, empty data directory.
    #[error("data dir {path} is not empty; restore into a new directory")]
    DataDirNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The restore flags do not describe a member of the new cluster.
    #[error("{0}")]
    InvalidConfig(String),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed while taking or restoring the backup.
    #[error(transparent)]
    Store(#[from] Error),
}

/// What a backup holds, from its header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The store revision the backup was taken at.
    pub revision: i64,
    /// The compaction revision at that time (history before it is not in the backup).
    pub compact_revision: i64,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The member it was taken from.
    pub member: NodeId,
}

/// A backup taken by [`Store::backup`]: its header and the complete file content, checksum
/// included.
#[derive(Clone, Debug)]
pub struct Backup {
    /// What the backup holds.
    pub info: BackupInfo,
    /// The file content, as written by `capstan store snapshot save`.
    pub bytes: Vec<u8>,
}

impl Store {
    /// A consistent point-in-time copy of this member's whole state (key-values, history,
    /// leases, revision, compaction revision), read from its applied state without asking the
    /// leader, as etcd's snapshot does. It is built in memory, like a Raft snapshot, and takes
    /// the state lock only while copying, so writes wait no longer than that.
    pub fn backup(&self) -> Result<Backup, BackupError> {
        self.check_open()?;
        let (revision, compact_revision, payload) = self.inner.sm.backup_payload()?;
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let info = BackupInfo {
            revision,
            compact_revision,
            created_unix_ms,
            member: self.node_id(),
        };
        let bytes = encode(&info, &payload)?;
        tracing::info!(
            node = self.node_id(),
            resource_version = revision,
            compact_revision,
            bytes = bytes.len(),
            "backup taken"
        );
        Ok(Backup { info, bytes })
    }
}

/// The backup file for `info` and the state machine `payload`.
fn encode(info: &BackupInfo, payload: &[u8]) -> Result<Vec<u8>, BackupError> {
    let header = codec::encode(info)?;
    let mut out = Vec::with_capacity(payload.len() + header.len() + ALIGN + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    for part in [&header[..], payload] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.resize(out.len().div_ceil(ALIGN) * ALIGN, 0);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Checks that `bytes` ends with the SHA-256 of what precedes it (as etcd's snapshot files
/// do) and returns the body.
pub fn verify_checksum(bytes: &[u8]) -> Result<&[u8], BackupError> {
    let Some(split) = bytes.len().checked_sub(CHECKSUM_LEN) else {
        return Err(BackupError::Format(format!(
            "{} bytes is too short to hold a checksum",
            bytes.len()
        )));
    };
    let (body, expected) = bytes.split_at(split);
    let actual = Sha256::digest(body);
    if actual.as_slice() != expected {
        return Err(BackupError::Checksum {
            expected: hex(expected),
            actual: hex(&actual),
        });
    }
    Ok(body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies a backup's checksum and format and returns its header.
pub fn verify_backup(bytes: &[u8]) -> Result<BackupInfo, BackupError> {
    Ok(parse(bytes)?.0)
}

/// The header and the state machine payload of a verified backup.
fn parse(bytes: &[u8]) -> Result<(BackupInfo, &[u8]), BackupError> {
    let body = verify_checksum(bytes)?;
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
        BackupError::Format("no Capstan backup header (an etcd snapshot?)".into())
    })?;
    let (version, rest) = take::<4>(rest)?;
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(BackupError::Format(format!(
            "format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    let (header, rest) = take_part(rest)?;
    let (payload, padding) = take_part(rest)?;
    if padding.len() >= ALIGN || padding.iter().any(|b| *b != 0) {
        return Err(BackupError::Format(
            "unexpected bytes after the payload".into(),
        ));
    }
    let info: BackupInfo = codec::decode(header)?;
    Ok((info, payload))
}

fn take<const N: usize>(bytes: &[u8]) -> Result<([u8; N], &[u8]), BackupError> {
    if bytes.len() < N {
        return Err(BackupError::Format("truncated".into()));
    }
    let (head, rest) = bytes.split_at(N);
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok((out, rest))
}

fn take_part(bytes: &[u8]) -> Result<(&[u8], &[u8]), BackupError> {
    let (len, rest) = take::<8>(bytes)?;
    let len = usize::try_from(u64::from_le_bytes(len))
        .ok()
        .filter(|len| *len <= rest.len())
        .ok_or_else(|| BackupError::Format("a length runs past the end".into()))?;
    Ok(rest.split_at(len))
}

/// The membership every member restored for `cfg`'s initial cluster starts with: all initial
/// members as voters, known by name and peer URL. It must not depend on which member restores
/// it, so that all of them hold the same first log entry.
fn restored_membership(cfg: &ClusterConfig) -> Membership<NodeId, Member> {
    let nodes: std::collections::BTreeMap<NodeId, Member> = cfg
        .initial_cluster
        .iter()
        .map(|m| {
            let member = Member {
                name: m.name.clone(),
                ..Member::new(m.peer_url.clone())
            };
            (m.id, member)
        })
        .collect();
    let voters = nodes.keys().copied().collect();
    Membership::new(vec![voters], nodes)
}

/// Creates the data directory of a new member from a backup, like `etcdutl snapshot
/// restore`: `cfg` names the member and the new cluster (`--name`, `--initial-cluster`); the
/// store opened on `cfg.data_dir` afterwards serves the backup's data at its revision. Refuses
/// a data directory that exists and is not empty; removes what it created if it fails.
pub async fn restore_backup(bytes: &[u8], cfg: &ClusterConfig) -> Result<BackupInfo, BackupError> {
    let (info, payload) = parse(bytes)?;
    if !cfg.initial_cluster.iter().any(|m| m.id == cfg.node_id) {
        return Err(BackupError::InvalidConfig(format!(
            "--name {}: not in --initial-cluster",
            cfg.name
        )));
    }
    let dir = &cfg.data_dir;
    let created = prepare_dir(dir)?;
    let restored = restore_into(dir, payload, cfg, &info).await;
    if restored.is_err() {
        let cleanup = if created {
            std::fs::remove_dir_all(dir)
        } else {
            clear_dir(dir)
        };
        if let Err(e) = cleanup {
            tracing::warn!(path = %dir.display(), error = %e, "cannot clean up after failed restore");
        }
    }
    restored?;
    tracing::info!(
        node = cfg.node_id,
        name = %cfg.name,
        resource_version = info.revision,
        data_dir = %dir.display(),
        "backup restored"
    );
    Ok(info)
}

/// Makes sure `dir` exists and is empty; `true` if this call created it.
fn prepare_dir(dir: &Path) -> Result<bool, BackupError> {
    let io = |source| BackupError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::DataDirNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            Ok(true)
        }
        Err(e) => Err(io(e)),
    }
}

fn clear_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

async fn restore_into(
    dir: &Path,
    payload: &[u8],
    cfg: &ClusterConfig,
    info: &BackupInfo,
) -> Result<(), BackupError> {
    let db_path = crate::store::sled_dir(dir);
    let db = {
        let db_path = db_path.clone();
        tokio::task::spawn_blocking(move || sled::Config::new().path(db_path).open())
            .await
            .map_err(|e| Error::RaftSetup(format!("sled open task failed: {e}")))?
            .map_err(Error::from)?
    };
    let mut sm = StateMachineStore::open(&db)?;
    // The position `Raft::initialize` gives the first membership entry.
    let first = LogId::default();
    let meta = SnapshotMeta {
        last_log_id: Some(first),
        last_membership: StoredMembership::new(Some(first), restored_membership(cfg)),
        snapshot_id: format!("restore-{}-{}", info.member, info.revision),
    };
    sm.install_snapshot(&meta, Box::new(Cursor::new(payload.to_vec())))
        .await
        .map_err(Error::from)?;
    db.flush_async().await.map_err(Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> BackupInfo {
        BackupInfo {
            revision: 42,
            compact_revision: 7,
            created_unix_ms: 1,
            member: 3,
        }
    }

    #[test]
    fn encoded_backup_is_page_aligned_and_round_trips() -> anyhow::Result<()> {
        let bytes = encode(&info(), b"payload")?;
        // What `etcdctl snapshot save` checks before it keeps a file.
        assert_eq!(bytes.len() % ALIGN, CHECKSUM_LEN);
        let (parsed, payload) = parse(&bytes)?;
        assert_eq!((parsed, payload), (info(), b"payload".as_slice()));
        Ok(())
    }

    #[test]
    fn any_damage_fails_the_checksum_or_the_format_check() -> anyhow::Result<()> {
        let bytes = encode(&info(), b"payload")?;
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(parse(&flipped), Err(BackupError::Checksum { .. })));
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            parse(truncated),
            Err(BackupError::Checksum { .. })
        ));
        assert!(matches!(parse(&bytes[..10]), Err(BackupError::Format(_))));
        // A well-formed checksum over something else (an etcd bolt snapshot, say).
        let mut foreign = vec![0u8; ALIGN];
        let checksum = Sha256::digest(&foreign);
        foreign.extend_from_slice(&checksum);
        assert!(matches!(parse(&foreign), Err(BackupError::Format(_))));
        Ok(())
    }
}
