//! The scheduler actor: binds pending pods to ready nodes. Decisions come from the pure
//! [`decide::pick_node`]; this module only reads state from the registry and writes Bindings.
//! Level-triggered: every pass re-reads all pods and nodes.

pub mod decide;

use std::collections::HashMap;
use std::time::Duration;

use api::v1::{self, Object};
use api::Kind;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::apiserver::registry::{now_rfc3339, set_pod_condition};
use crate::apiserver::Registry;
use crate::error::Result;
use crate::trigger::spawn_watch_trigger;

/// Registered name of the scheduler actor.
pub const NAME: &str = "scheduler";

/// Messages of the [`Scheduler`].
#[derive(Debug)]
pub enum SchedulerMsg {
    /// Something changed (or the resync timer fired): run a scheduling pass. May be dropped.
    Sync,
}

/// The scheduler actor.
#[derive(Debug, Default)]
pub struct Scheduler;

/// State of the [`Scheduler`].
#[derive(Debug)]
pub struct SchedulerState {
    registry: Registry,
    round_robin: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How often the scheduler re-checks even without events.
const RESYNC: Duration = Duration::from_secs(5);

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = Registry;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        registry: Registry,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let mut tasks = Vec::new();
        for kind in [Kind::Pod, Kind::Node] {
            let reg = registry.clone();
            tasks.push(spawn_watch_trigger(
                myself.clone(),
                move || {
                    let reg = reg.clone();
                    async move { reg.watch(kind, "", "", "").await.map(Box::pin) }
                },
                || SchedulerMsg::Sync,
            ));
        }
        tasks.push(myself.send_interval(RESYNC, || SchedulerMsg::Sync));
        Ok(SchedulerState {
            registry,
            round_robin: 0,
            tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.tasks.iter().for_each(|t| t.abort());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            SchedulerMsg::Sync => {
                if let Err(e) = schedule_pass(state).await {
                    tracing::warn!(error = %e, "scheduling pass failed; will retry");
                }
            }
        }
        Ok(())
    }
}

async fn schedule_pass(state: &mut SchedulerState) -> Result<()> {
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
        match decide::pick_node(pod, &nodes, &load, state.round_robin) {
            Ok(node) => {
                state.round_robin = state.round_robin.wrapping_add(1);
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
