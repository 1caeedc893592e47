//! Wires Capstan processes: a server (raft store, API server, root supervisor with the
//! scheduler, controllers and this node's agent, gRPC endpoint) or an agent-only node that
//! joins a remote server. Owns start-up order and shutdown;
//! holds no logic of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::Actor;
use tokio_stream::wrappers::TcpListenerStream;

use crate::agent::network::{PodNetwork, PodNetworkConfig};
use crate::agent::{self, AgentContext, NodeAgent};
use crate::apiserver::{ApiService, Registry};
use crate::controllers::decide_node::LifecycleConfig;
use crate::controllers::node_ipam::NodeIpamArgs;
use crate::controllers::node_lifecycle::NodeLifecycleArgs;
use crate::error::{Error, Result};
use crate::node_service::{pb, DebugService, NodeService};
use crate::restart::RestartPolicy;
use crate::scheduler::Scheduler;
use crate::supervisor::{ChildSpec, Supervisor, SupervisorArgs};

/// How long each shutdown step may take before it is cut short.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Registered name of the root supervisor.
pub const ROOT: &str = "root";

/// Settings every process that runs a node agent has.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Where the store (servers) and the runtime keep their data.
    pub data_dir: PathBuf,
    /// This node's name.
    pub node_name: String,
    /// The address reported for this node and as its pods' hostIP.
    pub host_ip: String,
    /// The `capstan` executable, re-executed as the per-container shim.
    pub shim_exe: PathBuf,
    /// Where pod network namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// Serve the debug service (kill actors by name). Off in production.
    pub enable_debug_service: bool,
    /// This node's bridge pod network (`None`: pods get loopback only).
    pub pod_network: Option<PodNetworkConfig>,
}

/// Settings of a server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The node part (also used when the server runs no agent: data dir, debug service).
    pub node: NodeSettings,
    /// gRPC listen address (API, logs, debug).
    pub listen: SocketAddr,
    /// When silent nodes turn `Ready=Unknown` and their pods are evicted.
    pub node_lifecycle: LifecycleConfig,
    /// The cluster's pod CIDR, split into per-node subnets.
    pub cluster_cidr: net::ClusterCidr,
    /// The Service CIDR ClusterIPs are allocated from.
    pub service_cidr: net::Ipv4Net,
}

/// Settings of an agent-only process (`capstan agent`): a node that joins a remote server.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The node part.
    pub node: NodeSettings,
    /// The API server's URL.
    pub server_url: String,
    /// Listen address of this node's service (logs, debug).
    pub listen: SocketAddr,
}

/// Runs a server until `shutdown` resolves. `on_ready` gets the bound address. With
/// `run_agent` false the server runs no node agent (a control-plane-only server).
pub async fn run(
    cfg: ServerConfig,
    run_agent: bool,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: cfg.node.data_dir.join("store"),
    })
    .await?;
    let registry = Registry::new(store.clone()).with_service_cidr(cfg.service_cidr);
    registry.ensure_namespace("default").await?;

    let (listener, addr) = listen(cfg.listen).await?;
    let ctx = agent_context(
        format!("http://{addr}"),
        format!("http://{addr}"),
        &cfg.node,
    )?;
    let mut endpoint = Endpoint::serve(
        listener,
        Some(registry.clone()),
        ctx.clone(),
        cfg.node.enable_debug_service,
    );
    tracing::info!(addr = %addr, node = %cfg.node.node_name, "API server listening");

    let mut children = vec![
        controller_child(Scheduler::new(registry.clone())),
        controller_child(NodeIpamArgs {
            registry: registry.clone(),
            cluster: cfg.cluster_cidr,
        }),
        controller_child(NodeLifecycleArgs {
            registry: registry.clone(),
            config: cfg.node_lifecycle,
        }),
        controller_child(crate::controllers::replicaset::ReplicaSetController {
            registry: registry.clone(),
        }),
        controller_child(crate::controllers::deployment::DeploymentController {
            registry: registry.clone(),
        }),
        controller_child(crate::controllers::endpoints::EndpointsController {
            registry: registry.clone(),
        }),
        controller_child(crate::controllers::garbage_collector::GarbageCollector {
            registry: registry.clone(),
        }),
    ];
    if run_agent {
        children.push(agent_child(ctx));
    }
    let (root, root_handle) = spawn_root(children).await?;
    on_ready(addr);
    wait_for_stop(shutdown, root_handle).await;
    stop_root(&root).await;
    endpoint.begin_stop();
    store.shutdown().await?;
    endpoint.finish().await;
    tracing::info!("stopped; containers keep running under their shims");
    Ok(())
}

/// Runs a node agent that joins the server at `cfg.server_url`, until `shutdown` resolves.
pub async fn run_agent(
    cfg: AgentConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (listener, addr) = listen(cfg.listen).await?;
    let ctx = agent_context(cfg.server_url.clone(), format!("http://{addr}"), &cfg.node)?;
    let mut endpoint = Endpoint::serve(listener, None, ctx.clone(), cfg.node.enable_debug_service);
    tracing::info!(addr = %addr, node = %cfg.node.node_name, server = %cfg.server_url, "node agent listening");
    let (root, root_handle) = spawn_root(vec![agent_child(ctx)]).await?;
    on_ready(addr);
    wait_for_stop(shutdown, root_handle).await;
    stop_root(&root).await;
    endpoint.begin_stop();
    endpoint.finish().await;
    tracing::info!("stopped; containers keep running under their shims");
    Ok(())
}

async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    Ok((listener, bound))
}

fn agent_context(
    server_url: String,
    node_service_url: String,
    node: &NodeSettings,
) -> Result<AgentContext> {
    let runtime = Arc::new(runtime::Runtime::new(runtime::RuntimeConfig {
        root: node.data_dir.join("runtime"),
        shim_exe: node.shim_exe.clone(),
    })?);
    let netns = Arc::new(net::NetnsManager::new(node.netns_dir.clone())?);
    let client =
        api::client::Client::connect_lazy(server_url).map_err(|e| Error::Client(e.to_string()))?;
    let puller = runtime.puller(runtime::RegistrySettings::default());
    Ok(AgentContext {
        puller,
        node_name: node.node_name.clone(),
        host_ip: node.host_ip.clone(),
        node_service_url,
        client,
        runtime,
        netns,
        network: node
            .pod_network
            .clone()
            .map(|c| Arc::new(PodNetwork::new(c))),
    })
}

/// The process's gRPC endpoint: the API (servers only), the node service and the optional
/// debug service.
struct Endpoint {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl Endpoint {
    fn serve(
        listener: tokio::net::TcpListener,
        registry: Option<Registry>,
        ctx: AgentContext,
        debug: bool,
    ) -> Endpoint {
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let api = registry.map(|r| api::v1::api_server::ApiServer::new(ApiService::new(r)));
        let debug = debug.then(|| pb::debug_service_server::DebugServiceServer::new(DebugService));
        let grpc = tonic::transport::Server::builder()
            .add_optional_service(api)
            .add_service(pb::node_service_server::NodeServiceServer::new(
                NodeService::new(ctx),
            ))
            .add_optional_service(debug)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            });
        Endpoint {
            stop,
            task: tokio::spawn(grpc),
        }
    }

    fn begin_stop(&mut self) {
        let (tx, _) = tokio::sync::oneshot::channel();
        let _ = std::mem::replace(&mut self.stop, tx).send(());
    }

    /// Open client streams must not hold the process: the endpoint gets a few seconds to drain.
    async fn finish(self) {
        if tokio::time::timeout(SHUTDOWN_GRACE, self.task)
            .await
            .is_err()
        {
            tracing::warn!("gRPC connections still open after the grace period; closing them");
        }
    }
}

async fn spawn_root(
    children: Vec<ChildSpec>,
) -> Result<(
    ractor::ActorRef<crate::supervisor::SupervisorMsg>,
    tokio::task::JoinHandle<()>,
)> {
    Actor::spawn(
        Some(ROOT.to_string()),
        Supervisor,
        SupervisorArgs {
            children,
            policy: RestartPolicy::default(),
        },
    )
    .await
    .map_err(|e| Error::Actor {
        actor: ROOT.into(),
        reason: e.to_string(),
    })
}

async fn wait_for_stop(
    shutdown: impl Future<Output = ()> + Send + 'static,
    root_handle: tokio::task::JoinHandle<()>,
) {
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        _ = root_handle => tracing::error!("root supervisor exited; shutting down"),
    }
}

/// Actors stop first: they end their watch tasks, so no stream holds the endpoint open.
async fn stop_root(root: &ractor::ActorRef<crate::supervisor::SupervisorMsg>) {
    if root.get_status() == ractor::ActorStatus::Running {
        let _ = root
            .stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_GRACE))
            .await;
    }
}

/// A workload controller (ReplicaSet, Deployment, garbage collector) run by the shared
/// controller actor, registered under `P::NAME`.
fn controller_child<P: crate::controllers::runner::Pass>(pass: P) -> ChildSpec {
    ChildSpec {
        id: P::NAME.to_string(),
        start: Arc::new(move |sup| {
            let pass = pass.clone();
            Box::pin(async move {
                let name = Some(P::NAME.to_string());
                let actor = crate::controllers::runner::Controller::<P>::default();
                let (r, _) = Actor::spawn_linked(name, actor, pass, sup).await?;
                Ok(r.get_cell())
            })
        }),
    }
}

fn agent_child(ctx: AgentContext) -> ChildSpec {
    let name = agent::agent_name(&ctx.node_name);
    ChildSpec {
        id: name.clone(),
        start: Arc::new(move |sup| {
            let (ctx, name) = (ctx.clone(), name.clone());
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(Some(name), NodeAgent, ctx, sup).await?;
                Ok(r.get_cell())
            })
        }),
    }
}
