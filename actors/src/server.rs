//! Wires one Capstan server process: the raft store, the API server, the root supervisor with
//! the scheduler and this node's agent, and the gRPC endpoint. Owns start-up order and shutdown;
//! holds no logic of its own.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ractor::Actor;
use tokio_stream::wrappers::TcpListenerStream;

use crate::agent::{self, AgentContext, NodeAgent};
use crate::apiserver::{ApiService, Registry};
use crate::controllers::decide_node::LifecycleConfig;
use crate::controllers::node_lifecycle::{self, NodeLifecycle, NodeLifecycleArgs};
use crate::error::{Error, Result};
use crate::node_service::{pb, DebugService, NodeService};
use crate::restart::RestartPolicy;
use crate::scheduler::{self, Scheduler};
use crate::supervisor::{ChildSpec, Supervisor, SupervisorArgs};

/// How long each shutdown step may take before it is cut short.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Registered name of the root supervisor.
pub const ROOT: &str = "root";

/// Settings of a server process.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the store and the runtime keep their data.
    pub data_dir: PathBuf,
    /// gRPC listen address (API, logs, debug).
    pub listen: SocketAddr,
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
    /// When silent nodes turn `Ready=Unknown` and their pods are evicted.
    pub node_lifecycle: LifecycleConfig,
}

/// Runs a server until `shutdown` resolves. `on_ready` gets the bound address.
pub async fn run(
    cfg: ServerConfig,
    on_ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: cfg.data_dir.join("store"),
    })
    .await?;
    let registry = Registry::new(store.clone());
    registry.ensure_namespace("default").await?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::FailedPrecondition(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::FailedPrecondition(e.to_string()))?;

    let runtime = Arc::new(runtime::Runtime::new(runtime::RuntimeConfig {
        root: cfg.data_dir.join("runtime"),
        shim_exe: cfg.shim_exe.clone(),
    })?);
    let netns = Arc::new(net::NetnsManager::new(cfg.netns_dir.clone())?);
    let client = api::client::Client::connect_lazy(format!("http://{addr}"))
        .map_err(|e| Error::Client(e.to_string()))?;
    let ctx = AgentContext {
        node_name: cfg.node_name.clone(),
        host_ip: cfg.host_ip.clone(),
        client,
        runtime,
        netns,
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let debug = cfg
        .enable_debug_service
        .then(|| pb::debug_service_server::DebugServiceServer::new(DebugService));
    let grpc = tonic::transport::Server::builder()
        .add_service(api::v1::api_server::ApiServer::new(ApiService::new(
            registry.clone(),
        )))
        .add_service(pb::node_service_server::NodeServiceServer::new(
            NodeService::new(ctx.clone()),
        ))
        .add_optional_service(debug)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let grpc = tokio::spawn(grpc);
    tracing::info!(addr = %addr, node = %cfg.node_name, "API server listening");

    let children = vec![
        scheduler_child(registry.clone()),
        node_lifecycle_child(NodeLifecycleArgs {
            registry: registry.clone(),
            config: cfg.node_lifecycle,
        }),
        agent_child(ctx),
    ];
    let (root, root_handle) = Actor::spawn(
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
    })?;
    on_ready(addr);

    tokio::select! {
        _ = shutdown => tracing::info!("shutting down"),
        _ = root_handle => tracing::error!("root supervisor exited; shutting down"),
    }
    // Actors first (they stop their watch tasks), then the endpoint, then the store; open
    // client streams must not hold the process: the endpoint gets a few seconds to drain.
    if root.get_status() == ractor::ActorStatus::Running {
        let _ = root
            .stop_and_wait(Some("shutdown".into()), Some(SHUTDOWN_GRACE))
            .await;
    }
    let _ = stop_tx.send(());
    store.shutdown().await?;
    if tokio::time::timeout(SHUTDOWN_GRACE, grpc).await.is_err() {
        tracing::warn!("gRPC connections still open after the grace period; closing them");
    }
    tracing::info!("stopped; containers keep running under their shims");
    Ok(())
}

fn scheduler_child(registry: Registry) -> ChildSpec {
    ChildSpec {
        id: scheduler::NAME.to_string(),
        start: Arc::new(move |sup| {
            let registry = registry.clone();
            Box::pin(async move {
                let (r, _) = Actor::spawn_linked(
                    Some(scheduler::NAME.to_string()),
                    Scheduler,
                    registry,
                    sup,
                )
                .await?;
                Ok(r.get_cell())
            })
        }),
    }
}

fn node_lifecycle_child(args: NodeLifecycleArgs) -> ChildSpec {
    ChildSpec {
        id: node_lifecycle::NAME.to_string(),
        start: Arc::new(move |sup| {
            let args = args.clone();
            Box::pin(async move {
                let name = Some(node_lifecycle::NAME.to_string());
                let (r, _) = Actor::spawn_linked(name, NodeLifecycle, args, sup).await?;
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
