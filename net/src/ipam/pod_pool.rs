//! The pod addresses of one node subnet as plain data: which pod uid holds which address,
//! and where the next search starts. Pure (serialisable, no I/O); [`super::PodIpam`]
//! persists it.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::subnet::{is_pod_address, validate_pod_subnet};

/// Address allocations of one node subnet. `.1` is the gateway and never handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPool {
    subnet: Ipv4Net,
    /// The address handed out last; the next search starts after it, so a released
    /// address is not reused at once (stale ARP and conntrack entries would hit the new pod).
    #[serde(default)]
    last: Option<Ipv4Addr>,
    allocations: BTreeMap<String, Ipv4Addr>,
}

impl PodPool {
    /// An empty pool over `subnet` (see [`crate::subnet::validate_pod_subnet`]).
    pub fn new(subnet: Ipv4Net) -> Result<PodPool> {
        validate_pod_subnet(subnet)?;
        Ok(PodPool {
            subnet,
            last: None,
            allocations: BTreeMap::new(),
        })
    }

    /// The subnet addresses come from.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The address of `pod_uid`, if it holds one.
    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.allocations.get(pod_uid).copied()
    }

    /// Every allocation, by pod uid.
    pub fn allocations(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.allocations
    }

    /// The address of `pod_uid`: the one it holds, else the next free one after the last
    /// handed out (wrapping). Idempotent per uid.
    pub fn allocate(&mut self, pod_uid: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.get(pod_uid) {
            return Ok(ip);
        }
        let used: HashSet<Ipv4Addr> = self.allocations.values().copied().collect();
        let first = u32::from(self.subnet.network());
        let size = 1u64 << (32 - u32::from(self.subnet.prefix_len()));
        let start = self
            .last
            .filter(|ip| self.subnet.contains(ip))
            .map_or(0, |ip| u64::from(u32::from(ip) - first) + 1);
        let found = (0..size)
            .map(|step| (start + step) % size)
            // `size` is at most 2^32 and the offset below it, so the sum stays in u32.
            .map(|offset| Ipv4Addr::from(first.wrapping_add(offset as u32)))
            .find(|ip| is_pod_address(self.subnet, *ip) && !used.contains(ip))
            .ok_or(Error::PodAddressesExhausted {
                subnet: self.subnet,
            })?;
        self.allocations.insert(pod_uid.to_owned(), found);
        self.last = Some(found);
        Ok(found)
    }

    /// Frees the address of `pod_uid` and returns it; `None` if it held none.
    pub fn release(&mut self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.allocations.remove(pod_uid)
    }

    /// Frees the address of every pod not in `live_uids` (leaked by a crash between
    /// allocate and pod start, or by a missed release) and returns what it freed.
    pub fn reconcile<'a>(
        &mut self,
        live_uids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(String, Ipv4Addr)> {
        let live: HashSet<&str> = live_uids.into_iter().collect();
        let leaked: Vec<String> = self
            .allocations
            .keys()
            .filter(|uid| !live.contains(uid.as_str()))
            .cloned()
            .collect();
        leaked
            .into_iter()
            .filter_map(|uid| self.allocations.remove(&uid).map(|ip| (uid, ip)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pool(s: &str) -> PodPool {
        PodPool::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn first_address_is_dot_two_and_allocation_is_idempotent() {
        let mut p = pool("10.244.3.0/24");
        assert_eq!(p.allocate("a").unwrap(), Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(p.allocate("a").unwrap(), Ipv4Addr::new(10, 244, 3, 2));
        assert_eq!(p.allocate("b").unwrap(), Ipv4Addr::new(10, 244, 3, 3));
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let mut p = pool("10.244.3.0/24");
        let a = p.allocate("a").unwrap();
        assert_eq!(p.release("a"), Some(a));
        assert_eq!(p.release("a"), None);
        assert_ne!(p.allocate("b").unwrap(), a);
    }

    #[test]
    fn a_full_pool_wraps_then_reports_exhaustion() {
        // A /29 has .2 .. .6 for pods (.0 network, .1 gateway, .7 broadcast).
        let mut p = pool("10.0.0.0/29");
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| p.allocate(&i.to_string()).unwrap())
            .collect();
        assert_eq!(got.first(), Some(&Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(got.last(), Some(&Ipv4Addr::new(10, 0, 0, 6)));
        assert!(matches!(
            p.allocate("x"),
            Err(Error::PodAddressesExhausted { .. })
        ));
        p.release("1");
        assert_eq!(
            p.allocate("x").unwrap(),
            Ipv4Addr::new(10, 0, 0, 3),
            "wrapped to the hole"
        );
    }

    #[test]
    fn reconcile_frees_exactly_the_leaked_addresses() {
        let mut p = pool("10.244.3.0/24");
        let a = p.allocate("a").unwrap();
        let b = p.allocate("b").unwrap();
        let c = p.allocate("c").unwrap();
        let freed = p.reconcile(["a", "c", "unknown"]);
        assert_eq!(freed, vec![("b".to_owned(), b)]);
        assert_eq!(p.get("a"), Some(a));
        assert_eq!(p.get("c"), Some(c));
        assert_eq!(p.get("b"), None);
        assert!(p.reconcile(["a", "c"]).is_empty());
    }
}
