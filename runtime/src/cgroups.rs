//! Pod-level cgroup cleanup. libcontainer creates and removes each container's cgroup
//! (`/capstan/<pod_uid>/<container_id>`); the pod's parent directory is left for the agent to
//! remove once the pod's last container is gone. This module must not touch container cgroups.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Directories `<hierarchy>/capstan/<pod_uid>` that exist, across v1 hierarchies and v2.
fn pod_dirs(pod_uid: &str) -> Vec<PathBuf> {
    let rel = Path::new("capstan").join(pod_uid);
    let mut dirs = vec![Path::new(CGROUP_ROOT).join(&rel)];
    if let Ok(entries) = fs::read_dir(CGROUP_ROOT) {
        dirs.extend(entries.flatten().map(|e| e.path().join(&rel)));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Removes the pod cgroup `/capstan/<pod_uid>` in every hierarchy. Idempotent; fails (and
/// removes nothing more) if a container cgroup still exists under it.
pub fn remove_pod_cgroup(pod_uid: &str) -> Result<()> {
    if !crate::layout::valid_id(pod_uid) {
        return Err(Error::InvalidSpec {
            id: pod_uid.to_owned(),
            reason: "pod uid is not a plain name".into(),
        });
    }
    for dir in pod_dirs(pod_uid) {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove pod cgroup", dir)(e)),
        }
    }
    Ok(())
}
