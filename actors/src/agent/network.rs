//! The node's pod network as the agent uses it: the bridge with this node's pod subnet (known
//! once the control plane assigned `spec.podCIDR` to the Node), per-pod addresses, veth
//! attachment, and the way to the other nodes' subnets: host-gw routes or a VXLAN device, as
//! [`InterNodeMode`] says; each mode removes the other's state. Thin glue over `net`; all
//! calls block (use [`super::context::blocking`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use api::v1;
use net::{Ipv4Net, PeerRoute, PodIpam, ServiceProxy, VxlanConfig, VxlanDevice, VxlanPeer};

use crate::error::Result;

/// Settings of the pod network on one node.
#[derive(Debug, Clone)]
pub struct PodNetworkConfig {
    /// Bridge name (`capstan0` by default).
    pub bridge: String,
    /// MTU of pod interfaces.
    pub mtu: u32,
    /// Where pod address allocations are kept.
    pub state_dir: PathBuf,
    /// The cluster's pod CIDR (traffic leaving it is masqueraded).
    pub cluster_cidr: Ipv4Net,
    /// The nftables table of the Service proxy (`capstan`).
    pub proxy_table: String,
    /// How pod traffic reaches other nodes.
    pub mode: InterNodeMode,
    /// The VXLAN device's settings (used in [`InterNodeMode::Vxlan`]).
    pub vxlan: VxlanConfig,
}

/// How pod traffic reaches other nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InterNodeMode {
    /// Routes to each node's pod subnet via its address; the nodes must share a segment.
    #[default]
    HostGw,
    /// Encapsulated in VXLAN towards each node's address; any routed network will do.
    Vxlan,
}

/// What became of the way to the other nodes in one [`PodNetwork::sync_peers`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Routes or VXLAN entries added.
    pub added: usize,
    /// Routes or VXLAN entries removed.
    pub removed: usize,
}

/// The node's own network once its subnet is known.
#[derive(Debug)]
struct Ready {
    subnet: Ipv4Net,
    ipam: PodIpam,
    /// The MTU of pod interfaces: the configured one, capped by the VXLAN device's.
    mtu: u32,
}

/// The node's pod network; becomes ready once the node's subnet is known and the bridge is up.
#[derive(Debug)]
pub struct PodNetwork {
    config: PodNetworkConfig,
    ready: OnceLock<Ready>,
    /// What the Service proxy programmed last, so a sync sends only what changed.
    proxy: Mutex<ServiceProxy>,
}

impl PodNetwork {
    /// A pod network that is not ready yet.
    pub fn new(config: PodNetworkConfig) -> Self {
        PodNetwork {
            config,
            ready: OnceLock::new(),
            proxy: Mutex::new(ServiceProxy::new()),
        }
    }

    /// The node's pod subnet, once ready.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        self.ready.get().map(|r| r.subnet)
    }

    /// Brings the bridge up for `subnet` (and in VXLAN mode the VXLAN device on `node_ip`,
    /// whose MTU then caps the pods') and opens the address store (idempotent).
    pub fn init(&self, subnet: Ipv4Net, node_ip: &str) -> Result<()> {
        if self.ready.get().is_some() {
            return Ok(());
        }
        net::NodeNetwork::ensure(&self.config.bridge, subnet)?;
        let mtu = match self.config.mode {
            InterNodeMode::HostGw => self.config.mtu,
            InterNodeMode::Vxlan => self
                .config
                .mtu
                .min(self.ensure_vxlan(subnet, node_ip)?.mtu()),
        };
        // Service traffic between pods on one bridge must pass through conntrack to be
        // un-NATed on the way back (as Kubernetes requires of every node).
        let knob = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
        if knob.exists() {
            if let Err(e) = std::fs::write(knob, "1") {
                tracing::warn!(error = %e, "cannot enable bridge-nf-call-iptables; Services between pods of one node may fail");
            }
        } else {
            tracing::warn!("br_netfilter is not loaded (modprobe br_netfilter); Services between pods of one node may fail");
        }
        let ipam = PodIpam::open(&self.config.state_dir, subnet)?;
        let _ = self.ready.set(Ready { subnet, ipam, mtu });
        tracing::info!(bridge = %self.config.bridge, subnet = %subnet, mode = ?self.config.mode, mtu, "pod network ready");
        Ok(())
    }

    /// Makes the way to the other nodes match `peers` (their subnets via their addresses)
    /// in this node's mode, and removes what the other mode left: host-gw routes in VXLAN
    /// mode, the VXLAN device (with all its entries) in host-gw mode. A no-op while the
    /// network is not ready.
    pub fn sync_peers(&self, peers: &[PeerRoute], node_ip: &str) -> Result<PeerChanges> {
        let Some(ready) = self.ready.get() else {
            return Ok(PeerChanges::default());
        };
        match self.config.mode {
            InterNodeMode::HostGw => {
                // The device goes first: its routes would collide with the host-gw ones.
                match net::delete_vxlan(&self.config.vxlan.device) {
                    // A foreign link of that name holds none of our state.
                    Ok(()) | Err(net::Error::NotAVxlan { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                let diff = net::sync_routes(peers)?;
                Ok(PeerChanges {
                    added: diff.add.len(),
                    removed: diff.remove.len(),
                })
            }
            InterNodeMode::Vxlan => {
                let stale = net::sync_routes(&[])?;
                let device = self.ensure_vxlan(ready.subnet, node_ip)?;
                let diff = device.sync(&vxlan_peers(peers))?;
                Ok(PeerChanges {
                    added: diff.add.len(),
                    removed: diff.remove.len() + stale.remove.len(),
                })
            }
        }
    }

    fn ensure_vxlan(&self, subnet: Ipv4Net, node_ip: &str) -> Result<VxlanDevice> {
        let local = node_ip.parse().map_err(|e| {
            crate::error::Error::FailedPrecondition(format!(
                "vxlan mode needs the node address (--host-ip) as IPv4, got {node_ip:?}: {e}"
            ))
        })?;
        Ok(VxlanDevice::ensure(&self.config.vxlan, local, subnet)?)
    }

    /// Gives the pod its address and attaches its network namespace to the bridge
    /// (idempotent). `None` while the network is not ready.
    pub fn attach(&self, netns: &Path, pod_uid: &str) -> Result<Option<Ipv4Addr>> {
        let Some(ready) = self.ready.get() else {
            return Ok(None);
        };
        let ip = ready.ipam.allocate(pod_uid)?;
        net::attach_pod(
            netns,
            pod_uid,
            ip,
            ready.subnet,
            &self.config.bridge,
            ready.mtu,
        )?;
        Ok(Some(ip))
    }

    /// Detaches the pod and releases its address (idempotent).
    pub fn detach(&self, pod_uid: &str) -> Result<()> {
        net::detach_pod(pod_uid)?;
        if let Some(ready) = self.ready.get() {
            ready.ipam.release(pod_uid)?;
        }
        Ok(())
    }

    /// Programs the Service proxy (its nftables tables, updated atomically) for `services`:
    /// only what changed since the last call, or everything on the first call and after an
    /// error.
    pub fn sync_services(
        &self,
        services: &[(net::services::ServiceSpec, Vec<net::services::Endpoint>)],
        node_ip: Option<Ipv4Addr>,
    ) -> Result<()> {
        let cfg = net::services::ProxyConfig {
            table: self.config.proxy_table.clone(),
            pod_cidr: self.config.cluster_cidr,
            node_ips: node_ip.into_iter().collect(),
        };
        // A panic while syncing left no state behind (the proxy forgets it first), so a
        // poisoned lock is still usable.
        let mut proxy = self.proxy.lock().unwrap_or_else(|e| e.into_inner());
        proxy
            .sync(&cfg, services)
            .map_err(|e| crate::error::Error::FailedPrecondition(format!("service proxy: {e}")))?;
        Ok(())
    }

    /// Frees addresses of pods that are gone.
    pub fn reconcile<'a>(&self, live: impl IntoIterator<Item = &'a str>) -> Result<()> {
        if let Some(ready) = self.ready.get() {
            ready.ipam.reconcile(live)?;
        }
        Ok(())
    }
}

/// The node's pod subnet as the control plane assigned it (`spec.podCIDR`).
pub fn assigned_subnet(node: &v1::Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.parse().ok()
}

/// The VXLAN peers behind `routes`: each subnet's node address is the outer destination.
pub fn vxlan_peers(routes: &[PeerRoute]) -> Vec<VxlanPeer> {
    routes
        .iter()
        .map(|r| VxlanPeer {
            subnet: r.subnet,
            node_ip: r.via,
        })
        .collect()
}

/// Routes to the other nodes' pod subnets via their InternalIP. Nodes on this node's own
/// address share its network namespace (several test nodes on one host): their bridges are
/// local already, so no route is needed.
pub fn peer_routes(nodes: &[v1::Node], me: &str, my_ip: &str) -> Vec<PeerRoute> {
    let mut routes: Vec<PeerRoute> = nodes
        .iter()
        .filter(|n| n.metadata.as_ref().is_some_and(|m| m.name != me))
        .filter_map(|n| {
            let subnet = assigned_subnet(n)?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .iter()
                .find(|a| a.r#type == "InternalIP")?;
            if ip.address == my_ip {
                return None;
            }
            Some(PeerRoute {
                subnet,
                via: ip.address.parse().ok()?,
            })
        })
        .collect();
    routes.sort_by_key(|r| r.subnet);
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: &str) -> v1::Node {
        v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                ..Default::default()
            }),
            spec: Some(v1::NodeSpec {
                pod_cidr: cidr.into(),
                ..Default::default()
            }),
            status: Some(v1::NodeStatus {
                addresses: vec![v1::NodeAddress {
                    r#type: "InternalIP".into(),
                    address: ip.into(),
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_go_to_other_nodes_with_a_subnet_and_another_address() {
        let nodes = vec![
            node("me", "10.244.0.0/24", "192.168.255.1"),
            node("b", "10.244.1.0/24", "192.168.255.2"),
            node("same-host", "10.244.2.0/24", "192.168.255.1"),
            node("no-subnet", "", "192.168.255.3"),
        ];
        let routes = peer_routes(&nodes, "me", "192.168.255.1");
        assert_eq!(
            routes,
            vec![PeerRoute {
                subnet: "10.244.1.0/24".parse().unwrap(),
                via: "192.168.255.2".parse().unwrap()
            }]
        );
        assert_eq!(
            vxlan_peers(&routes),
            vec![VxlanPeer {
                subnet: "10.244.1.0/24".parse().unwrap(),
                node_ip: "192.168.255.2".parse().unwrap()
            }],
            "vxlan peers are the same nodes, encapsulated towards their address"
        );
    }
}
