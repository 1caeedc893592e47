//! The VXLAN peer entries in the kernel, via rtnetlink: permanent IPv4 neighbours and
//! permanent `self` FDB entries on our VXLAN device whose MAC follows the VTEP scheme, and
//! main-table routes of protocol [`ROUTE_PROTOCOL`] out of the device. Everything else
//! (other devices, learned or foreign entries, other protocols) is invisible here and never
//! touched. Acts on the calling thread's network namespace and blocks.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlag, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, IpVersion};

use super::plan::{MacAddr, VxlanEntry};
use super::VxlanTable;
use crate::error::{Error, Result};
use crate::link::{get_link, is_errno, with_handle};
use crate::routes::{PeerRoute, ROUTE_PROTOCOL};

/// `NUD_PERMANENT` (linux/neighbour.h): the entry never expires and was set by hand.
const NUD_PERMANENT: u16 = 0x80;

/// The entries on the VXLAN device named `device` in the calling thread's namespace.
#[derive(Debug, Clone)]
pub struct KernelVxlan {
    device: String,
}

impl KernelVxlan {
    /// The entries of VXLAN device `device` (which must exist when they are used).
    pub fn new(device: &str) -> KernelVxlan {
        KernelVxlan {
            device: device.to_owned(),
        }
    }
}

impl VxlanTable for KernelVxlan {
    fn owned_entries(&self) -> Result<Vec<VxlanEntry>> {
        let device = self.device.as_str();
        with_handle(device, |handle| async move {
            let index = get_link(&handle, device).await?.header.index;
            let mut entries = Vec::new();
            let neighbours: Vec<NeighbourMessage> = handle
                .neighbours()
                .get()
                .set_family(IpVersion::V4)
                .execute()
                .try_collect()
                .await
                .map_err(|source| entry_error("list neighbours", device, source))?;
            entries.extend(neighbours.iter().filter_map(|m| parse_neighbour(m, index)));
            let mut fdb = handle.neighbours().get();
            fdb.message_mut().header.family = AddressFamily::Bridge;
            let fdb: Vec<NeighbourMessage> = fdb
                .execute()
                .try_collect()
                .await
                .map_err(|source| entry_error("list fdb", device, source))?;
            entries.extend(fdb.iter().filter_map(|m| parse_fdb(m, index)));
            let routes: Vec<RouteMessage> = handle
                .route()
                .get(IpVersion::V4)
                .execute()
                .try_collect()
                .await
                .map_err(|source| entry_error("list routes", device, source))?;
            entries.extend(routes.iter().filter_map(|m| parse_route(m, index)));
            entries.sort();
            Ok(entries)
        })
    }

    fn add_entry(&self, entry: &VxlanEntry) -> Result<()> {
        let (device, entry) = (self.device.as_str(), *entry);
        with_handle(device, |handle| async move {
            let index = get_link(&handle, device).await?.header.index;
            let result = match entry {
                // `replace` for FDB and neighbour entries: an entry the kernel learned or
                // resolved itself for that MAC or address gives way to ours.
                VxlanEntry::Fdb { mac, dst } => {
                    handle
                        .neighbours()
                        .add_bridge(index, &mac.0)
                        .destination(IpAddr::V4(dst))
                        .flags(vec![NeighbourFlag::Own])
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                }
                VxlanEntry::Neighbour { ip, mac } => {
                    handle
                        .neighbours()
                        .add(index, IpAddr::V4(ip))
                        .link_local_address(&mac.0)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                }
                VxlanEntry::Route(route) => {
                    let mut request = handle.route().add().v4();
                    *request.message_mut() = route_message(&route, index);
                    request.execute().await
                }
            };
            // A route refused with EEXIST collides with a foreign route for the subnet: that
            // is reported, not taken for ours.
            result.map_err(|source| entry_error("add", &entry.to_string(), source))
        })
    }

    fn remove_entry(&self, entry: &VxlanEntry) -> Result<()> {
        let (device, entry) = (self.device.as_str(), *entry);
        with_handle(device, |handle| async move {
            let index = get_link(&handle, device).await?.header.index;
            let result = match entry {
                VxlanEntry::Fdb { mac, dst } => {
                    delete_neighbour(&handle, fdb_message(index, mac, dst)).await
                }
                VxlanEntry::Neighbour { ip, .. } => {
                    delete_neighbour(&handle, neighbour_message(index, ip)).await
                }
                VxlanEntry::Route(route) => {
                    handle
                        .route()
                        .del(route_message(&route, index))
                        .execute()
                        .await
                }
            };
            match result {
                Ok(()) => Ok(()),
                Err(err)
                    if is_errno(&err, nix::libc::ENOENT) || is_errno(&err, nix::libc::ESRCH) =>
                {
                    Ok(())
                }
                Err(source) => Err(entry_error("delete", &entry.to_string(), source)),
            }
        })
    }
}

async fn delete_neighbour(
    handle: &Handle,
    message: NeighbourMessage,
) -> std::result::Result<(), rtnetlink::Error> {
    handle.neighbours().del(message).execute().await
}

fn neighbour_message(index: u32, ip: Ipv4Addr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.ifindex = index;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    message
}

fn fdb_message(index: u32, mac: MacAddr, dst: Ipv4Addr) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Bridge;
    message.header.ifindex = index;
    message.header.flags = vec![NeighbourFlag::Own];
    message.header.state = NeighbourState::Permanent;
    message
        .attributes
        .push(NeighbourAttribute::LinkLocalAddress(mac.0.to_vec()));
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    message
}

/// The netlink message of our route to a peer's pod subnet via its VTEP, out of the device.
fn route_message(route: &PeerRoute, index: u32) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = route.subnet.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    // The VTEP address is on no connected subnet of ours: it is reached on the device.
    message.header.flags = vec![RouteFlag::Onlink];
    message.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet(route.subnet.network())),
        RouteAttribute::Gateway(RouteAddress::Inet(route.via)),
        RouteAttribute::Oif(index),
    ];
    message
}

fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & NUD_PERMANENT != 0
}

fn lladdr(message: &NeighbourMessage) -> Option<MacAddr> {
    message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLocalAddress(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

/// Our neighbour entry in `message`: IPv4, permanent, on the device, VTEP-scheme MAC.
fn parse_neighbour(message: &NeighbourMessage, index: u32) -> Option<VxlanEntry> {
    let header = &message.header;
    if header.family != AddressFamily::Inet
        || header.ifindex != index
        || !is_permanent(header.state)
    {
        return None;
    }
    let mac = lladdr(message).filter(MacAddr::is_vtep)?;
    let ip = message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Some(VxlanEntry::Neighbour { ip, mac })
}

/// Our FDB entry in `message`: bridge family, permanent, on the device itself (`self`),
/// VTEP-scheme MAC, an IPv4 destination.
fn parse_fdb(message: &NeighbourMessage, index: u32) -> Option<VxlanEntry> {
    let header = &message.header;
    if header.family != AddressFamily::Bridge
        || header.ifindex != index
        || !is_permanent(header.state)
        || !header.flags.contains(&NeighbourFlag::Own)
    {
        return None;
    }
    let mac = lladdr(message).filter(MacAddr::is_vtep)?;
    let dst = message.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })?;
    Some(VxlanEntry::Fdb { mac, dst })
}

/// Our route in `message`: main table, protocol [`ROUTE_PROTOCOL`], out of the device,
/// with a gateway.
fn parse_route(message: &RouteMessage, index: u32) -> Option<VxlanEntry> {
    let header = &message.header;
    if header.protocol != RouteProtocol::from(ROUTE_PROTOCOL)
        || header.address_family != AddressFamily::Inet
    {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut destination, mut via, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) || oif != Some(index) {
        return None;
    }
    let subnet = Ipv4Net::new(destination, header.destination_prefix_length).ok()?;
    Some(VxlanEntry::Route(PeerRoute { subnet, via: via? }))
}

fn entry_error(op: &'static str, entry: &str, source: rtnetlink::Error) -> Error {
    Error::NetlinkVxlan {
        op,
        entry: entry.to_owned(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::vxlan::plan::vtep_mac;

    #[test]
    fn only_our_permanent_vtep_entries_on_the_device_are_parsed_as_ours() {
        let mac = vtep_mac("10.244.1.0/24".parse().unwrap());
        let dst = Ipv4Addr::new(192, 168, 0, 2);
        let fdb = fdb_message(7, mac, dst);
        assert_eq!(parse_fdb(&fdb, 7), Some(VxlanEntry::Fdb { mac, dst }));
        assert_eq!(parse_fdb(&fdb, 8), None, "other device");
        let mut learned = fdb.clone();
        learned.header.state = NeighbourState::Reachable;
        assert_eq!(parse_fdb(&learned, 7), None);
        let mut foreign = fdb.clone();
        foreign.attributes[0] = NeighbourAttribute::LinkLocalAddress(vec![2, 0, 0, 0, 0, 1]);
        assert_eq!(parse_fdb(&foreign, 7), None);

        let mut neighbour = neighbour_message(7, Ipv4Addr::new(10, 244, 1, 0));
        neighbour.header.state = NeighbourState::Permanent;
        neighbour
            .attributes
            .push(NeighbourAttribute::LinkLocalAddress(mac.0.to_vec()));
        assert_eq!(
            parse_neighbour(&neighbour, 7),
            Some(VxlanEntry::Neighbour {
                ip: Ipv4Addr::new(10, 244, 1, 0),
                mac
            })
        );
        neighbour.header.state = NeighbourState::Stale;
        assert_eq!(parse_neighbour(&neighbour, 7), None);

        let route = PeerRoute {
            subnet: "10.244.1.0/24".parse().unwrap(),
            via: Ipv4Addr::new(10, 244, 1, 0),
        };
        let message = route_message(&route, 7);
        assert_eq!(parse_route(&message, 7), Some(VxlanEntry::Route(route)));
        assert_eq!(
            parse_route(&message, 3),
            None,
            "host-gw route out of the uplink"
        );
        let mut foreign = message.clone();
        foreign.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_route(&foreign, 7), None);
    }
}
