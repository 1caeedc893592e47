//! VXLAN between nodes, for nodes that do not share a segment: one VXLAN device per node
//! (`nolearning`, local = the node's address) holding its pod subnet's network address as a
//! /32 and a MAC derived from the subnet, and per peer node a permanent neighbour entry, a
//! permanent FDB entry and an `onlink` route (protocol [`crate::ROUTE_PROTOCOL`]) to its pod
//! subnet. It owns the device ([`device`]), the pure plan of entries ([`plan`]) and its
//! application through the small [`VxlanTable`] trait ([`kernel`] in production). Only
//! entries on our device that follow our scheme are ever read, changed or deleted. The
//! kernel side acts on the calling thread's network namespace and blocks.

pub mod device;
pub mod kernel;
pub mod plan;

use ipnet::Ipv4Net;

pub use device::{delete_vxlan, link_stats, LinkStats, VxlanConfig, VxlanDevice, VXLAN_OVERHEAD};
pub use kernel::KernelVxlan;
pub use plan::{plan, vtep_ip, vtep_mac, MacAddr, VxlanDiff, VxlanEntry, VxlanPeer};

use crate::error::Result;

/// The device name used unless configured otherwise.
pub const DEFAULT_VXLAN_DEVICE: &str = "capstan.vx";

/// The VXLAN network identifier used unless configured otherwise (flannel's default).
pub const DEFAULT_VNI: u32 = 1;

/// The IANA VXLAN UDP port (RFC 7348), used unless configured otherwise.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// The entries this module owns on one VXLAN device; the kernel's in production
/// ([`KernelVxlan`]), a fake in unit tests.
pub trait VxlanTable {
    /// Our entries currently present on the device.
    fn owned_entries(&self) -> Result<Vec<VxlanEntry>>;
    /// Installs `entry`.
    fn add_entry(&self, entry: &VxlanEntry) -> Result<()>;
    /// Removes `entry`; one already gone is fine.
    fn remove_entry(&self, entry: &VxlanEntry) -> Result<()>;
}

/// Makes `table` hold exactly the entries `peers` need (see [`plan`]) and returns what it
/// changed. Removals go first, so a subnet that moved to another node never has two routes.
pub fn sync_peers_in(
    table: &impl VxlanTable,
    local: Ipv4Net,
    peers: &[VxlanPeer],
) -> Result<VxlanDiff> {
    let diff = plan(local, peers, &table.owned_entries()?)?;
    for entry in &diff.remove {
        table.remove_entry(entry)?;
        tracing::info!(message = "vxlan entry removed", entry = %entry);
    }
    for entry in &diff.add {
        table.add_entry(entry)?;
        tracing::info!(message = "vxlan entry added", entry = %entry);
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;
    use crate::error::Error;

    #[derive(Default)]
    struct FakeTable {
        entries: Mutex<Vec<VxlanEntry>>,
        log: Mutex<Vec<String>>,
        fail_add: bool,
    }

    impl VxlanTable for FakeTable {
        fn owned_entries(&self) -> Result<Vec<VxlanEntry>> {
            Ok(self.entries.lock().unwrap().clone())
        }
        fn add_entry(&self, entry: &VxlanEntry) -> Result<()> {
            if self.fail_add {
                return Err(Error::LinkNotFound {
                    link: "capstan.vx".into(),
                });
            }
            self.entries.lock().unwrap().push(*entry);
            self.log.lock().unwrap().push(format!("add {entry}"));
            Ok(())
        }
        fn remove_entry(&self, entry: &VxlanEntry) -> Result<()> {
            self.entries.lock().unwrap().retain(|e| e != entry);
            self.log.lock().unwrap().push(format!("remove {entry}"));
            Ok(())
        }
    }

    fn peer(subnet: &str, ip: &str) -> VxlanPeer {
        VxlanPeer {
            subnet: subnet.parse().unwrap(),
            node_ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn sync_converges_removes_first_and_a_second_sync_does_nothing() {
        let local: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let table = FakeTable::default();
        let two = [
            peer("10.244.1.0/24", "192.168.0.2"),
            peer("10.244.2.0/24", "192.168.0.3"),
        ];
        assert_eq!(sync_peers_in(&table, local, &two).unwrap().add.len(), 6);
        assert!(sync_peers_in(&table, local, &two).unwrap().is_empty());
        table.log.lock().unwrap().clear();
        // Node 2 leaves, node 1 moves to another address.
        let moved = [peer("10.244.1.0/24", "192.168.0.7")];
        let diff = sync_peers_in(&table, local, &moved).unwrap();
        assert_eq!(diff.remove.len(), 4);
        assert_eq!(diff.add.len(), 1);
        let log = table.log.lock().unwrap().clone();
        assert_eq!(log.len(), 5);
        assert!(log[..4].iter().all(|l| l.starts_with("remove")), "{log:?}");
        assert_eq!(log[4], "add fdb 0a:58:0a:f4:01:00 dst 192.168.0.7");
        assert_eq!(table.entries.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_failed_add_is_reported_and_bad_peers_change_nothing() {
        let local: Ipv4Net = "10.244.0.0/24".parse().unwrap();
        let table = FakeTable {
            fail_add: true,
            ..FakeTable::default()
        };
        assert!(sync_peers_in(&table, local, &[peer("10.244.1.0/24", "192.168.0.2")]).is_err());
        let table = FakeTable::default();
        table
            .entries
            .lock()
            .unwrap()
            .extend(plan::wanted_entries(local, &[peer("10.244.1.0/24", "192.168.0.2")]).unwrap());
        assert!(sync_peers_in(&table, local, &[peer("10.244.0.0/24", "192.168.0.2")]).is_err());
        assert_eq!(table.entries.lock().unwrap().len(), 3, "nothing removed");
    }
}
