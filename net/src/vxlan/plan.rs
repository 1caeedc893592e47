//! What the VXLAN device should hold for a set of peer nodes, and the difference to what it
//! holds now. Pure: it derives each peer's VTEP address and MAC from its pod subnet (so nodes
//! need to exchange nothing but the node list), validates the peer list and computes the
//! entries to remove and add. It must not touch the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::routes::PeerRoute;
use crate::subnet::validate_pod_subnet;

/// The first two octets of every VTEP MAC: locally administered unicast, like Kubernetes'
/// `0a:58` prefix. Entries whose MAC lacks it are not ours and are left alone.
pub const VTEP_MAC_PREFIX: [u8; 2] = [0x0a, 0x58];

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl MacAddr {
    /// The address from a netlink link-layer attribute, if it is six bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }

    /// True if the address follows the VTEP scheme of [`vtep_mac`].
    pub fn is_vtep(&self) -> bool {
        self.0[..2] == VTEP_MAC_PREFIX
    }
}

/// The VTEP address of a node: its pod subnet's network address (held as a /32 by the
/// node's VXLAN device, flannel's scheme).
pub fn vtep_ip(subnet: Ipv4Net) -> Ipv4Addr {
    subnet.network()
}

/// The MAC of a node's VXLAN device: `0a:58` followed by the four octets of its pod subnet's
/// network address, so every node can compute every other node's VTEP MAC.
pub fn vtep_mac(subnet: Ipv4Net) -> MacAddr {
    let [a, b, c, d] = subnet.network().octets();
    MacAddr([VTEP_MAC_PREFIX[0], VTEP_MAC_PREFIX[1], a, b, c, d])
}

/// Another node as the VXLAN device needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VxlanPeer {
    /// The other node's pod subnet.
    pub subnet: Ipv4Net,
    /// The other node's address, the outer destination of encapsulated packets.
    pub node_ip: Ipv4Addr,
}

impl fmt::Display for VxlanPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.subnet, self.node_ip)
    }
}

/// One kernel entry on the VXLAN device. The variant order is the order of additions (an
/// FDB entry before the neighbour before the route that uses them); removals go in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VxlanEntry {
    /// Bridge FDB entry (`bridge fdb ... self permanent`): frames for the remote VTEP MAC are
    /// encapsulated towards the remote node.
    Fdb {
        /// The remote VTEP MAC.
        mac: MacAddr,
        /// The remote node's address.
        dst: Ipv4Addr,
    },
    /// Permanent neighbour entry: the remote VTEP address resolves to its MAC without ARP.
    Neighbour {
        /// The remote VTEP address.
        ip: Ipv4Addr,
        /// The remote VTEP MAC.
        mac: MacAddr,
    },
    /// Route to the remote pod subnet via the remote VTEP address, `onlink` on the device.
    Route(PeerRoute),
}

impl fmt::Display for VxlanEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VxlanEntry::Fdb { mac, dst } => write!(f, "fdb {mac} dst {dst}"),
            VxlanEntry::Neighbour { ip, mac } => write!(f, "neighbour {ip} lladdr {mac}"),
            VxlanEntry::Route(route) => write!(f, "route {route} onlink"),
        }
    }
}

/// What [`plan`] decided: entries to remove (routes first), then entries to add (FDB first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanDiff {
    /// Present entries that are not wanted, in removal order.
    pub remove: Vec<VxlanEntry>,
    /// Wanted entries that are not present, in addition order.
    pub add: Vec<VxlanEntry>,
}

impl VxlanDiff {
    /// True if the device already matches.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// The three entries each peer needs, for all `peers`, after validating them against each
/// other and against this node's own pod subnet `local`. Exact duplicates merge; a subnet
/// listed with two node addresses, or overlapping another peer's or our own, is refused.
pub fn wanted_entries(local: Ipv4Net, peers: &[VxlanPeer]) -> Result<BTreeSet<VxlanEntry>> {
    validate_pod_subnet(local)?;
    let mut by_subnet: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    for peer in peers {
        let invalid = |reason: String| Error::Invalid {
            what: "vxlan peer",
            value: peer.to_string(),
            reason,
        };
        validate_pod_subnet(peer.subnet).map_err(|err| invalid(err.to_string()))?;
        let ip = peer.node_ip;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(invalid(
                "node address must be a unicast address other nodes can reach".to_owned(),
            ));
        }
        if overlaps(peer.subnet, local) {
            return Err(invalid(format!("overlaps this node's pod subnet {local}")));
        }
        if let Some(other) = by_subnet.get(&peer.subnet) {
            if *other != ip {
                return Err(invalid(format!("subnet is also announced by {other}")));
            }
            continue;
        }
        if let Some(other) = by_subnet.keys().find(|s| overlaps(**s, peer.subnet)) {
            return Err(invalid(format!("overlaps peer subnet {other}")));
        }
        by_subnet.insert(peer.subnet, ip);
    }
    let mut wanted = BTreeSet::new();
    for (subnet, node_ip) in by_subnet {
        let (ip, mac) = (vtep_ip(subnet), vtep_mac(subnet));
        wanted.insert(VxlanEntry::Fdb { mac, dst: node_ip });
        wanted.insert(VxlanEntry::Neighbour { ip, mac });
        wanted.insert(VxlanEntry::Route(PeerRoute { subnet, via: ip }));
    }
    Ok(wanted)
}

/// Computes the changes that make `present` (the entries we own on the device) equal to the
/// entries `peers` need (see [`wanted_entries`]). Pure.
pub fn plan(local: Ipv4Net, peers: &[VxlanPeer], present: &[VxlanEntry]) -> Result<VxlanDiff> {
    let wanted = wanted_entries(local, peers)?;
    let present: BTreeSet<VxlanEntry> = present.iter().copied().collect();
    let mut remove: Vec<VxlanEntry> = present.difference(&wanted).copied().collect();
    remove.reverse();
    Ok(VxlanDiff {
        remove,
        add: wanted.difference(&present).copied().collect(),
    })
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn peer(subnet: &str, ip: &str) -> VxlanPeer {
        VxlanPeer {
            subnet: net(subnet),
            node_ip: ip.parse().unwrap(),
        }
    }

    const LOCAL: &str = "10.244.0.0/24";

    #[test]
    fn vtep_mac_and_ip_come_from_the_subnet() {
        let subnet = net("10.244.1.0/24");
        assert_eq!(vtep_mac(subnet).to_string(), "0a:58:0a:f4:01:00");
        assert_eq!(vtep_ip(subnet), Ipv4Addr::new(10, 244, 1, 0));
        assert!(vtep_mac(subnet).is_vtep());
        assert_eq!(vtep_mac(subnet).0[0] & 0x01, 0, "unicast");
        assert_eq!(vtep_mac(subnet).0[0] & 0x02, 0x02, "locally administered");
        assert!(!MacAddr([0x02, 0, 0, 0, 0, 1]).is_vtep());
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn each_peer_needs_an_fdb_entry_a_neighbour_and_a_route() {
        let wanted = wanted_entries(net(LOCAL), &[peer("10.244.1.0/24", "192.168.0.2")]).unwrap();
        let mac = vtep_mac(net("10.244.1.0/24"));
        let vtep = Ipv4Addr::new(10, 244, 1, 0);
        assert_eq!(
            wanted.into_iter().collect::<Vec<_>>(),
            vec![
                VxlanEntry::Fdb {
                    mac,
                    dst: "192.168.0.2".parse().unwrap()
                },
                VxlanEntry::Neighbour { ip: vtep, mac },
                VxlanEntry::Route(PeerRoute {
                    subnet: net("10.244.1.0/24"),
                    via: vtep
                }),
            ]
        );
    }

    #[test]
    fn plan_adds_missing_removes_stale_and_orders_dependencies() {
        let present: Vec<VxlanEntry> = wanted_entries(
            net(LOCAL),
            &[
                peer("10.244.1.0/24", "192.168.0.2"),
                peer("10.244.9.0/24", "192.168.0.9"),
            ],
        )
        .unwrap()
        .into_iter()
        .collect();
        let peers = [
            peer("10.244.1.0/24", "192.168.0.2"),
            peer("10.244.2.0/24", "192.168.0.3"),
        ];
        let diff = plan(net(LOCAL), &peers, &present).unwrap();
        let kinds = |entries: &[VxlanEntry]| -> Vec<&'static str> {
            entries
                .iter()
                .map(|e| match e {
                    VxlanEntry::Fdb { .. } => "fdb",
                    VxlanEntry::Neighbour { .. } => "neighbour",
                    VxlanEntry::Route(_) => "route",
                })
                .collect()
        };
        assert_eq!(kinds(&diff.remove), ["route", "neighbour", "fdb"]);
        assert_eq!(kinds(&diff.add), ["fdb", "neighbour", "route"]);
        assert!(diff
            .remove
            .iter()
            .all(|e| e.to_string().contains("10.244.9.0")
                || e.to_string().contains("0a:58:0a:f4:09:00")));
        assert!(diff
            .add
            .iter()
            .all(|e| e.to_string().contains("10.244.2.0")
                || e.to_string().contains("0a:58:0a:f4:02:00")));
        let mut after: BTreeSet<VxlanEntry> = present.into_iter().collect();
        for e in &diff.remove {
            after.remove(e);
        }
        after.extend(diff.add.iter().copied());
        let after: Vec<_> = after.into_iter().collect();
        assert!(plan(net(LOCAL), &peers, &after).unwrap().is_empty());
    }

    #[test]
    fn a_node_that_changed_address_gets_its_fdb_entry_replaced_only() {
        let old: Vec<VxlanEntry> =
            wanted_entries(net(LOCAL), &[peer("10.244.1.0/24", "192.168.0.2")])
                .unwrap()
                .into_iter()
                .collect();
        let diff = plan(net(LOCAL), &[peer("10.244.1.0/24", "192.168.0.7")], &old).unwrap();
        let mac = vtep_mac(net("10.244.1.0/24"));
        assert_eq!(
            diff.remove,
            vec![VxlanEntry::Fdb {
                mac,
                dst: "192.168.0.2".parse().unwrap()
            }]
        );
        assert_eq!(
            diff.add,
            vec![VxlanEntry::Fdb {
                mac,
                dst: "192.168.0.7".parse().unwrap()
            }]
        );
    }

    #[test]
    fn no_peers_removes_everything_and_duplicates_merge() {
        let dup = [
            peer("10.244.1.0/24", "192.168.0.2"),
            peer("10.244.1.0/24", "192.168.0.2"),
        ];
        let present: Vec<_> = wanted_entries(net(LOCAL), &dup)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(present.len(), 3);
        let diff = plan(net(LOCAL), &[], &present).unwrap();
        assert_eq!(diff.remove.len(), 3);
        assert!(diff.add.is_empty());
    }

    #[test]
    fn bad_peers_are_refused_with_the_reason() {
        let cases = [
            (peer("10.244.1.5/24", "192.168.0.2"), "network address"),
            (peer("10.244.1.0/31", "192.168.0.2"), "prefix"),
            (peer("10.244.1.0/24", "0.0.0.0"), "unicast"),
            (peer("10.244.1.0/24", "127.0.0.1"), "unicast"),
            (peer("10.244.1.0/24", "224.0.0.1"), "unicast"),
            (
                peer("10.244.0.0/24", "192.168.0.2"),
                "this node's pod subnet",
            ),
            (
                peer("10.244.0.0/16", "192.168.0.2"),
                "this node's pod subnet",
            ),
        ];
        for (bad, why) in cases {
            let err = wanted_entries(net(LOCAL), &[bad]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Invalid {
                        what: "vxlan peer",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
        let conflict = [
            peer("10.244.1.0/24", "192.168.0.2"),
            peer("10.244.1.0/24", "192.168.0.3"),
        ];
        let err = wanted_entries(net(LOCAL), &conflict).unwrap_err();
        assert!(
            err.to_string().contains("also announced by 192.168.0.2"),
            "{err}"
        );
        let overlap = [
            peer("10.244.2.0/24", "192.168.0.2"),
            peer("10.244.2.0/23", "192.168.0.3"),
        ];
        let err = wanted_entries(net(LOCAL), &overlap).unwrap_err();
        assert!(err.to_string().contains("overlaps peer subnet"), "{err}");
        assert!(wanted_entries(net("10.244.0.5/24"), &[]).is_err());
    }
}
