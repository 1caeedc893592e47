//! The plain data the service proxy works from: Services, their ports and endpoints, and
//! the node's proxy configuration. It owns no logic beyond formatting; callers (the node
//! agent) convert API objects into these.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The lowest port a NodePort may use.
pub const NODE_PORT_MIN: u16 = 30000;
/// The highest port a NodePort may use.
pub const NODE_PORT_MAX: u16 = 32767;

/// A transport protocol a Service port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The protocol's name in nftables syntax (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (may be empty for a single-port Service); endpoints refer to it.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port on the cluster IP.
    pub port: u16,
    /// The port on every node address, if the Service is of type NodePort.
    pub node_port: Option<u16>,
}

/// A Service as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The virtual address; `None` for a headless Service, which gets no rules.
    pub cluster_ip: Option<Ipv4Addr>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds; `None` for no affinity.
    pub session_affinity_timeout: Option<u32>,
}

/// One backend address of one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The target port on the pod.
    pub port: u16,
    /// The name of the [`ServicePort`] this endpoint serves.
    pub port_name: String,
    /// Only ready endpoints receive new connections.
    pub ready: bool,
}

/// How the proxy programs this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The main nftables table (family `ip`) the proxy owns entirely, with its shard tables
    /// `<table>-s<k>`: `capstan` in production.
    pub table: String,
    /// The cluster's pod CIDR; traffic from it to elsewhere is masqueraded.
    pub pod_cidr: Ipv4Net,
    /// Addresses NodePorts answer on; empty means every local address but loopback.
    pub node_ips: Vec<Ipv4Addr>,
}

/// What one sync programmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Service ports with a cluster IP that got rules.
    pub service_ports: usize,
    /// Of those, how many have no ready endpoint (their traffic is rejected).
    pub without_endpoints: usize,
    /// Ready endpoints programmed, over all Service ports.
    pub endpoints: usize,
    /// NodePorts programmed.
    pub node_ports: usize,
    /// Service ports or NodePorts left out because they were invalid or conflicting.
    pub skipped: usize,
    /// Chains, sets and maps of earlier syncs that were deleted.
    pub deleted_objects: usize,
    /// Whether the table was rewritten (a full sync) rather than updated.
    pub full_sync: bool,
    /// Service ports whose objects were written or removed (all of them in a full sync).
    pub changed_ports: usize,
}
