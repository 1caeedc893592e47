//! The public value types of the runtime: what the agent asks for (`ContainerSpec`, `Resources`)
//! and what it gets back (`ContainerStatus`, `ContainerState`). Plain data, no I/O.

use std::path::PathBuf;

/// Where the runtime keeps its files and which executable runs the shim.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Root directory for images, layers, containers, logs and libcontainer state.
    pub root: PathBuf,
    /// Executable started as `<shim_exe> shim run ...` for every container.
    pub shim_exe: PathBuf,
}

/// One container of a pod, as the agent wants it run.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// Unique container id (also names the cgroup, state dir and log file).
    pub id: String,
    /// UID of the owning pod (names the pod cgroup).
    pub pod_uid: String,
    /// Namespace of the owning pod.
    pub pod_namespace: String,
    /// Name of the owning pod.
    pub pod_name: String,
    /// Container name within the pod.
    pub container_name: String,
    /// Restart attempt, starting at 0.
    pub attempt: u32,
    /// Image reference, resolved against the local image store.
    pub image: String,
    /// Overrides the image Entrypoint when non-empty.
    pub command: Vec<String>,
    /// Overrides the image Cmd when non-empty.
    pub args: Vec<String>,
    /// Extra environment, appended after (and overriding) the image's.
    pub env: Vec<(String, String)>,
    /// Working directory; falls back to the image's, then `/`.
    pub working_dir: Option<String>,
    /// Hostname inside the container (UTS namespace).
    pub hostname: String,
    /// Network namespace to join; `None` creates a fresh one.
    pub netns_path: Option<PathBuf>,
    /// Host files and directories to bind-mount (volumes), in order: a later mount may lie
    /// inside an earlier one.
    pub mounts: Vec<BindMount>,
    /// Who the process runs as and how it is confined.
    pub security: Security,
}

/// How a container's process is confined; the default is the hardened one (root in the
/// container, the default capability set, no new privileges, the default seccomp filter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    /// UID of the process (0 when unset).
    pub user: Option<u32>,
    /// GID of the process (0 when unset).
    pub group: Option<u32>,
    /// Extra groups of the process.
    pub supplemental_groups: Vec<u32>,
    /// Mount the root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Capabilities added to the default set (`NET_ADMIN` or `CAP_NET_ADMIN`).
    pub capabilities_add: Vec<String>,
    /// Capabilities removed from it; `ALL` removes every one.
    pub capabilities_drop: Vec<String>,
    /// Every capability and no seccomp filter.
    pub privileged: bool,
    /// Set `no_new_privs`: setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
    /// The seccomp filter.
    pub seccomp: Seccomp,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            user: None,
            group: None,
            supplemental_groups: Vec::new(),
            read_only_rootfs: false,
            capabilities_add: Vec::new(),
            capabilities_drop: Vec::new(),
            privileged: false,
            no_new_privileges: true,
            seccomp: Seccomp::RuntimeDefault,
        }
    }
}

/// Which seccomp filter a container gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seccomp {
    /// [`crate::seccomp::runtime_default`].
    RuntimeDefault,
    /// None.
    Unconfined,
    /// An OCI `linux.seccomp` JSON file; the container does not start if it cannot be read.
    Profile(PathBuf),
}

/// A host file or directory bind-mounted into a container (the agent prepares the source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path in the container, without `..`.
    pub destination: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// cgroup limits of a container in plain units (the agent converts Kubernetes quantities).
/// `None` leaves the kernel default (unlimited, or 1024 cpu shares).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU request in millicores; sets cpu shares (relative weight under contention).
    pub cpu_request_millis: Option<u64>,
    /// CPU limit in millicores; sets the CFS quota per 100 ms period.
    pub cpu_limit_millis: Option<u64>,
    /// Memory limit in bytes; exceeding it gets the container OOM-killed (`OOMKilled`).
    pub memory_limit_bytes: Option<u64>,
    /// Maximum number of processes and threads in the container.
    pub pids_limit: Option<u64>,
}

/// Observed status of one container.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerStatus {
    /// Container id.
    pub id: String,
    /// UID of the owning pod.
    pub pod_uid: String,
    /// Container name within the pod.
    pub container_name: String,
    /// Restart attempt.
    pub attempt: u32,
    /// Image reference as requested.
    pub image: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// CRI-format log file of this container.
    pub log_path: PathBuf,
}

/// Lifecycle state of a container, as far as the runtime can tell without pretending.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ContainerState {
    /// The shim is setting the container up.
    Created,
    /// The container's init process runs.
    Running {
        /// Host pid of the container's init process.
        pid: i32,
        /// RFC 3339 start time.
        started_at: String,
    },
    /// The container ended (or never started: reason `StartError`).
    Exited {
        /// Exit code; 128+N when killed by signal N.
        exit_code: i32,
        /// `Completed`, `Error`, `OOMKilled` or `StartError`.
        reason: String,
        /// RFC 3339 start time, if it started at all.
        started_at: Option<String>,
        /// RFC 3339 end time.
        finished_at: String,
    },
    /// The runtime cannot tell (e.g. reason `ShimDied`: the supervising shim is gone).
    Unknown {
        /// Why the state is unknown.
        reason: String,
    },
}

impl ContainerState {
    /// True once the container will not run again by itself.
    pub fn is_exited(&self) -> bool {
        matches!(self, ContainerState::Exited { .. })
    }
}
