//! Node subnets: the cluster CIDR (default 10.244.0.0/16) is cut into per-node subnets
//! (default /24) and each node claims one through a compare-and-swap in the cluster store.
//! The choice is a pure function; the store is reached only through [`SubnetRegistry`],
//! which `actors` implements over raftstore. This module must not know the store.

use std::future::Future;

use ipnet::Ipv4Net;

use crate::error::{Error, Result};
use crate::subnet::MAX_POD_SUBNET_PREFIX;

/// How many lost claims [`allocate_node_subnet`] tolerates before giving up.
pub const MAX_CLAIM_ATTEMPTS: u32 = 16;

/// The cluster's pod address range and the size of each node's share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCidr {
    cidr: Ipv4Net,
    node_prefix: u8,
}

impl Default for ClusterCidr {
    /// 10.244.0.0/16 split into /24s, as Kubernetes' flannel defaults do.
    fn default() -> ClusterCidr {
        ClusterCidr {
            cidr: Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).unwrap_or_default(),
            node_prefix: 24,
        }
    }
}

impl ClusterCidr {
    /// A cluster CIDR `cidr` (written as its network address) split into `/node_prefix`
    /// node subnets; `node_prefix` must lie between the CIDR's prefix and /30.
    pub fn new(cidr: Ipv4Net, node_prefix: u8) -> Result<ClusterCidr> {
        let invalid = |reason: String| Error::Invalid {
            what: "cluster CIDR",
            value: format!("{cidr} split into /{node_prefix}"),
            reason,
        };
        if cidr.addr() != cidr.network() {
            return Err(invalid(format!("must be written as {}", cidr.trunc())));
        }
        if node_prefix < cidr.prefix_len() || node_prefix > MAX_POD_SUBNET_PREFIX {
            return Err(invalid(format!(
                "node prefix must lie within /{}../{MAX_POD_SUBNET_PREFIX}",
                cidr.prefix_len()
            )));
        }
        Ok(ClusterCidr { cidr, node_prefix })
    }

    /// The whole pod address range.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The prefix length of each node's subnet.
    pub fn node_prefix(&self) -> u8 {
        self.node_prefix
    }

    /// True if `subnet` is one of this cluster's node subnets.
    pub fn holds(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.node_prefix
            && subnet.addr() == subnet.network()
            && self.cidr.contains(&subnet)
    }
}

/// One node's claim on a subnet, as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetClaim {
    /// The claimed subnet.
    pub subnet: Ipv4Net,
    /// The node holding it.
    pub node: String,
}

/// The cluster store's record of which node holds which subnet. Implemented by `actors`
/// over raftstore; `claim` must be a compare-and-swap on the subnet so that two nodes can
/// never both win it. Wrap implementation errors with [`Error::registry`].
pub trait SubnetRegistry {
    /// The subnet `node` holds, if any.
    fn get(&self, node: &str) -> impl Future<Output = Result<Option<Ipv4Net>>> + Send;
    /// Records `subnet` as held by `node` if nobody holds it yet: `Ok(true)` if this call won,
    /// `Ok(false)` if the subnet was already held (by anyone, this node included).
    fn claim(&self, subnet: Ipv4Net, node: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Every recorded claim.
    fn list(&self) -> impl Future<Output = Result<Vec<SubnetClaim>>> + Send;
}

/// The first node subnet of `cluster` that overlaps none of `taken`. Pure.
pub fn pick_free_subnet(cluster: &ClusterCidr, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let overlaps = |a: &Ipv4Net, b: &Ipv4Net| a.contains(&b.network()) || b.contains(&a.network());
    cluster
        .cidr
        .subnets(cluster.node_prefix)
        .ok()?
        .find(|candidate| !taken.iter().any(|t| overlaps(candidate, t)))
}

/// The subnet of `node`: the one it already holds (so a restart gets the same), else a free
/// one claimed now. A lost compare-and-swap (another node took that subnet first) re-reads
/// the claims and tries again, up to [`MAX_CLAIM_ATTEMPTS`] times. Call it from one agent
/// per node: two concurrent calls for the same node may each claim a subnet.
pub async fn allocate_node_subnet(
    registry: &impl SubnetRegistry,
    cluster: &ClusterCidr,
    node: &str,
) -> Result<Ipv4Net> {
    for attempt in 1..=MAX_CLAIM_ATTEMPTS {
        if let Some(subnet) = registry.get(node).await? {
            if !cluster.holds(subnet) {
                return Err(Error::SubnetOutsideCidr {
                    node: node.to_owned(),
                    subnet,
                    cidr: cluster.cidr,
                });
            }
            return Ok(subnet);
        }
        let taken: Vec<Ipv4Net> = registry
            .list()
            .await?
            .into_iter()
            .map(|claim| claim.subnet)
            .collect();
        let subnet = pick_free_subnet(cluster, &taken).ok_or(Error::NodeSubnetsExhausted {
            cidr: cluster.cidr,
            node_prefix: cluster.node_prefix,
        })?;
        if registry.claim(subnet, node).await? {
            tracing::info!(message = "node subnet claimed", node, subnet = %subnet);
            return Ok(subnet);
        }
        tracing::debug!(message = "node subnet claim lost, retrying", node, subnet = %subnet, attempt);
    }
    Err(Error::SubnetClaimContended {
        node: node.to_owned(),
        attempts: MAX_CLAIM_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// In-memory registry with a real compare-and-swap; `thief` makes the first `n` claims
    /// lose to a node called `thief`, as if it had raced us.
    #[derive(Default)]
    struct MemRegistry {
        claims: Mutex<BTreeMap<Ipv4Net, String>>,
        steal_next: AtomicU32,
        claim_calls: AtomicU32,
    }

    impl SubnetRegistry for MemRegistry {
        async fn get(&self, node: &str) -> Result<Option<Ipv4Net>> {
            tokio::task::yield_now().await;
            let claims = self.claims.lock().unwrap();
            Ok(claims.iter().find(|(_, n)| *n == node).map(|(s, _)| *s))
        }
        async fn claim(&self, subnet: Ipv4Net, node: &str) -> Result<bool> {
            tokio::task::yield_now().await;
            self.claim_calls.fetch_add(1, Ordering::SeqCst);
            let mut claims = self.claims.lock().unwrap();
            if self
                .steal_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                claims.insert(subnet, "thief".to_owned());
                return Ok(false);
            }
            if claims.contains_key(&subnet) {
                return Ok(false);
            }
            claims.insert(subnet, node.to_owned());
            Ok(true)
        }
        async fn list(&self) -> Result<Vec<SubnetClaim>> {
            tokio::task::yield_now().await;
            let claims = self.claims.lock().unwrap();
            Ok(claims
                .iter()
                .map(|(subnet, node)| SubnetClaim {
                    subnet: *subnet,
                    node: node.clone(),
                })
                .collect())
        }
    }

    #[test]
    fn default_is_10_244_split_into_24s() {
        let c = ClusterCidr::default();
        assert_eq!(c.cidr(), net("10.244.0.0/16"));
        assert_eq!(c.node_prefix(), 24);
    }

    #[test]
    fn cluster_cidr_refuses_bad_splits() {
        assert!(ClusterCidr::new(net("10.244.0.0/16"), 15).is_err());
        assert!(ClusterCidr::new(net("10.244.0.0/16"), 31).is_err());
        assert!(ClusterCidr::new(net("10.244.1.0/16"), 24).is_err());
        assert!(ClusterCidr::new(net("10.244.0.0/16"), 16).is_ok());
    }

    #[test]
    fn pick_takes_the_first_subnet_overlapping_nothing() {
        let c = ClusterCidr::default();
        assert_eq!(pick_free_subnet(&c, &[]), Some(net("10.244.0.0/24")));
        let taken = [net("10.244.0.0/24"), net("10.244.2.0/24")];
        assert_eq!(pick_free_subnet(&c, &taken), Some(net("10.244.1.0/24")));
        // A wider foreign claim blocks every /24 inside it.
        let taken = [net("10.244.0.0/23")];
        assert_eq!(pick_free_subnet(&c, &taken), Some(net("10.244.2.0/24")));
    }

    #[test]
    fn pick_returns_none_when_full() {
        let c = ClusterCidr::new(net("10.0.0.0/23"), 24).unwrap();
        assert_eq!(
            pick_free_subnet(&c, &[net("10.0.0.0/24"), net("10.0.1.0/24")]),
            None
        );
    }

    #[tokio::test]
    async fn allocation_is_stable_across_restarts() {
        let registry = MemRegistry::default();
        let c = ClusterCidr::default();
        let first = allocate_node_subnet(&registry, &c, "node-a").await.unwrap();
        let again = allocate_node_subnet(&registry, &c, "node-a").await.unwrap();
        assert_eq!(first, again);
        let other = allocate_node_subnet(&registry, &c, "node-b").await.unwrap();
        assert_ne!(first, other);
    }

    #[tokio::test]
    async fn a_lost_cas_retries_with_the_next_free_subnet() {
        let registry = MemRegistry::default();
        registry.steal_next.store(2, Ordering::SeqCst);
        let subnet = allocate_node_subnet(&registry, &ClusterCidr::default(), "node-a")
            .await
            .unwrap();
        assert_eq!(subnet, net("10.244.2.0/24"), "the thief holds .0 and .1");
        assert_eq!(registry.claim_calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn endless_contention_gives_up_with_a_typed_error() {
        let registry = MemRegistry::default();
        registry.steal_next.store(u32::MAX, Ordering::SeqCst);
        let err = allocate_node_subnet(&registry, &ClusterCidr::default(), "node-a").await;
        assert!(matches!(
            err,
            Err(Error::SubnetClaimContended {
                attempts: MAX_CLAIM_ATTEMPTS,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn exhaustion_and_foreign_subnets_are_typed_errors() {
        let registry = MemRegistry::default();
        let small = ClusterCidr::new(net("10.9.0.0/24"), 24).unwrap();
        allocate_node_subnet(&registry, &small, "a").await.unwrap();
        assert!(matches!(
            allocate_node_subnet(&registry, &small, "b").await,
            Err(Error::NodeSubnetsExhausted { .. })
        ));
        // Node "a" holds 10.9.0.0/24, which the default CIDR does not contain.
        assert!(matches!(
            allocate_node_subnet(&registry, &ClusterCidr::default(), "a").await,
            Err(Error::SubnetOutsideCidr { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_nodes_never_share_a_subnet() {
        // Fewer nodes than MAX_CLAIM_ATTEMPTS: in the worst interleaving a node loses once to
        // every other node.
        const NODES: usize = 12;
        let registry = Arc::new(MemRegistry::default());
        let c = ClusterCidr::default();
        let tasks: Vec<_> = (0..NODES)
            .map(|i| {
                let registry = Arc::clone(&registry);
                tokio::spawn(async move {
                    allocate_node_subnet(registry.as_ref(), &c, &format!("node-{i}")).await
                })
            })
            .collect();
        let mut got = Vec::new();
        for task in tasks {
            got.push(task.await.unwrap().unwrap());
        }
        got.sort();
        got.dedup();
        assert_eq!(got.len(), NODES, "every node has its own subnet");
        assert!(got.iter().all(|s| c.holds(*s)));
    }
}
