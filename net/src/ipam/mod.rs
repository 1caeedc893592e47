//! Address management: which pod subnet each node gets out of the cluster CIDR (decided
//! through the cluster store behind [`SubnetRegistry`]), and which address each pod gets out
//! of its node's subnet (a node-local file). It must not configure the kernel.

mod node_subnet;
mod pod_pool;
mod pod_store;

pub use node_subnet::{
    allocate_node_subnet, pick_free_subnet, ClusterCidr, SubnetClaim, SubnetRegistry,
    MAX_CLAIM_ATTEMPTS,
};
pub use pod_pool::PodPool;
pub use pod_store::PodIpam;
