//! Host-gw routing between nodes: every other node's pod subnet is reached via that node's
//! address. It owns the pure diff between wanted and present routes and its application to
//! the kernel's main table through a small [`RouteTable`] trait. Routes it installs carry
//! protocol [`ROUTE_PROTOCOL`]; it reads, changes and deletes only those without `onlink`
//! (those with it belong to [`crate::vxlan`]), never a foreign route. The kernel side acts
//! on the calling thread's network namespace and blocks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlag, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::IpVersion;

use crate::error::{Error, Result};
use crate::link::{is_errno, with_handle};

/// The routing protocol number marking Capstan's routes (`ip route show proto 202`); an
/// unassigned value in iproute2's `rt_protos`.
pub const ROUTE_PROTOCOL: u8 = 202;

/// A route to another node's pod subnet via that node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRoute {
    /// The other node's pod subnet.
    pub subnet: Ipv4Net,
    /// The other node's address, reachable directly from this node.
    pub via: Ipv4Addr,
}

impl fmt::Display for PeerRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.subnet, self.via)
    }
}

/// What [`diff_routes`] decided: routes to remove, then routes to add. A changed gateway is a
/// removal of the old route plus an addition of the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteDiff {
    /// Present routes that are not wanted (sorted).
    pub remove: Vec<PeerRoute>,
    /// Wanted routes that are not present (sorted).
    pub add: Vec<PeerRoute>,
}

impl RouteDiff {
    /// True if the table already matches.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.add.is_empty()
    }
}

/// Computes the changes that make `present` (our routes in the table) equal to `wanted`.
/// Pure. Refuses a `wanted` list with a subnet that is not a network address or that appears
/// twice with different gateways; exact duplicates are merged.
pub fn diff_routes(wanted: &[PeerRoute], present: &[PeerRoute]) -> Result<RouteDiff> {
    let mut want: BTreeMap<Ipv4Net, Ipv4Addr> = BTreeMap::new();
    for route in wanted {
        if route.subnet.addr() != route.subnet.network() {
            return Err(Error::Invalid {
                what: "peer route",
                value: route.to_string(),
                reason: format!("subnet must be written as {}", route.subnet.trunc()),
            });
        }
        if let Some(other) = want.insert(route.subnet, route.via) {
            if other != route.via {
                return Err(Error::Invalid {
                    what: "peer route",
                    value: route.to_string(),
                    reason: format!("subnet is also routed via {other}"),
                });
            }
        }
    }
    let mut diff = RouteDiff::default();
    for route in present {
        if want.get(&route.subnet) != Some(&route.via) {
            diff.remove.push(*route);
        }
    }
    for (subnet, via) in want {
        let route = PeerRoute { subnet, via };
        if !present.contains(&route) {
            diff.add.push(route);
        }
    }
    diff.remove.sort();
    diff.remove.dedup();
    diff.add.sort();
    Ok(diff)
}

/// The routes this module owns in some routing table; the kernel's main table in
/// production ([`KernelRoutes`]), a fake in unit tests.
pub trait RouteTable {
    /// Our routes (protocol [`ROUTE_PROTOCOL`]) currently present.
    fn owned_routes(&self) -> Result<Vec<PeerRoute>>;
    /// Installs `route`, marked as ours.
    fn add_route(&self, route: &PeerRoute) -> Result<()>;
    /// Removes our `route`; a route already gone is fine.
    fn remove_route(&self, route: &PeerRoute) -> Result<()>;
}

/// Makes `table`'s routes match `wanted` exactly (see [`diff_routes`]) and returns what it
/// changed. Removals go first so a moved subnet never has two routes.
pub fn sync_routes_in(table: &impl RouteTable, wanted: &[PeerRoute]) -> Result<RouteDiff> {
    let diff = diff_routes(wanted, &table.owned_routes()?)?;
    for route in &diff.remove {
        table.remove_route(route)?;
        tracing::info!(message = "peer route removed", route = %route);
    }
    for route in &diff.add {
        table.add_route(route)?;
        tracing::info!(message = "peer route added", route = %route);
    }
    Ok(diff)
}

/// Makes the main routing table of the calling thread's network namespace hold exactly
/// `wanted` among Capstan's routes. Blocks.
pub fn sync_routes(wanted: &[PeerRoute]) -> Result<RouteDiff> {
    sync_routes_in(&KernelRoutes, wanted)
}

/// The main routing table of the calling thread's network namespace, via rtnetlink.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelRoutes;

impl RouteTable for KernelRoutes {
    fn owned_routes(&self) -> Result<Vec<PeerRoute>> {
        with_handle("routes", |handle| async move {
            let messages: Vec<RouteMessage> = handle
                .route()
                .get(IpVersion::V4)
                .execute()
                .try_collect()
                .await
                .map_err(|source| route_error("list", "all", source))?;
            let mut routes: Vec<PeerRoute> = messages.iter().filter_map(parse_owned).collect();
            routes.sort();
            Ok(routes)
        })
    }

    fn add_route(&self, route: &PeerRoute) -> Result<()> {
        let route = *route;
        with_handle("routes", |handle| async move {
            let mut request = handle.route().add().v4();
            *request.message_mut() = route_message(&route);
            match request.execute().await {
                Ok(()) => Ok(()),
                Err(source) => Err(route_error("add", &route.to_string(), source)),
            }
        })
    }

    fn remove_route(&self, route: &PeerRoute) -> Result<()> {
        let route = *route;
        with_handle("routes", |handle| async move {
            match handle.route().del(route_message(&route)).execute().await {
                Ok(()) => Ok(()),
                Err(err) if is_errno(&err, nix::libc::ESRCH) => Ok(()),
                Err(source) => Err(route_error("delete", &route.to_string(), source)),
            }
        })
    }
}

/// The netlink message for one of our routes in the main table.
fn route_message(route: &PeerRoute) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = route.subnet.prefix_len();
    message.header.table = RouteHeader::RT_TABLE_MAIN;
    message.header.protocol = RouteProtocol::from(ROUTE_PROTOCOL);
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    message.attributes = vec![
        RouteAttribute::Destination(RouteAddress::Inet(route.subnet.network())),
        RouteAttribute::Gateway(RouteAddress::Inet(route.via)),
    ];
    message
}

/// Our host-gw route in `message`, or `None` for anything foreign (other protocol or table,
/// no gateway, not IPv4) and for our VXLAN routes, which are `onlink` (see [`crate::vxlan`]).
fn parse_owned(message: &RouteMessage) -> Option<PeerRoute> {
    let header = &message.header;
    if header.protocol != RouteProtocol::from(ROUTE_PROTOCOL)
        || header.address_family != AddressFamily::Inet
        || header.flags.contains(&RouteFlag::Onlink)
    {
        return None;
    }
    let mut table = u32::from(header.table);
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let mut via = None;
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let subnet = Ipv4Net::new(destination, header.destination_prefix_length).ok()?;
    Some(PeerRoute { subnet, via: via? })
}

fn route_error(op: &'static str, route: &str, source: rtnetlink::Error) -> Error {
    Error::NetlinkRoute {
        op,
        route: route.to_owned(),
        source: Box::new(source),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    fn r(subnet: &str, via: &str) -> PeerRoute {
        PeerRoute {
            subnet: subnet.parse().unwrap(),
            via: via.parse().unwrap(),
        }
    }

    #[test]
    fn diff_adds_missing_removes_stale_and_keeps_matching() {
        let present = [
            r("10.244.1.0/24", "192.168.0.2"),
            r("10.244.9.0/24", "192.168.0.9"),
        ];
        let wanted = [
            r("10.244.1.0/24", "192.168.0.2"),
            r("10.244.2.0/24", "192.168.0.3"),
        ];
        let diff = diff_routes(&wanted, &present).unwrap();
        assert_eq!(diff.remove, vec![r("10.244.9.0/24", "192.168.0.9")]);
        assert_eq!(diff.add, vec![r("10.244.2.0/24", "192.168.0.3")]);
    }

    #[test]
    fn a_changed_gateway_is_a_remove_and_an_add() {
        let diff = diff_routes(
            &[r("10.244.1.0/24", "192.168.0.7")],
            &[r("10.244.1.0/24", "192.168.0.2")],
        )
        .unwrap();
        assert_eq!(diff.remove, vec![r("10.244.1.0/24", "192.168.0.2")]);
        assert_eq!(diff.add, vec![r("10.244.1.0/24", "192.168.0.7")]);
    }

    #[test]
    fn matching_tables_need_nothing_and_duplicates_merge() {
        let routes = [
            r("10.244.1.0/24", "192.168.0.2"),
            r("10.244.1.0/24", "192.168.0.2"),
        ];
        assert!(diff_routes(&routes, &routes[..1]).unwrap().is_empty());
    }

    #[test]
    fn conflicting_or_unaligned_wanted_routes_are_refused() {
        let conflict = [
            r("10.244.1.0/24", "192.168.0.2"),
            r("10.244.1.0/24", "192.168.0.3"),
        ];
        assert!(matches!(
            diff_routes(&conflict, &[]),
            Err(Error::Invalid { .. })
        ));
        let unaligned = [r("10.244.1.5/24", "192.168.0.2")];
        assert!(matches!(
            diff_routes(&unaligned, &[]),
            Err(Error::Invalid { .. })
        ));
    }

    #[derive(Default)]
    struct FakeTable {
        routes: Mutex<Vec<PeerRoute>>,
        log: Mutex<Vec<String>>,
    }

    impl RouteTable for FakeTable {
        fn owned_routes(&self) -> Result<Vec<PeerRoute>> {
            Ok(self.routes.lock().unwrap().clone())
        }
        fn add_route(&self, route: &PeerRoute) -> Result<()> {
            let mut routes = self.routes.lock().unwrap();
            assert!(
                routes.iter().all(|p| p.subnet != route.subnet),
                "two routes for {}",
                route.subnet
            );
            routes.push(*route);
            self.log.lock().unwrap().push(format!("add {route}"));
            Ok(())
        }
        fn remove_route(&self, route: &PeerRoute) -> Result<()> {
            self.routes.lock().unwrap().retain(|p| p != route);
            self.log.lock().unwrap().push(format!("remove {route}"));
            Ok(())
        }
    }

    #[test]
    fn sync_removes_before_adding_and_converges() {
        let table = FakeTable::default();
        table
            .routes
            .lock()
            .unwrap()
            .push(r("10.244.1.0/24", "192.168.0.2"));
        let wanted = [r("10.244.1.0/24", "192.168.0.7")];
        let diff = sync_routes_in(&table, &wanted).unwrap();
        assert_eq!(diff.add.len(), 1);
        assert_eq!(
            *table.log.lock().unwrap(),
            vec![
                "remove 10.244.1.0/24 via 192.168.0.2".to_owned(),
                "add 10.244.1.0/24 via 192.168.0.7".to_owned()
            ]
        );
        assert!(sync_routes_in(&table, &wanted).unwrap().is_empty());
    }

    #[test]
    fn only_main_table_routes_with_our_protocol_are_parsed_as_ours() {
        let ours = route_message(&r("10.244.1.0/24", "192.168.0.2"));
        assert_eq!(parse_owned(&ours), Some(r("10.244.1.0/24", "192.168.0.2")));
        let mut foreign = ours.clone();
        foreign.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_owned(&foreign), None);
        let mut other_table = ours.clone();
        other_table.header.table = 100;
        assert_eq!(parse_owned(&other_table), None);
        let mut vxlan = ours.clone();
        vxlan.header.flags.push(RouteFlag::Onlink);
        assert_eq!(
            parse_owned(&vxlan),
            None,
            "vxlan routes are not host-gw routes"
        );
    }
}
