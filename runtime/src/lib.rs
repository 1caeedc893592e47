//! Capstan's node-level container runtime. It owns images on disk (OCI layouts imported into a
//! content-addressed store, layers unpacked once), per-container overlay root filesystems, and a
//! daemonless per-container shim that runs the container through youki's libcontainer, writes
//! CRI logs and persists state so the agent can restart without disturbing containers.
//! It does not schedule, retry or restart containers: the agent above decides that.
//!
//! All operations are blocking; async callers use `spawn_blocking`.

pub mod bundle;
pub mod busybox;
pub mod cgroups;
pub mod error;
pub mod image_store;
pub mod layers;
pub mod layout;
pub mod logs;
pub mod rootfs;
mod runtime;
pub mod shim;
pub mod state;
mod types;

pub use error::{Error, Result};
pub use image_store::{Image, ImageConfig, ImageInfo, ImageStore};
pub use runtime::Runtime;
pub use shim::shim_main;
pub use types::{ContainerSpec, ContainerState, ContainerStatus, RuntimeConfig};

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::Runtime>();
    }
}
