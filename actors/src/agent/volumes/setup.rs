//! Carrying out a volume plan on the node (blocking I/O): the pod's volume directories, tmpfs
//! mounts for memory-backed volumes and secrets, host path checks, and files written the
//! kubelet's atomic way, so a running container sees a ConfigMap update whole or not at all:
//! the files go into a fresh hidden directory named by their digest, the `..data` symlink is
//! renamed onto it, and each top-level name is a symlink through `..data`.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::{Digest, Sha256};

use super::plan::{HostPathType, PlannedVolume, VolumeFile, VolumeKind};

/// Errors of setting volumes up or tearing them down.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file operation failed.
    #[error("volume {volume:?}: {op} {path:?}: {source}")]
    Io {
        /// Volume name (or `*` for the pod's volume directory).
        volume: String,
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A hostPath does not have the type the volume asks for.
    #[error("volume {volume:?}: hostPath {path:?} {reason}")]
    HostPath {
        /// Volume name.
        volume: String,
        /// The host path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The entry the files of a files volume are reached through.
const DATA_LINK: &str = "..data";

fn io(volume: &str, op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let (volume, path) = (volume.to_owned(), path.to_path_buf());
    move |source| SetupError::Io {
        volume,
        op,
        path,
        source,
    }
}

/// Makes every volume of `planned` exist under `dir` (the pod's volume directory), or checks
/// its host path. Idempotent: called on every sync, it only rewrites files whose content
/// changed.
pub fn prepare(dir: &Path, planned: &[PlannedVolume]) -> Result<(), SetupError> {
    fs::create_dir_all(dir).map_err(io("*", "create", dir))?;
    for v in planned {
        let path = dir.join(&v.name);
        match &v.kind {
            VolumeKind::Dir => empty_dir(&v.name, &path)?,
            VolumeKind::Memory { size_bytes } => {
                empty_dir(&v.name, &path)?;
                tmpfs(&v.name, &path, *size_bytes, 0o777)?;
            }
            VolumeKind::Host { path, check } => host_path(&v.name, path, *check)?,
            VolumeKind::Files { files, in_memory } => {
                fs::create_dir_all(&path).map_err(io(&v.name, "create", &path))?;
                if *in_memory {
                    tmpfs(&v.name, &path, None, 0o755)?;
                }
                write_files(&v.name, &path, files)?;
            }
        }
    }
    Ok(())
}

/// Unmounts and removes the pod's volume directory `dir` (host paths are never touched).
/// Idempotent.
pub fn teardown(dir: &Path) -> Result<(), SetupError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("*", "list", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("*", "list", dir))?.path();
        while umount2(&path, MntFlags::MNT_DETACH).is_ok() {}
    }
    fs::remove_dir_all(dir).map_err(io("*", "remove", dir))
}

fn empty_dir(volume: &str, path: &Path) -> Result<(), SetupError> {
    fs::create_dir_all(path).map_err(io(volume, "create", path))?;
    // As the kubelet: any user of the pod may write its scratch space.
    fs::set_permissions(path, fs::Permissions::from_mode(0o777)).map_err(io(volume, "chmod", path))
}

fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(path), path.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        _ => false,
    }
}

fn tmpfs(volume: &str, path: &Path, size: Option<u64>, mode: u32) -> Result<(), SetupError> {
    if is_mount_point(path) {
        return Ok(());
    }
    let mut data = format!("mode={mode:o}");
    if let Some(size) = size {
        data.push_str(&format!(",size={size}"));
    }
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| io(volume, "mount tmpfs on", path)(std::io::Error::from(e)))
}

fn host_path(volume: &str, path: &Path, check: HostPathType) -> Result<(), SetupError> {
    use std::os::unix::fs::FileTypeExt;
    let wrong = |reason: &str| SetupError::HostPath {
        volume: volume.to_owned(),
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let meta = fs::metadata(path);
    match check {
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(wrong("exists but is not a directory")),
            Err(_) => {
                fs::create_dir_all(path).map_err(io(volume, "create", path))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(io(volume, "chmod", path))
            }
        },
        HostPathType::FileOrCreate => match meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(wrong("exists but is not a file")),
            Err(_) => {
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io(volume, "create", path))?;
                Ok(())
            }
        },
        _ => {
            let m = meta.map_err(|_| wrong("does not exist"))?;
            let t = m.file_type();
            let (ok, what) = match check {
                HostPathType::Directory => (t.is_dir(), "a directory"),
                HostPathType::File => (t.is_file(), "a file"),
                HostPathType::Socket => (t.is_socket(), "a socket"),
                HostPathType::CharDevice => (t.is_char_device(), "a character device"),
                _ => (t.is_block_device(), "a block device"),
            };
            if ok {
                Ok(())
            } else {
                Err(wrong(&format!("is not {what}")))
            }
        }
    }
}

/// The hidden directory name for one version of a files volume: its content's digest.
fn version_name(files: &[VolumeFile]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(f.mode.to_le_bytes());
        h.update((f.content.len() as u64).to_le_bytes());
        h.update(&f.content);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("..{hex}")
}

fn write_files(volume: &str, dir: &Path, files: &[VolumeFile]) -> Result<(), SetupError> {
    let version = version_name(files);
    let link = dir.join(DATA_LINK);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(&version)) {
        return Ok(());
    }
    let staged = dir.join(&version);
    if staged.exists() {
        fs::remove_dir_all(&staged).map_err(io(volume, "remove", &staged))?;
    }
    for f in files {
        let path = staged.join(&f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(volume, "create", parent))?;
        }
        fs::write(&path, &f.content).map_err(io(volume, "write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode))
            .map_err(io(volume, "chmod", &path))?;
    }
    fs::create_dir_all(&staged).map_err(io(volume, "create", &staged))?;
    // Swap `..data` onto the new version in one rename.
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&version, &tmp).map_err(io(volume, "symlink", &tmp))?;
    fs::rename(&tmp, &link).map_err(io(volume, "rename", &link))?;
    // Top-level names through `..data`; stale names and versions go.
    let top: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_owned))
        .collect();
    for name in &top {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &path)
                .map_err(io(volume, "symlink", &path))?;
        }
    }
    for entry in fs::read_dir(dir).map_err(io(volume, "list", dir))? {
        let entry = entry.map_err(io(volume, "list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let stale = if name.starts_with("..") {
            name != DATA_LINK && name != version
        } else {
            !top.contains(&name)
        };
        if stale {
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io(volume, "remove", &path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> VolumeFile {
        VolumeFile {
            path: path.into(),
            content: content.as_bytes().to_vec(),
            mode: 0o640,
        }
    }

    fn files_volume(files: Vec<VolumeFile>) -> PlannedVolume {
        PlannedVolume {
            name: "config".into(),
            kind: VolumeKind::Files {
                files,
                in_memory: false,
            },
            read_only: true,
        }
    }

    #[test]
    fn files_are_swapped_in_whole_and_stale_names_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("volumes");
        prepare(
            &dir,
            &[files_volume(vec![
                file("a.conf", "one"),
                file("sub/b", "two"),
            ])],
        )
        .unwrap();
        let vol = dir.join("config");
        assert_eq!(fs::read_to_string(vol.join("a.conf")).unwrap(), "one");
        assert_eq!(fs::read_to_string(vol.join("sub/b")).unwrap(), "two");
        let mode = fs::metadata(vol.join("a.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let first = fs::read_link(vol.join(DATA_LINK)).unwrap();

        // Unchanged content: nothing is rewritten.
        prepare(
            &dir,
            &[files_volume(vec![
                file("a.conf", "one"),
                file("sub/b", "two"),
            ])],
        )
        .unwrap();
        assert_eq!(fs::read_link(vol.join(DATA_LINK)).unwrap(), first);

        prepare(&dir, &[files_volume(vec![file("a.conf", "three")])]).unwrap();
        assert_eq!(fs::read_to_string(vol.join("a.conf")).unwrap(), "three");
        assert!(
            fs::symlink_metadata(vol.join("sub")).is_err(),
            "stale name kept"
        );
        assert!(!vol.join(&first).exists(), "old version kept");
        let mut names: Vec<_> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");

        teardown(&dir).unwrap();
        assert!(!dir.exists());
        teardown(&dir).unwrap();
    }

    #[test]
    fn host_path_types_are_checked_or_created() {
        let tmp = tempfile::tempdir().unwrap();
        let host = |name: &str, check| PlannedVolume {
            name: name.into(),
            kind: VolumeKind::Host {
                path: tmp.path().join(name),
                check,
            },
            read_only: false,
        };
        let dir = tmp.path().join("volumes");
        prepare(&dir, &[host("made", HostPathType::DirectoryOrCreate)]).unwrap();
        assert!(tmp.path().join("made").is_dir());
        prepare(&dir, &[host("file", HostPathType::FileOrCreate)]).unwrap();
        assert!(tmp.path().join("file").is_file());
        let err = prepare(&dir, &[host("absent", HostPathType::Directory)]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = prepare(&dir, &[host("file", HostPathType::Directory)]).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        assert!(!tmp.path().join("absent").exists());
    }

    #[test]
    fn memory_volumes_are_tmpfs_until_teardown() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("volumes");
        let v = PlannedVolume {
            name: "shm".into(),
            kind: VolumeKind::Memory {
                size_bytes: Some(1 << 20),
            },
            read_only: false,
        };
        prepare(&dir, std::slice::from_ref(&v)).unwrap();
        prepare(&dir, &[v]).unwrap();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let path = dir.join("shm");
        let ours: Vec<_> = mounts
            .lines()
            .filter(|l| l.split(' ').nth(1) == path.to_str())
            .collect();
        assert_eq!(ours.len(), 1, "mounted once: {ours:?}");
        assert!(ours[0].starts_with("tmpfs "), "{ours:?}");
        assert!(ours[0].contains("size=1024k"), "{ours:?}");
        teardown(&dir).unwrap();
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        assert!(!mounts.contains(path.to_str().unwrap()));
    }
}
