//! Where each runtime file lives under the root. One place so the agent side and the shim
//! agree on paths; no I/O here.

use std::path::{Path, PathBuf};

/// Paths of one container's files under a runtime root.
#[derive(Clone, Debug)]
pub struct ContainerPaths {
    /// `<root>/containers/<id>`: everything removed by `remove_container`.
    pub dir: PathBuf,
    /// `state.json`, written atomically by the agent (first) and the shim (after).
    pub state: PathBuf,
    /// OCI bundle directory holding `config.json`.
    pub bundle: PathBuf,
    /// Overlay mount point used as the container's root.
    pub rootfs: PathBuf,
    /// Overlay upper dir (the container's writes).
    pub upper: PathBuf,
    /// Overlay work dir.
    pub work: PathBuf,
    /// The shim's own diagnostics.
    pub shim_log: PathBuf,
    /// Stop request (grace period) left for the shim before it is sent SIGTERM.
    pub stop_request: PathBuf,
    /// The container's CRI log (kept after removal).
    pub log: PathBuf,
    /// libcontainer's state root (shared by all containers of this runtime root).
    pub libcontainer_root: PathBuf,
}

impl ContainerPaths {
    /// Paths for container `id` under `root`.
    pub fn new(root: &Path, id: &str) -> ContainerPaths {
        let dir = root.join("containers").join(id);
        ContainerPaths {
            state: dir.join("state.json"),
            bundle: dir.join("bundle"),
            rootfs: dir.join("rootfs"),
            upper: dir.join("upper"),
            work: dir.join("work"),
            shim_log: dir.join("shim.log"),
            stop_request: dir.join("stop.json"),
            log: root.join("logs").join(format!("{id}.log")),
            libcontainer_root: root.join("libcontainer"),
            dir,
        }
    }
}

/// True if `id` is safe as a file name, cgroup name and libcontainer id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_plain_names() {
        assert!(valid_id("pod-1_main.0"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("a b"));
    }
}
