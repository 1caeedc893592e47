//! Capstan's node-level container runtime. It owns images on disk (OCI layouts imported or
//! pulled from registries into a content-addressed store, layers unpacked once), per-container
//! overlay root filesystems with cgroup resource limits, and a daemonless per-container shim that runs the container through youki's libcontainer, writes
//! CRI logs and persists state so the agent can restart without disturbing containers.
//! It does not schedule, retry or restart containers: the agent above decides that.
//!
//! All operations are blocking (async callers use `spawn_blocking`), except registry pulls
//! ([`Puller`]), which are async.

pub mod bundle;
pub mod busybox;
pub mod cgroups;
pub mod docker_config;
pub mod error;
mod exec;
pub mod image_store;
pub mod layers;
pub mod layout;
pub mod logs;
pub mod pull;
pub mod pull_policy;
pub mod registry;
pub mod rootfs;
mod runtime;
pub mod seccomp;
pub mod shim;
pub mod state;
mod types;
mod watch;

pub use error::{Error, Result};
pub use exec::ExecOutput;
pub use image_store::{Image, ImageConfig, ImageInfo, ImageStore};
pub use pull::{PullError, PullEvent, PullProgress, PullStats, Puller};
pub use pull_policy::{PullAction, PullPolicy};
pub use registry::{RegistryAuth, RegistrySettings};
pub use runtime::Runtime;
pub use shim::shim_main;
pub use types::{
    BindMount, ContainerSpec, ContainerState, ContainerStatus, Resources, RuntimeConfig, Seccomp,
    Security,
};

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Runtime>();
    }
}
