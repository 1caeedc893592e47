//! The node agent (Capstan's kubelet): registers its Node, heartbeats, and runs one supervised
//! [`pod_worker::PodWorker`] per pod bound to this node. It restarts a worker that crashed or was
//! killed (with back-off and a budget, escalating when it is spent), and removes containers and
//! network namespaces that belong to no pod any more.

pub mod context;
pub mod dns;
pub mod env;
pub mod hooks;
pub mod images;
pub mod network;
pub mod node;
pub mod plan;
pub mod pod_files;
pub mod pod_worker;
pub mod probe;
pub mod prober;
pub mod proxy;
pub mod security;
pub mod service_env;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use api::client::ClientError;
use api::v1::{self, Object};
use api::Kind;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use context::blocking;
pub use context::AgentContext;
use pod_worker::{PodWorker, PodWorkerArgs, PodWorkerMsg};

use crate::error::{Error, Result};
use crate::restart::{RestartDecision, RestartPolicy, RestartTracker};
use crate::trigger::spawn_watch_trigger;

/// Registered name of the node agent of `node`.
pub fn agent_name(node: &str) -> String {
    format!("node-agent/{node}")
}

/// How often the agent re-lists its pods without a trigger.
const RESYNC: Duration = Duration::from_secs(5);
/// How often the agent renews its Node's Ready condition.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Messages of the [`NodeAgent`].
#[derive(Debug)]
pub enum NodeAgentMsg {
    /// Pods changed or the resync timer fired: converge the set of workers. May be dropped.
    Sync,
    /// Renew the Node's status. May be dropped (the next one comes).
    Heartbeat,
}

/// The node agent actor.
#[derive(Debug, Default)]
pub struct NodeAgent;

type PodKey = (String, String);

struct Worker {
    actor: ActorRef<PodWorkerMsg>,
    uid: String,
}

/// State of the [`NodeAgent`].
pub struct NodeAgentState {
    ctx: AgentContext,
    machine: node::MachineInfo,
    workers: HashMap<PodKey, Worker>,
    by_actor: HashMap<ActorId, PodKey>,
    trackers: HashMap<PodKey, RestartTracker>,
    hold_until: HashMap<PodKey, Instant>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The node's cluster DNS (with a pod network only); serves once the bridge is up.
    dns: Option<dns::NodeDns>,
}

impl std::fmt::Debug for NodeAgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgentState")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Actor for NodeAgent {
    type Msg = NodeAgentMsg;
    type State = NodeAgentState;
    type Arguments = AgentContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: AgentContext,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let mut state = NodeAgentState {
            ctx,
            machine: node::MachineInfo::gather(),
            workers: HashMap::new(),
            by_actor: HashMap::new(),
            trackers: HashMap::new(),
            hold_until: HashMap::new(),
            tasks: Vec::new(),
            dns: None,
        };
        if state.ctx.network.is_some() {
            state.dns = Some(dns::NodeDns::new(state.ctx.dns.clone())?);
        }
        register(&state).await?;
        // Pods drive the workers; Nodes, Services and Endpoints drive routes and the proxy.
        for kind in [Kind::Pod, Kind::Node, Kind::Service, Kind::Endpoints] {
            let client = state.ctx.client.clone();
            state.tasks.push(spawn_watch_trigger(
                myself.clone(),
                move || {
                    let client = client.clone();
                    async move { client.watch(kind, "", "", "").await }
                },
                || NodeAgentMsg::Sync,
            ));
        }
        state
            .tasks
            .push(myself.send_interval(RESYNC, || NodeAgentMsg::Sync));
        state
            .tasks
            .push(myself.send_interval(HEARTBEAT, || NodeAgentMsg::Heartbeat));
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        state.tasks.iter().for_each(|t| t.abort());
        // Workers stop with the agent; their containers keep running under their shims.
        myself
            .stop_children_and_wait(
                Some("node agent stopped".into()),
                Some(crate::supervisor::CHILD_STOP_GRACE),
            )
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let res = match msg {
            NodeAgentMsg::Sync => sync(&myself, state).await,
            NodeAgentMsg::Heartbeat => register(state).await,
        };
        if let Err(e) = res {
            tracing::warn!(node = %state.ctx.node_name, error = %e, "node agent pass failed; will retry");
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let Some((cell, reason)) = crate::supervisor::child_exit(evt) else {
            return Ok(());
        };
        let Some(key) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.workers.remove(&key);
        if reason == pod_worker::DONE {
            state.trackers.remove(&key);
            return Ok(());
        }
        let policy = RestartPolicy::default();
        let tracker = state
            .trackers
            .entry(key.clone())
            .or_insert_with(|| RestartTracker::new(policy));
        match tracker.failed(Instant::now()) {
            RestartDecision::RestartAfter(delay) => {
                tracing::warn!(namespace = %key.0, pod = %key.1, reason = %reason, delay_ms = delay.as_millis() as u64, "pod worker exited; restarting");
                state.hold_until.insert(key, Instant::now() + delay);
                myself.send_after(delay, || NodeAgentMsg::Sync);
                Ok(())
            }
            RestartDecision::Escalate => {
                Err(format!("pod worker {}/{} exceeded its restart budget", key.0, key.1).into())
            }
        }
    }
}

/// Creates or refreshes this node's Node object.
async fn register(state: &NodeAgentState) -> Result<()> {
    let ctx = &state.ctx;
    let now = crate::apiserver::registry::now_rfc3339();
    let existing = match ctx.client.get(Kind::Node, "", &ctx.node_name).await {
        Ok(o) => Some(o),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => return Err(Error::Client(e.to_string())),
    };
    let previous = existing.as_ref().and_then(|o| match &o.kind {
        Some(v1::object::Kind::Node(n)) => n.status.clone(),
        _ => None,
    });
    let status = node::node_status(
        &state.machine,
        &ctx.host_ip,
        &ctx.node_name,
        &now,
        previous.as_ref(),
    );
    match existing {
        Some(Object {
            kind: Some(v1::object::Kind::Node(mut n)),
            ..
        }) => {
            let meta = n.metadata.get_or_insert_with(Default::default);
            let url = meta.annotations.get(context::NODE_SERVICE_ANNOTATION);
            if url != Some(&ctx.node_service_url) {
                // The node service moved (new port after a restart): publish it.
                meta.annotations.insert(
                    context::NODE_SERVICE_ANNOTATION.to_string(),
                    ctx.node_service_url.clone(),
                );
                meta.resource_version.clear();
                let updated = ctx
                    .client
                    .update(Object::from(n.clone()))
                    .await
                    .map_err(|e| Error::Client(e.to_string()))?;
                n = updated.into_node().unwrap_or(n);
            }
            n.status = Some(status);
            if let Some(m) = n.metadata.as_mut() {
                m.resource_version.clear();
            }
            ctx.client
                .update_status(Object::from(n))
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
        }
        _ => {
            let n = v1::Node {
                metadata: Some(v1::ObjectMeta {
                    name: ctx.node_name.clone(),
                    labels: std::collections::BTreeMap::from([(
                        "kubernetes.io/hostname".to_string(),
                        ctx.node_name.clone(),
                    )]),
                    annotations: std::collections::BTreeMap::from([(
                        context::NODE_SERVICE_ANNOTATION.to_string(),
                        ctx.node_service_url.clone(),
                    )]),
                    ..Default::default()
                }),
                spec: Some(v1::NodeSpec::default()),
                status: None,
            };
            let created = ctx
                .client
                .create(Object::from(n))
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
            let mut n = match created.kind {
                Some(v1::object::Kind::Node(n)) => n,
                _ => return Ok(()),
            };
            n.status = Some(status);
            // The control plane may have changed the new Node already (its pod subnet).
            if let Some(m) = n.metadata.as_mut() {
                m.resource_version.clear();
            }
            ctx.client
                .update_status(Object::from(n))
                .await
                .map_err(|e| Error::Client(e.to_string()))?;
            tracing::info!(node = %ctx.node_name, "node registered");
        }
    }
    Ok(())
}

/// Converges workers to the pods bound to this node, and collects orphaned containers.
async fn sync(myself: &ActorRef<NodeAgentMsg>, state: &mut NodeAgentState) -> Result<()> {
    let objects = state
        .ctx
        .client
        .list(Kind::Pod, "", "")
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    let mine: Vec<v1::Pod> = objects
        .into_iter()
        .filter_map(|o| match o.kind {
            Some(v1::object::Kind::Pod(p)) => Some(p),
            _ => None,
        })
        .filter(|p| {
            p.spec
                .as_ref()
                .is_some_and(|s| s.node_name == state.ctx.node_name)
        })
        .collect();
    let now = Instant::now();
    for pod in &mine {
        let meta = pod.metadata.clone().unwrap_or_default();
        let key = (meta.namespace.clone(), meta.name.clone());
        if let Some(w) = state.workers.get(&key) {
            let _ = w.actor.send_message(PodWorkerMsg::Sync);
            continue;
        }
        if state.hold_until.get(&key).is_some_and(|t| *t > now) {
            continue;
        }
        state.hold_until.remove(&key);
        let args = PodWorkerArgs {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            ctx: state.ctx.clone(),
        };
        let name = pod_worker::worker_name(&meta.namespace, &meta.name);
        match Actor::spawn_linked(Some(name.clone()), PodWorker, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                if let Some(t) = state.trackers.get_mut(&key) {
                    t.started(now);
                }
                state.by_actor.insert(actor.get_id(), key.clone());
                state.workers.insert(
                    key,
                    Worker {
                        actor,
                        uid: meta.uid.clone(),
                    },
                );
                tracing::info!(namespace = %meta.namespace, pod = %meta.name, "pod worker started");
            }
            Err(e) => {
                // A worker left over from a killed agent still holds the name: stop it, the
                // next sync starts one under this agent.
                if let Some(stale) = ractor::registry::where_is(name.clone()) {
                    stale.stop(Some("replaced by a restarted node agent".into()));
                }
                tracing::warn!(actor = %name, error = %e, "cannot start pod worker yet");
            }
        }
    }
    if let Some(network) = state.ctx.network.clone() {
        if let Err(e) = sync_network(state, &network, &mine).await {
            tracing::warn!(node = %state.ctx.node_name, error = %e, "pod network sync failed; will retry");
        }
    }
    collect_orphans(state, &mine).await
}

/// Brings the node's bridge up once the control plane assigned its subnet, keeps the way to
/// the other nodes' subnets (host-gw routes or VXLAN entries) exact, serves cluster DNS on the
/// bridge gateway with the current Services, and frees addresses of pods that are gone.
async fn sync_network(
    state: &mut NodeAgentState,
    network: &std::sync::Arc<network::PodNetwork>,
    mine: &[v1::Pod],
) -> Result<()> {
    let ctx = &state.ctx;
    let nodes: Vec<v1::Node> = ctx
        .client
        .list(Kind::Node, "", "")
        .await
        .map_err(|e| Error::Client(e.to_string()))?
        .into_iter()
        .filter_map(|o| o.into_node())
        .collect();
    if network.subnet().is_none() {
        let me = nodes
            .iter()
            .find(|n| n.metadata.as_ref().is_some_and(|m| m.name == ctx.node_name));
        let Some(subnet) = me.and_then(network::assigned_subnet) else {
            tracing::debug!(node = %ctx.node_name, "no pod subnet assigned yet");
            return Ok(());
        };
        let (n, node_ip) = (network.clone(), ctx.host_ip.clone());
        blocking(move || n.init(subnet, &node_ip)).await?;
    }
    let routes = network::peer_routes(&nodes, &ctx.node_name, &ctx.host_ip);
    let live: Vec<String> = mine
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
        .chain(state.workers.values().map(|w| w.uid.clone()))
        .collect();
    let services: Vec<v1::Service> = list_typed(ctx, Kind::Service).await?;
    let endpoints: Vec<v1::Endpoints> = list_typed(ctx, Kind::Endpoints).await?;
    if let (Some(dns), Some(subnet)) = (state.dns.as_mut(), network.subnet()) {
        if let Err(e) = dns.ensure_serving(net::subnet::gateway(subnet)).await {
            tracing::warn!(node = %ctx.node_name, error = %e, "cluster DNS not serving yet; will retry");
        }
        if dns.update(&services, &endpoints)? {
            tracing::info!(node = %ctx.node_name, services = services.len(), "cluster DNS records updated");
        }
    }
    let proxy = proxy::proxy_input(&services, &endpoints);
    let node_ip = ctx.host_ip.parse().ok();
    let (n, host_ip) = (network.clone(), ctx.host_ip.clone());
    blocking(move || {
        n.sync_services(&proxy, node_ip)?;
        let changes = n.sync_peers(&routes, &host_ip)?;
        if changes.added > 0 || changes.removed > 0 {
            tracing::info!(
                added = changes.added,
                removed = changes.removed,
                "routes to other nodes updated"
            );
        }
        n.reconcile(live.iter().map(String::as_str))
    })
    .await
}

/// Removes containers and network namespaces of pods that no longer exist here and that no
/// worker owns (e.g. deleted while the agent was down).
async fn collect_orphans(state: &NodeAgentState, mine: &[v1::Pod]) -> Result<()> {
    let mut live: HashSet<String> = mine
        .iter()
        .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
        .collect();
    live.extend(state.workers.values().map(|w| w.uid.clone()));
    let (rt, mgr) = (state.ctx.runtime.clone(), state.ctx.netns.clone());
    let pods_dir = state.ctx.pods_dir.clone();
    blocking(move || {
        if let Ok(entries) = std::fs::read_dir(&pods_dir) {
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().to_string();
                if !live.contains(&uid) {
                    tracing::info!(pod_uid = %uid, "removing orphaned pod files");
                    pod_files::remove(&entry.path())?;
                }
            }
        }
        for c in rt.list_containers()? {
            if !live.contains(&c.pod_uid) {
                tracing::info!(container = %c.id, pod_uid = %c.pod_uid, "removing orphaned container");
                rt.stop_container(&c.id, Duration::from_secs(10))?;
                rt.remove_container(&c.id)?;
            }
        }
        for ns in mgr.list()? {
            let owned = ns.strip_prefix("pod-").is_some_and(|uid| live.contains(uid));
            if !owned {
                tracing::info!(netns = %ns, "removing orphaned network namespace");
                mgr.delete(&ns)?;
            }
        }
        Ok(())
    })
    .await
}

async fn list_typed<T: api::Resource>(ctx: &AgentContext, kind: Kind) -> Result<Vec<T>> {
    let objs = ctx
        .client
        .list(kind, "", "")
        .await
        .map_err(|e| Error::Client(e.to_string()))?;
    Ok(objs.into_iter().filter_map(|o| o.into_typed()).collect())
}
