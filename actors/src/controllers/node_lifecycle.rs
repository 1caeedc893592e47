//! The node lifecycle controller: notices nodes whose agent stopped heartbeating, marks them
//! `Ready=Unknown` and their pods not ready, and evicts the pods of nodes that stayed not-ready
//! past the eviction timeout. Decisions come from [`super::decide_node`]; the shared
//! [`super::runner`] actor runs the passes; this module only reads state from the registry and
//! writes the results. Level-triggered: every pass re-reads all.

use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;

use super::decide_node::{evicts_pods, stale_ready_condition, LifecycleConfig};
use super::runner::Pass;
use crate::apiserver::registry::set_pod_condition;
use crate::apiserver::Registry;
use crate::error::Result;

/// Registered name of the node lifecycle controller.
pub const NAME: &str = "node-lifecycle";

/// How often the controller checks the nodes.
const PERIOD: Duration = Duration::from_secs(5);

/// Arguments of the node lifecycle controller; also its [`Pass`].
#[derive(Debug, Clone)]
pub struct NodeLifecycleArgs {
    /// The API registry.
    pub registry: Registry,
    /// Grace period and eviction timeout.
    pub config: LifecycleConfig,
}

impl Pass for NodeLifecycleArgs {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Node];
    const RESYNC: Duration = PERIOD;

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Option<Duration>> {
        pass(self, now).await.map(|()| None)
    }
}

/// One pass over all nodes and their pods at `now`.
pub async fn pass(args: &NodeLifecycleArgs, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
    let reg = &args.registry;
    let (nodes, _) = reg.list(Kind::Node, "", "").await?;
    let mut not_ready = Vec::new();
    let mut evicting = Vec::new();
    for obj in nodes {
        let Some(v1::object::Kind::Node(mut node)) = obj.kind else {
            continue;
        };
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if let Some(cond) = stale_ready_condition(&node, now, &args.config) {
            let status = node.status.get_or_insert_with(Default::default);
            status.conditions.retain(|c| c.r#type != "Ready");
            status.conditions.push(cond);
            reg.update_status(Object::from(node.clone())).await?;
            tracing::warn!(node = %name, "node stopped heartbeating; marked Ready=Unknown");
        }
        let ready = node.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
        });
        if !ready {
            if evicts_pods(&node, now, &args.config) {
                evicting.push(name.clone());
            }
            not_ready.push(name);
        }
    }
    if not_ready.is_empty() {
        return Ok(());
    }
    let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (pods, _) = reg.list(Kind::Pod, "", "").await?;
    for obj in pods {
        let Some(v1::object::Kind::Pod(mut pod)) = obj.kind else {
            continue;
        };
        let node = pod
            .spec
            .as_ref()
            .map(|s| s.node_name.clone())
            .unwrap_or_default();
        let meta = pod.metadata.clone().unwrap_or_default();
        if !not_ready.contains(&node) || !meta.deletion_timestamp.is_empty() {
            continue;
        }
        if evicting.contains(&node) {
            reg.delete(Kind::Pod, &meta.namespace, &meta.name).await?;
            tracing::warn!(namespace = %meta.namespace, pod = %meta.name, node = %node, "pod evicted from a lost node");
            continue;
        }
        let status = pod.status.get_or_insert_with(Default::default);
        let before = status.conditions.clone();
        set_pod_condition(status, "Ready", "False", &now_s);
        if status.conditions != before {
            reg.update_status(Object::from(pod)).await?;
        }
    }
    Ok(())
}
