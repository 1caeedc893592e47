//! Pod networking for Capstan. Each pod gets a network namespace kept alive as a bind-mounted
//! file under a root directory (like `ip netns`), with loopback up; the runtime puts that path
//! in the OCI spec so the pod's containers share it. Each node has a bridge ([`bridge`])
//! holding its pod subnet's gateway; each pod is attached to it by a veth pair ([`veth`]) with
//! an address from [`ipam`]; other nodes' pod subnets are reached through host-gw routes
//! ([`routes`]). Decisions (subnet and address choice, route diffs) are pure; netlink and
//! files sit at the edges. Kernel calls act on the calling thread's namespace and block;
//! async callers use `spawn_blocking`, node-namespace work goes through [`run_in_netns`].
//! Services are proxied by nftables rules ([`services`]); cluster DNS, served by each node on its
//! bridge gateway, and the pods' resolver files are in [`dns`].

pub mod bridge;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod link;
pub mod mount;
pub mod name;
pub mod netns;
pub mod routes;
pub mod services;
pub mod subnet;
pub mod sysctl;
pub mod veth;
pub mod vxlan;

pub use bridge::{NodeNetwork, DEFAULT_BRIDGE};
pub use error::{Error, Result};
pub use ipam::{
    allocate_node_subnet, pick_free_subnet, ClusterCidr, PodIpam, SubnetClaim, SubnetRegistry,
};
pub use ipnet::Ipv4Net;
pub use link::{link_exists, link_ipv4_addresses, link_is_up, link_mtu, set_link_up};
pub use name::{validate_ifname, validate_netns_name};
pub use netns::{run_in_netns, NetnsManager};
pub use routes::{sync_routes, PeerRoute, RouteDiff, ROUTE_PROTOCOL};
pub use services::{
    sync_services, Endpoint, Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec,
    SyncStats,
};
pub use veth::{attach_pod, detach_pod, host_ifname, PodInterface};
pub use vxlan::{delete_vxlan, VxlanConfig, VxlanDevice, VxlanPeer};
