//! The node bridge: one Linux bridge per node holding the pod subnet's gateway address, to
//! which every pod's veth is attached. It owns creating, checking and removing that bridge
//! (and turning on forwarding); it must not create veths or routes to other nodes.
//! Everything acts on the calling thread's network namespace and blocks.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::link::{find_link, get_link, is_errno, netlink, set_only_ipv4_address, with_handle};
use crate::name::validate_ifname;
use crate::subnet::{gateway, validate_pod_subnet};
use crate::sysctl::enable_ip_forward;

/// The bridge name a node uses unless configured otherwise.
pub const DEFAULT_BRIDGE: &str = "capstan0";

/// A node's pod bridge, known to exist and be configured after [`NodeNetwork::ensure`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    bridge: String,
    subnet: Ipv4Net,
}

impl NodeNetwork {
    /// Creates bridge `bridge` if missing, makes the subnet's gateway (`.1`) its only IPv4
    /// address, brings it up and enables `net.ipv4.ip_forward`. Idempotent; a link of that
    /// name that is not a bridge is an [`Error::NotABridge`].
    pub fn ensure(bridge: &str, subnet: Ipv4Net) -> Result<NodeNetwork> {
        validate_ifname(bridge)?;
        validate_pod_subnet(subnet)?;
        let address =
            Ipv4Net::new(gateway(subnet), subnet.prefix_len()).map_err(|err| Error::Invalid {
                what: "pod subnet",
                value: subnet.to_string(),
                reason: err.to_string(),
            })?;
        with_handle(bridge, |handle| async move {
            let link = match find_link(&handle, bridge).await? {
                Some(link) => link,
                None => {
                    let created = handle
                        .link()
                        .add()
                        .bridge(bridge.to_owned())
                        .address(bridge_mac(bridge).to_vec())
                        .execute()
                        .await;
                    match created {
                        Ok(()) => {
                            tracing::info!(message = "bridge created", link = bridge, subnet = %subnet)
                        }
                        // Lost a race with a concurrent ensure: use theirs.
                        Err(err) if is_errno(&err, nix::libc::EEXIST) => {}
                        Err(source) => return Err(netlink("create bridge", bridge, source)),
                    }
                    get_link(&handle, bridge).await?
                }
            };
            if !is_bridge(&link) {
                return Err(Error::NotABridge {
                    link: bridge.to_owned(),
                });
            }
            let index = link.header.index;
            set_only_ipv4_address(&handle, bridge, index, address).await?;
            handle
                .link()
                .set(index)
                .up()
                .execute()
                .await
                .map_err(|source| netlink("set up", bridge, source))
        })?;
        enable_ip_forward()?;
        Ok(NodeNetwork {
            bridge: bridge.to_owned(),
            subnet,
        })
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The node's pod subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The pods' default gateway, the bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.subnet)
    }

    /// Deletes the bridge, and with it its address and the subnet's connected route.
    /// Idempotent. Attached veths are detached (not deleted) by the kernel; `ip_forward` is
    /// left on, as other users of the namespace may rely on it.
    pub fn teardown(&self) -> Result<()> {
        delete_bridge(&self.bridge)
    }
}

/// Deletes bridge `bridge` if it exists (see [`NodeNetwork::teardown`]).
pub fn delete_bridge(bridge: &str) -> Result<()> {
    validate_ifname(bridge)?;
    with_handle(bridge, |handle| async move {
        let Some(link) = find_link(&handle, bridge).await? else {
            return Ok(());
        };
        if !is_bridge(&link) {
            return Err(Error::NotABridge {
                link: bridge.to_owned(),
            });
        }
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => {
                tracing::info!(message = "bridge deleted", link = bridge);
                Ok(())
            }
            Err(err) if is_errno(&err, nix::libc::ENODEV) => Ok(()),
            Err(source) => Err(netlink("delete bridge", bridge, source)),
        }
    })
}

fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

/// A stable, locally administered unicast MAC derived from the bridge name.
///
/// Why: a bridge without a set address takes the lowest MAC of its ports, so it would change
/// whenever a pod comes or goes and pods' ARP caches would point at a stale gateway MAC.
fn bridge_mac(bridge: &str) -> [u8; 6] {
    let digest = Sha256::digest(bridge.as_bytes());
    // 0x0a: locally administered (bit 1 set), unicast (bit 0 clear), like Kubernetes' 0a:58.
    [0x0a, 0x58, digest[0], digest[1], digest[2], digest[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_stable_unicast_and_local() {
        let mac = bridge_mac("capstan0");
        assert_eq!(mac, bridge_mac("capstan0"));
        assert_ne!(mac, bridge_mac("capstan1"));
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
    }
}
