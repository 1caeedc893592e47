//! The agent-side face of the runtime: prepares a container (image layers, overlay rootfs,
//! bundle, initial state), hands it to a freshly spawned shim, and later reads, stops and removes
//! containers through their state files and pids. It never calls libcontainer (that happens only
//! in the shim process) and never holds a container's process as its child, so containers
//! survive the agent being restarted.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bundle;
use crate::error::{Error, Result};
use crate::image_store::{write_atomic, ImageStore};
use crate::layout::{valid_id, ContainerPaths};
use crate::pull::Puller;
use crate::registry::RegistrySettings;
use crate::rootfs;
use crate::shim::{cleanup_args, run_args, StopRequest};
use crate::state::{Phase, ProcId, ShimState};
use crate::types::{ContainerSpec, ContainerStatus, Resources, RuntimeConfig};
use crate::watch::{wait_gone, RecordWatch};

/// How long `start_container` waits for the shim to report running or failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time given to the shim, beyond the grace period, to report the exit.
const STOP_SLACK: Duration = Duration::from_secs(3);

/// The container runtime of one node. `Send + Sync`; every method is blocking.
#[derive(Debug)]
pub struct Runtime {
    root: PathBuf,
    shim_exe: PathBuf,
    images: Arc<ImageStore>,
}

impl Runtime {
    /// Opens the runtime under `cfg.root`, creating its directories.
    pub fn new(cfg: RuntimeConfig) -> Result<Runtime> {
        for dir in ["containers", "logs", "libcontainer"] {
            let d = cfg.root.join(dir);
            fs::create_dir_all(&d).map_err(Error::io("create runtime dir", &d))?;
        }
        let images = Arc::new(ImageStore::open(&cfg.root)?);
        Ok(Runtime {
            root: cfg.root,
            shim_exe: cfg.shim_exe,
            images,
        })
    }

    /// The node's image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// A puller that stores into this runtime's image store (share it: concurrent pulls of
    /// one reference are deduplicated per puller).
    pub fn puller(&self, settings: RegistrySettings) -> Puller {
        Puller::new(Arc::clone(&self.images), settings)
    }

    fn paths(&self, id: &str) -> ContainerPaths {
        ContainerPaths::new(&self.root, id)
    }

    /// CRI log file of container `id` (kept after `remove_container`).
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.paths(id).log
    }

    /// Prepares rootfs and bundle, spawns the shim, and waits until the container runs or failed
    /// to start. A start failure inside the container (e.g. a missing executable) is returned as
    /// `Ok` with state `Exited { reason: "StartError", .. }`, its cause written to the log;
    /// `Err` means the runtime itself failed.
    pub fn start_container(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        self.start_container_with(spec, &Resources::default())
    }

    /// [`Runtime::start_container`] with cgroup limits: cpu shares and CFS quota, memory and
    /// pids limits. A container killed by its memory limit exits with reason `OOMKilled`.
    pub fn start_container_with(
        &self,
        spec: &ContainerSpec,
        resources: &Resources,
    ) -> Result<ContainerStatus> {
        for (what, value) in [("id", &spec.id), ("pod_uid", &spec.pod_uid)] {
            if !valid_id(value) {
                return Err(Error::InvalidSpec {
                    id: spec.id.clone(),
                    reason: format!("{what} {value:?} is not a plain name"),
                });
            }
        }
        let paths = self.paths(&spec.id);
        if paths.dir.exists() {
            return Err(Error::ContainerExists {
                id: spec.id.clone(),
            });
        }
        let image = self.images.resolve(&spec.image)?;
        let lowers = self.images.layer_dirs(&image)?;
        fs::create_dir_all(&paths.bundle).map_err(Error::io("create bundle", &paths.bundle))?;
        let prepared = rootfs::mount_overlay(&lowers, &paths.upper, &paths.work, &paths.rootfs)
            .and_then(|()| bundle::build_spec(spec, resources, &image.config, &paths.rootfs))
            .and_then(|oci| bundle::write_config(&oci, &paths.bundle))
            .and_then(|()| self.initial_state(spec).save(&paths.state));
        if let Err(e) = prepared {
            self.discard(&paths);
            return Err(e);
        }

        let shim_log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&paths.shim_log)
            .map_err(Error::io("open shim log", &paths.shim_log))?;
        let shim_err = shim_log
            .try_clone()
            .map_err(Error::io("open shim log", &paths.shim_log))?;
        let status = Command::new(&self.shim_exe)
            .arg("shim")
            .args(run_args(&self.root, &spec.id))
            .stdin(Stdio::null())
            .stdout(shim_log)
            .stderr(shim_err)
            .status()
            .map_err(Error::io("spawn shim", &self.shim_exe));
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                self.discard(&paths);
                return Err(Error::Shim {
                    id: spec.id.clone(),
                    reason: format!("shim exited with {s} before detaching"),
                });
            }
            Err(e) => {
                self.discard(&paths);
                return Err(e);
            }
        }
        tracing::info!(container = %spec.id, pod = %spec.pod_name, namespace = %spec.pod_namespace, "shim spawned");
        self.wait_started(&spec.id, &paths)
    }

    fn initial_state(&self, spec: &ContainerSpec) -> ShimState {
        ShimState {
            id: spec.id.clone(),
            pod_uid: spec.pod_uid.clone(),
            container_name: spec.container_name.clone(),
            attempt: spec.attempt,
            image: spec.image.clone(),
            phase: Phase::Creating,
            shim: None,
            container: None,
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
        }
    }

    /// Best-effort removal of a container that never got a shim.
    fn discard(&self, paths: &ContainerPaths) {
        if let Err(e) = rootfs::unmount(&paths.rootfs) {
            tracing::warn!(path = %paths.rootfs.display(), error = %e, "unmount after failed start");
        }
        let _ = fs::remove_dir_all(&paths.dir);
    }

    fn wait_started(&self, id: &str, paths: &ContainerPaths) -> Result<ContainerStatus> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut watch = RecordWatch::new(&paths.dir);
        loop {
            let state = ShimState::load(&paths.state)?;
            let shim_alive = state.shim.is_some_and(|s| s.is_alive());
            match state.phase {
                Phase::Running | Phase::Exited => return Ok(self.status_of(&state, shim_alive)),
                Phase::Creating if state.shim.is_some() && !shim_alive => {
                    return Err(Error::Shim {
                        id: id.to_owned(),
                        reason: "shim died while creating the container".into(),
                    });
                }
                Phase::Creating if Instant::now() >= deadline => {
                    return Err(Error::Shim {
                        id: id.to_owned(),
                        reason: format!("container not started after {START_TIMEOUT:?}"),
                    });
                }
                Phase::Creating => watch.wait(deadline.saturating_duration_since(Instant::now())),
            }
        }
    }

    fn status_of(&self, state: &ShimState, shim_alive: bool) -> ContainerStatus {
        ContainerStatus {
            id: state.id.clone(),
            pod_uid: state.pod_uid.clone(),
            container_name: state.container_name.clone(),
            attempt: state.attempt,
            image: state.image.clone(),
            state: state.container_state(shim_alive),
            log_path: self.log_path(&state.id),
        }
    }

    /// Current status of container `id`, re-checking that its shim is alive; `None` if unknown.
    pub fn container_status(&self, id: &str) -> Result<Option<ContainerStatus>> {
        if !valid_id(id) {
            return Ok(None);
        }
        let paths = self.paths(id);
        if !paths.state.exists() {
            return Ok(None);
        }
        let state = ShimState::load(&paths.state)?;
        let alive = state.shim.is_some_and(|s| s.is_alive());
        Ok(Some(self.status_of(&state, alive)))
    }

    /// Statuses of all containers under this root (running or not yet removed).
    pub fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        let dir = self.root.join("containers");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io("list containers", &dir))? {
            let entry = entry.map_err(Error::io("list containers", &dir))?;
            let id = entry.file_name().to_string_lossy().into_owned();
            match self.container_status(&id) {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => tracing::warn!(container = %id, error = %e, "unreadable container state"),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Stops container `id`: SIGTERM, then SIGKILL after `grace`; returns once it exited.
    /// Idempotent: stopping an exited or unknown container is a no-op.
    pub fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let paths = self.paths(id);
        if !valid_id(id) || !paths.state.exists() {
            return Ok(());
        }
        let mut watch = RecordWatch::new(&paths.dir);
        let mut state = ShimState::load(&paths.state)?;
        // The shim only handles SIGTERM once the container runs (its signals stay unblocked
        // while libcontainer forks), so let a start in progress finish first.
        let deadline = Instant::now() + START_TIMEOUT;
        while state.phase == Phase::Creating
            && state.shim.is_some_and(|s| s.is_alive())
            && Instant::now() < deadline
        {
            watch.wait(deadline.saturating_duration_since(Instant::now()));
            state = ShimState::load(&paths.state)?;
        }
        if state.phase == Phase::Exited {
            return Ok(());
        }
        let shim = state.shim.filter(ProcId::is_alive);
        if let Some(shim) = shim {
            let req = StopRequest {
                grace_ms: grace.as_millis().try_into().unwrap_or(u64::MAX),
            };
            let bytes = serde_json::to_vec(&req).map_err(|source| Error::Json {
                path: paths.stop_request.clone(),
                source,
            })?;
            write_atomic(&paths.stop_request, &bytes)?;
            tracing::info!(container = %id, grace_ms = req.grace_ms, "stopping container");
            kill(Pid::from_raw(shim.pid), Signal::SIGTERM).map_err(Error::sys("signal shim"))?;
            if self.wait_exited(&paths, shim, grace + STOP_SLACK)? {
                return Ok(());
            }
            tracing::warn!(container = %id, "shim did not report exit in time, killing the container directly");
        }
        // No (responsive) shim: kill the container's init ourselves if it still runs.
        let state = ShimState::load(&paths.state)?;
        if let Some(c) = state.container.filter(ProcId::is_alive) {
            let _ = kill(Pid::from_raw(c.pid), Signal::SIGKILL);
            if !wait_gone(c, STOP_SLACK) {
                return Err(Error::Shim {
                    id: id.to_owned(),
                    reason: format!("container pid {} survived SIGKILL", c.pid),
                });
            }
        }
        if let Some(shim) = shim {
            self.wait_exited(&paths, shim, STOP_SLACK)?;
        }
        Ok(())
    }

    /// Waits until the state says exited or the shim is gone; true if exited was recorded.
    fn wait_exited(&self, paths: &ContainerPaths, shim: ProcId, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut watch = RecordWatch::new(&paths.dir);
        loop {
            if ShimState::load(&paths.state)?.phase == Phase::Exited {
                return Ok(true);
            }
            if !shim.is_alive() || Instant::now() >= deadline {
                return Ok(ShimState::load(&paths.state)?.phase == Phase::Exited);
            }
            watch.wait(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Removes container `id`: stops it if needed (no grace), deletes leftover libcontainer
    /// state and cgroup, unmounts the rootfs and deletes its directory. The log is kept (see
    /// [`Runtime::remove_log`]). Idempotent. A record that cannot be parsed (e.g. cut short
    /// by a power loss, as records are not fsynced) is removed like one whose shim is gone:
    /// the libcontainer cleanup kills whatever is left of the container.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        if !valid_id(id) {
            return Err(Error::InvalidSpec {
                id: id.to_owned(),
                reason: "not a plain name".into(),
            });
        }
        let paths = self.paths(id);
        let record = match ShimState::load(&paths.state) {
            Ok(state) => Some(state),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e @ Error::Json { .. }) => {
                tracing::warn!(container = %id, error = %e, "unreadable container record, removing it anyway");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(state) = record {
            if state.phase != Phase::Exited {
                self.stop_container(id, Duration::ZERO)?;
            }
            // The shim deletes the libcontainer container and then exits; give it the time.
            if let Some(shim) = state.shim {
                wait_gone(shim, STOP_SLACK);
            }
        }
        if paths.libcontainer_root.join(id).exists() {
            let status = Command::new(&self.shim_exe)
                .arg("shim")
                .args(cleanup_args(&self.root, id))
                .stdin(Stdio::null())
                .status()
                .map_err(Error::io("spawn shim cleanup", &self.shim_exe))?;
            if !status.success() {
                return Err(Error::Shim {
                    id: id.to_owned(),
                    reason: format!("cleanup exited with {status}"),
                });
            }
        }
        rootfs::unmount(&paths.rootfs)?;
        match fs::remove_dir_all(&paths.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove container dir", &paths.dir)(e)),
        }
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Removes the pod-level cgroup `/capstan/<pod_uid>` once all its containers are removed.
    /// Idempotent.
    pub fn remove_pod_cgroup(&self, pod_uid: &str) -> Result<()> {
        crate::cgroups::remove_pod_cgroup(pod_uid)
    }

    /// Deletes the log of container `id`. Idempotent.
    pub fn remove_log(&self, id: &str) -> Result<()> {
        let path = self.log_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove log", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Root directory of this runtime.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The executable run as `<shim_exe> shim ...`.
    pub(crate) fn shim_exe(&self) -> &Path {
        &self.shim_exe
    }
}
