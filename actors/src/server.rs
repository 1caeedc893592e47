//! Wires Capstan processes: a server (raft store, API server, root supervisor with the leader
//! elector — which runs the scheduler and controllers while this server holds the lease — and
//! this node's agent, gRPC endpoint) or an agent-only node that joins remote servers. A server
//! embeds a one-member store, or is one member of a store cluster shared by several servers.
//! Owns start-up order and shutdown; holds no logic of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::Actor;

use crate::agent::network::{PodNetwork, PodNetworkConfig};
use crate::agent::{self, AgentContext, NodeAgent};
use crate::apiserver::{ApiService, Registry};
use crate::controllers::decide_node::LifecycleConfig;
use crate::controllers::node_ipam::NodeIpamArgs;
use crate::controllers::node_lifecycle::NodeLifecycleArgs;
use crate::election::elector::ControlPlaneFactory;
use crate::election::{ElectionConfig, Elector, ElectorArgs, LEASE_NAME, LEASE_NAMESPACE};
use crate::error::{Error, Result};
use crate::node_service::{pb, DebugService, NodeService};
use crate::restart::RestartPolicy;
use crate::scheduler::Scheduler;
use crate::supervisor::{ChildSpec, Supervisor, SupervisorArgs};

/// How long each shutdown step may take before it is cut short.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Registered name of the root supervisor.
pub const ROOT: &str = "root";
/// Registered name of the leader elector.
pub const ELECTOR: &str = "leader-elector";
/// Registered name of the supervisor of the scheduler and controllers (only on the leader).
pub const CONTROL_PLANE: &str = "control-plane";
/// How often a server waiting for its store cluster says so.
const STORE_WAIT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// Cluster DNS: served on the bridge gateway when there is a pod network, and the source
    /// of every pod's resolver files.
    pub dns: crate::agent::dns::DnsSettings,
}

/// Where a server's store runs. Either way it lives in `<data dir>/store`.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// A one-member store embedded in this server.
    #[default]
    Single,
    /// One member of a store cluster shared by several servers.
    Cluster {
        /// This member's name in `initial_cluster`.
        name: String,
        /// Where this member's peer service listens.
        listen_peer_url: String,
        /// All initial members: `n1=http://h:2380,n2=...`.
        initial_cluster: String,
        /// A new cluster, or joining an existing one.
        state: raftstore::InitialClusterState,
    },
}

/// Settings of a server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The node part (also used when the server runs no agent: data dir, debug service).
    pub node: NodeSettings,
    /// The store: embedded alone, or a member of a cluster.
    pub store: StoreSettings,
    /// This server's identity in the leader election (the Lease's holder).
    pub identity: String,
    /// Leader-election timing.
    pub election: ElectionConfig,
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
    /// The API servers' URLs; the agent fails over to the next when one is unreachable.
    pub server_urls: Vec<String>,
    /// Listen address of this node's service (logs, debug).
    pub listen: SocketAddr,
}

/// Runs a server until `shutdown` resolves. `on_ready` gets the bound address once the store
/// has a leader and the API serves. With `run_agent` false the server runs no node agent (a
/// control-plane-only server).
pub async fn run(
    cfg: ServerConfig,
    run_agent: bool,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut shutdown = Box::pin(shutdown);
    let store = open_store(&cfg).await?;
    let registry = Registry::new(store.clone()).with_service_cidr(cfg.service_cidr);
    let prepared = tokio::select! {
        r = prepare_registry(&registry) => Some(r),
        _ = &mut shutdown => None,
    };
    match prepared {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            let _ = store.shutdown().await;
            return Err(e);
        }
        None => {
            tracing::info!("shutting down before the store was ready");
            store.shutdown().await?;
            return Ok(());
        }
    }

    let (listener, addr) = listen(cfg.listen).await?;
    let own_api = api::client::Client::connect_lazy(format!("http://{addr}"))
        .map_err(|e| Error::Client(e.to_string()))?;
    let ctx = agent_context(own_api, format!("http://{addr}"), &cfg.node)?;
    let mut endpoint = Endpoint::serve(
        listener,
        Some(registry.clone()),
        ctx.clone(),
        cfg.node.enable_debug_service,
    );
    tracing::info!(addr = %addr, node = %cfg.node.node_name, identity = %cfg.identity, "API server listening");

    let mut children = vec![elector_child(ElectorArgs {
        registry: registry.clone(),
        identity: cfg.identity.clone(),
        config: cfg.election,
        lease_namespace: LEASE_NAMESPACE.into(),
        lease_name: LEASE_NAME.into(),
        control_plane: control_plane(&cfg),
        control_plane_name: Some(CONTROL_PLANE.into()),
    })];
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

/// Opens the embedded one-member store, or starts this server's member of the store cluster
/// (which returns before the cluster has a leader).
async fn open_store(cfg: &ServerConfig) -> Result<raftstore::Store> {
    let data_dir = cfg.node.data_dir.join("store");
    match &cfg.store {
        StoreSettings::Single => Ok(raftstore::Store::open(raftstore::StoreConfig {
            node_id: 1,
            data_dir,
        })
        .await?),
        StoreSettings::Cluster {
            name,
            listen_peer_url,
            initial_cluster,
            state,
        } => {
            let mut member =
                raftstore::ClusterConfig::new(name, data_dir, listen_peer_url, initial_cluster)?;
            member.initial_cluster_state = *state;
            tracing::info!(name = %name, peer_url = %listen_peer_url, "starting store cluster member");
            Ok(raftstore::Store::open_cluster(member).await?)
        }
    }
}

/// Creates the namespaces every cluster has, waiting (and saying so) while the store cluster
/// has no leader yet: the other servers may not be up.
async fn prepare_registry(registry: &Registry) -> Result<()> {
    let started = std::time::Instant::now();
    let mut said = None::<std::time::Instant>;
    for ns in ["default", LEASE_NAMESPACE] {
        loop {
            match registry.ensure_namespace(ns).await {
                Ok(()) => break,
                Err(Error::Store(raftstore::Error::Shutdown)) => {
                    return Err(Error::Store(raftstore::Error::Shutdown))
                }
                Err(Error::Store(e)) => {
                    if said.is_none_or(|t| t.elapsed() >= STORE_WAIT_LOG_EVERY) {
                        tracing::info!(waited_s = started.elapsed().as_secs(), error = %e, "waiting for the store cluster (are the other servers up?)");
                        said = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The scheduler and controllers the leader runs, each writing through the fenced registry.
fn control_plane(cfg: &ServerConfig) -> ControlPlaneFactory {
    let cluster = cfg.cluster_cidr;
    let lifecycle = cfg.node_lifecycle;
    Arc::new(move |registry: Registry| {
        vec![
            controller_child(Scheduler::new(registry.clone())),
            controller_child(NodeIpamArgs {
                registry: registry.clone(),
                cluster,
            }),
            controller_child(NodeLifecycleArgs {
                registry: registry.clone(),
                config: lifecycle,
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
            controller_child(crate::controllers::job::JobController {
                registry: registry.clone(),
            }),
            controller_child(crate::controllers::cronjob::CronJobController {
                registry: registry.clone(),
            }),
            controller_child(crate::controllers::garbage_collector::GarbageCollector { registry }),
        ]
    })
}

/// Runs a node agent that joins the servers at `cfg.server_urls`, until `shutdown` resolves.
pub async fn run_agent(
    cfg: AgentConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (listener, addr) = listen(cfg.listen).await?;
    let servers = cfg
        .server_urls
        .iter()
        .map(|u| crate::failover::parse_server_urls(u))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let client = crate::failover::client(servers)?;
    let ctx = agent_context(client, format!("http://{addr}"), &cfg.node)?;
    let mut endpoint = Endpoint::serve(listener, None, ctx.clone(), cfg.node.enable_debug_service);
    tracing::info!(addr = %addr, node = %cfg.node.node_name, servers = %cfg.server_urls.join(","), "node agent listening");
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
    client: api::client::Client,
    node_service_url: String,
    node: &NodeSettings,
) -> Result<AgentContext> {
    let runtime = Arc::new(runtime::Runtime::new(runtime::RuntimeConfig {
        root: node.data_dir.join("runtime"),
        shim_exe: node.shim_exe.clone(),
    })?);
    let netns = Arc::new(net::NetnsManager::new(node.netns_dir.clone())?);
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
        dns: node.dns.clone(),
        pods_dir: node.data_dir.join("pods"),
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
            .serve_with_incoming_shutdown(raftstore::tcp::incoming_nodelay(listener), async {
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

fn elector_child(args: ElectorArgs) -> ChildSpec {
    ChildSpec {
        id: ELECTOR.to_string(),
        start: Arc::new(move |sup| {
            let args = args.clone();
            Box::pin(async move {
                let name = Some(ELECTOR.to_string());
                let (r, _) = Actor::spawn_linked(name, Elector, args, sup).await?;
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
