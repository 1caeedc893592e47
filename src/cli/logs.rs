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
    let mut client = NodeServiceClient::connect(server.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the Capstan server at {server}: {e}"))?;
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
