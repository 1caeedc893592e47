//! The scheduler: binds pending pods to ready nodes. Decisions come from the pure
//! [`decide::pick_node`]; this module only reads state from the registry and writes Bindings.
//! Level-triggered: every pass re-reads all pods and nodes.

pub mod decide;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;

use crate::apiserver::registry::{now_rfc3339, set_pod_condition};
use crate::apiserver::Registry;
use crate::controllers::runner::Pass;
use crate::error::Result;

/// Registered name of the scheduler's actor.
pub const NAME: &str = "scheduler";

/// The scheduler; its [`Pass`] runs in the shared controller actor.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// The API registry.
    pub registry: Registry,
    /// Rotates the choice among equally good nodes.
    round_robin: Arc<AtomicUsize>,
}

impl Scheduler {
    /// A scheduler binding pods through `registry`.
    pub fn new(registry: Registry) -> Self {
        Scheduler {
            registry,
            round_robin: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// How often the scheduler re-checks even without events.
const RESYNC: Duration = Duration::from_secs(5);

impl Pass for Scheduler {
    const NAME: &'static str = NAME;
    const WATCHED: &'static [Kind] = &[Kind::Pod, Kind::Node];
    const RESYNC: Duration = RESYNC;

    fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn run(&self, _now: chrono::DateTime<chrono::Utc>) -> Result<Option<Duration>> {
        if let Err(e) = schedule_pass(self).await {
            tracing::warn!(error = %e, "scheduling pass failed; will retry");
        }
        Ok(None)
    }
}

async fn schedule_pass(state: &Scheduler) -> Result<()> {
    let (pods, _) = state.registry.list(Kind::Pod, "", "").await?;
    let (nodes, _) = state.registry.list(Kind::Node, "", "").await?;
    let nodes: Vec<v1::Node> = nodes.into_iter().filter_map(into_node).collect();
    let pods: Vec<v1::Pod> = pods.into_iter().filter_map(into_pod).collect();
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in &pods {
        let node = p
            .spec
            .as_ref()
            .map(|s| s.node_name.as_str())
            .unwrap_or_default();
        if !node.is_empty() && !finished(p) {
            *load.entry(node.to_string()).or_default() += 1;
        }
    }
    for pod in pods.iter().filter(|p| pending_unbound(p)) {
        let meta = pod.metadata.clone().unwrap_or_default();
        match decide::pick_node(
            pod,
            &nodes,
            &load,
            state.round_robin.load(Ordering::Relaxed),
        ) {
            Ok(node) => {
                state.round_robin.fetch_add(1, Ordering::Relaxed);
                match state
                    .registry
                    .bind(&meta.namespace, &meta.name, &node)
                    .await
                {
                    Ok(_) => {
                        *load.entry(node.clone()).or_default() += 1;
                        tracing::info!(namespace = %meta.namespace, pod = %meta.name, node = %node, "pod bound");
                    }
                    Err(e) => {
                        tracing::info!(namespace = %meta.namespace, pod = %meta.name, error = %e, "bind failed; will retry")
                    }
                }
            }
            Err(u) => mark_unschedulable(&state.registry, pod, &u.message).await,
        }
    }
    Ok(())
}

async fn mark_unschedulable(registry: &Registry, pod: &v1::Pod, message: &str) {
    let mut status = pod.status.clone().unwrap_or_default();
    let before = status.conditions.clone();
    set_pod_condition(&mut status, "PodScheduled", "False", &now_rfc3339());
    if let Some(c) = status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == "PodScheduled")
    {
        c.reason = "Unschedulable".into();
        c.message = message.to_string();
    }
    if status.conditions == before {
        return;
    }
    let mut pod = pod.clone();
    pod.status = Some(status);
    if let Err(e) = registry.update_status(Object::from(pod)).await {
        tracing::debug!(error = %e, "could not record unschedulable condition");
    }
}

fn into_pod(o: Object) -> Option<v1::Pod> {
    match o.kind {
        Some(v1::object::Kind::Pod(p)) => Some(p),
        _ => None,
    }
}

fn into_node(o: Object) -> Option<v1::Node> {
    match o.kind {
        Some(v1::object::Kind::Node(n)) => Some(n),
        _ => None,
    }
}

fn pending_unbound(p: &v1::Pod) -> bool {
    let unbound = p.spec.as_ref().is_some_and(|s| s.node_name.is_empty());
    let deleting = p
        .metadata
        .as_ref()
        .is_some_and(|m| !m.deletion_timestamp.is_empty());
    unbound && !deleting
}

fn finished(p: &v1::Pod) -> bool {
    matches!(
        p.status.as_ref().map(|s| s.phase.as_str()),
        Some("Succeeded" | "Failed")
    )
}
