//! `capstan logs`: streams a container's log from the node service.

use std::io::Write;

use actors::node_service::pb::node_service_client::NodeServiceClient;
use actors::node_service::pb::LogsRequest;
use clap::Args;

/// Flags of `capstan logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Pod name.
    pod: String,
    /// Container name (needed when the pod has several).
    #[arg(short = 'c', long, default_value = "")]
    container: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Keep streaming while the container runs.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The previous (terminated) attempt's log.
    #[arg(short = 'p', long)]
    previous: bool,
}

/// Runs `logs`.
pub async fn run(server: &str, a: LogsArgs) -> anyhow::Result<()> {
    let node_url = node_service_url(server, &a.namespace, &a.pod).await?;
    let mut client = NodeServiceClient::connect(node_url.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the node service at {node_url}: {e}"))?;
    let req = LogsRequest {
        namespace: a.namespace,
        pod: a.pod,
        container: a.container,
        follow: a.follow,
        previous: a.previous,
    };
    let mut stream = client
        .logs(req)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

/// The URL of the node service of the node the pod runs on, as its Node object publishes it.
pub(super) async fn node_service_url(
    server: &str,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<String> {
    let api = super::connect(server).await?;
    let obj = api
        .get(api::Kind::Pod, namespace, pod)
        .await
        .map_err(super::get::describe)?;
    let node = obj
        .as_pod()
        .and_then(|p| p.spec.as_ref())
        .map(|s| s.node_name.clone());
    let Some(node) = node.filter(|n| !n.is_empty()) else {
        anyhow::bail!("pod {pod:?} is not scheduled to a node yet");
    };
    let node_obj = api
        .get(api::Kind::Node, "", &node)
        .await
        .map_err(super::get::describe)?;
    node_obj
        .metadata()
        .annotations
        .get(actors::agent::context::NODE_SERVICE_ANNOTATION)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("node {node:?} publishes no node service address"))
}
