//! Test harness: a unique runtime root with an imported busybox image, and a guard that stops
//! and removes every container it started, unmounts leftovers and removes the pod cgroups,
//! also when the test fails.

#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runtime::{ContainerSpec, ContainerState, ContainerStatus, Runtime, RuntimeConfig};

pub const SHIM: &str = env!("CARGO_BIN_EXE_capstan-runtime-shim");

pub struct Harness {
    pub rt: Option<Runtime>,
    pub root: PathBuf,
    pub pod_uid: String,
    pub ids: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> anyhow::Result<Harness> {
        let h = Harness::empty()?;
        let archive = h.root.join("busybox.tar");
        runtime::busybox::build_image_archive(
            Path::new("/bin/busybox"),
            &archive,
            "busybox:latest",
        )?;
        h.rt().images().import_archive(&archive, None)?;
        Ok(h)
    }

    /// A harness whose image store is empty (for pulls).
    pub fn empty() -> anyhow::Result<Harness> {
        let dir = tempfile::Builder::new().prefix("capstan-rt-").tempdir()?;
        let root = dir.path().to_path_buf();
        let rt = Runtime::new(RuntimeConfig {
            root: root.clone(),
            shim_exe: PathBuf::from(SHIM),
        })?;
        let pod_uid = format!(
            "pod-{}",
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(Harness {
            rt: Some(rt),
            root,
            pod_uid,
            ids: Vec::new(),
            _dir: dir,
        })
    }

    pub fn rt(&self) -> &Runtime {
        // The runtime is only taken out by tests that put a new one back.
        self.rt.as_ref().unwrap_or_else(|| panic!("runtime taken"))
    }

    pub fn spec(&mut self, name: &str, command: &[&str]) -> ContainerSpec {
        let id = format!("{}-{name}", self.pod_uid.trim_start_matches("pod-"));
        self.ids.push(id.clone());
        ContainerSpec {
            id,
            pod_uid: self.pod_uid.clone(),
            pod_namespace: "default".into(),
            pod_name: "test".into(),
            container_name: name.into(),
            attempt: 0,
            image: "busybox".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            hostname: "test".into(),
            ..Default::default()
        }
    }

    pub fn wait_exited(&self, id: &str, timeout: Duration) -> anyhow::Result<ContainerStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .rt()
                .container_status(id)?
                .ok_or_else(|| anyhow::anyhow!("{id} vanished"))?;
            if status.state.is_exited() || Instant::now() >= deadline {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cgroup directories of a container in every mounted hierarchy that has one.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        cgroup_candidates(&format!("capstan/{}/{id}", self.pod_uid))
    }

    pub fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
            .filter(|m| m.starts_with(&root))
            .collect()
    }
}

pub fn cgroup_candidates(rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            out.push(e.path().join(rel));
        }
    }
    out.push(Path::new("/sys/fs/cgroup").join(rel));
    out.into_iter().filter(|p| p.is_dir()).collect()
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.as_ref() {
            for id in &self.ids {
                let _ = rt.stop_container(id, Duration::ZERO);
                if let Err(e) = rt.remove_container(id) {
                    eprintln!("cleanup of {id} failed: {e}");
                }
            }
        }
        for m in self.mounts_under_root().into_iter().rev() {
            let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(rt) = self.rt.as_ref() {
            if let Err(e) = rt.remove_pod_cgroup(&self.pod_uid) {
                eprintln!("pod cgroup cleanup failed: {e}");
            }
        }
        // Fallback if a test failed half-way and a container cgroup is left.
        for dir in cgroup_candidates(&format!("capstan/{}", self.pod_uid)) {
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

pub fn is_running(state: &ContainerState) -> Option<i32> {
    match state {
        ContainerState::Running { pid, .. } => Some(*pid),
        _ => None,
    }
}
