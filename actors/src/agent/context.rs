//! What every node-agent actor shares: the node's identity, the API client, the container
//! runtime and the network-namespace manager.

use std::path::PathBuf;
use std::sync::Arc;

use api::client::Client;

/// Shared, read-only context of the node agent and its pod workers.
#[derive(Clone)]
pub struct AgentContext {
    /// Name of this node (its Node object).
    pub node_name: String,
    /// The node's address, reported as the pods' hostIP.
    pub host_ip: String,
    /// URL of this node's own service (logs), published on the Node object.
    pub node_service_url: String,
    /// API client (the agent talks to the API server like any remote agent would).
    pub client: Client,
    /// The container runtime (blocking; call it through `spawn_blocking`).
    pub runtime: Arc<runtime::Runtime>,
    /// Pulls images into the runtime's store (async; concurrent pulls of one image are shared).
    pub puller: runtime::Puller,
    /// Pod network namespaces (blocking; call it through `spawn_blocking`).
    pub netns: Arc<net::NetnsManager>,
    /// The bridge pod network, when this node runs one (`None`: pods get loopback only).
    pub network: Option<Arc<super::network::PodNetwork>>,
    /// Cluster DNS; the node serves it on its bridge gateway when it has a pod network.
    pub dns: super::dns::DnsSettings,
    /// Where each pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are kept, in
    /// `<pods_dir>/<uid>/`, and its volumes, in `<pods_dir>/<uid>/volumes/`.
    pub pods_dir: PathBuf,
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Annotation on a Node carrying the URL of its node service (logs, exec later).
pub const NODE_SERVICE_ANNOTATION: &str = "capstan.io/node-service-url";

/// Runs blocking runtime/netns work off the async threads.
pub async fn blocking<T, F>(f: F) -> crate::error::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> crate::error::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::Error::Task(e.to_string()))?
}

/// Name of a pod's network namespace.
pub fn netns_name(pod_uid: &str) -> String {
    format!("pod-{pod_uid}")
}

/// Runtime id of one attempt of one container of a pod.
pub fn container_id(pod_uid: &str, container: &str, attempt: u32) -> String {
    format!("{pod_uid}-{container}-{attempt}")
}
