//! The node IPAM controller: gives every Node a pod subnet (`spec.podCIDR`) out of the cluster
//! CIDR, as Kubernetes' nodeipam controller does. It is the only writer of `podCIDR`, and each
//! claim is a compare-and-swap on the Node's resourceVersion, so no two nodes share a subnet and
//! a node keeps its subnet across restarts.

use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;
use net::{ClusterCidr, Ipv4Net, SubnetClaim, SubnetRegistry};

use super::runner::Pass;
use crate::agent::network::assigned_subnet;
use crate::apiserver::Registry;
use crate::error::Error;

/// Registered name of the node IPAM controller.
pub const NAME: &str = "node-ipam";

/// How often the controller re-checks without events.
const RESYNC: Duration = Duration::from_secs(10);

/// Node subnets as stored on the Node objects, seen through `net`'s registry trait.
#[derive(Debug, Clone)]
pub struct NodeCidrs {
    registry: Registry,
}

impl NodeCidrs {
    /// Subnets kept in `registry`'s Node objects.
    pub fn new(registry: Registry) -> Self {
        NodeCidrs { registry }
    }

    async fn nodes(&self) -> net::Result<Vec<v1::Node>> {
        let (objs, _) = self
            .registry
            .list(Kind::Node, "", "")
            .await
            .map_err(|e| net::Error::registry("list nodes", e))?;
        Ok(objs.into_iter().filter_map(|o| o.into_node()).collect())
    }
}

impl SubnetRegistry for NodeCidrs {
    async fn get(&self, node: &str) -> net::Result<Option<Ipv4Net>> {
        match self.registry.get(Kind::Node, "", node).await {
            Ok(o) => Ok(o.into_node().as_ref().and_then(assigned_subnet)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(net::Error::registry("get node", e)),
        }
    }

    async fn claim(&self, subnet: Ipv4Net, node: &str) -> net::Result<bool> {
        let taken = self
            .nodes()
            .await?
            .iter()
            .any(|n| assigned_subnet(n) == Some(subnet));
        if taken {
            return Ok(false);
        }
        let obj = self
            .registry
            .get(Kind::Node, "", node)
            .await
            .map_err(|e| net::Error::registry("get node", e))?;
        let Some(mut n) = obj.into_node() else {
            return Ok(false);
        };
        let spec = n.spec.get_or_insert_with(Default::default);
        if !spec.pod_cidr.is_empty() {
            return Ok(false);
        }
        spec.pod_cidr = subnet.to_string();
        match self.registry.update(Object::from(n)).await {
            Ok(_) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(net::Error::registry("update node", e)),
        }
    }

    async fn list(&self) -> net::Result<Vec<SubnetClaim>> {
        Ok(self
            .nodes()
            .await?
            .iter()
            .filter_map(|n| {
                let subnet = assigned_subnet(n)?;
                let node = n.metadata.as_ref()?.name.clone();
                Some(SubnetClaim { subnet, node })
            })
            .collect())
    }
}

/// Arguments of the node IPAM controller; also its [`Pass`].
#[derive(Debug, Clone)]
pub struct NodeIpamArgs {
    /// The API registry.
    pub registry: Registry,
    /// The cluster CIDR and per-node prefix.
    pub cluster: ClusterCidr,
}

impl Pass for NodeIpamArgs {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Node];
    const RESYNC: Duration = RESYNC;

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(
        &self,
        _now: chrono::DateTime<chrono::Utc>,
    ) -> crate::error::Result<Option<Duration>> {
        assign_missing(self).await;
        Ok(None)
    }
}

/// Assigns a subnet to every node that has none.
pub async fn assign_missing(args: &NodeIpamArgs) {
    let cidrs = NodeCidrs::new(args.registry.clone());
    let nodes = match cidrs.nodes().await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list nodes; will retry");
            return;
        }
    };
    for node in nodes.iter().filter(|n| assigned_subnet(n).is_none()) {
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        match net::allocate_node_subnet(&cidrs, &args.cluster, &name).await {
            Ok(subnet) => tracing::info!(node = %name, subnet = %subnet, "pod subnet assigned"),
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot assign a pod subnet yet"),
        }
    }
}
