//! Pod networking for Capstan. Each pod gets a network namespace kept alive as a bind-mounted
//! file under a root directory (like `ip netns`), with loopback up; the runtime puts that path
//! in the OCI spec so the pod's containers share it. Bridges, veths and pod IPs come later
//! and belong in [`link`]. All calls block; async callers use `spawn_blocking`.

pub mod error;
pub mod link;
pub mod mount;
pub mod name;
pub mod netns;

pub use error::{Error, Result};
pub use link::{link_is_up, set_link_up};
pub use name::validate_netns_name;
pub use netns::{run_in_netns, NetnsManager};
