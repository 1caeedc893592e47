//! `capstan exec`: runs a command in a running container through its node's service and
//! exits with the command's exit code (like `kubectl exec`, without stdin or a TTY yet).

use std::io::Write;

use actors::node_service::pb::node_service_client::NodeServiceClient;
use actors::node_service::pb::ExecRequest;
use clap::Args;

/// Flags of `capstan exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Pod name.
    pod: String,
    /// Container name (needed when the pod has several).
    #[arg(short = 'c', long, default_value = "")]
    container: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// The command ran and exited with a non-zero code: the CLI exits with it, printing nothing.
#[derive(Debug)]
pub struct Exited(pub i32);

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "command exited with {}", self.0)
    }
}

impl std::error::Error for Exited {}

/// Runs `exec`.
pub async fn run(server: &str, a: ExecArgs) -> anyhow::Result<()> {
    let node_url = super::logs::node_service_url(server, &a.namespace, &a.pod).await?;
    let mut client = NodeServiceClient::connect(node_url.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the node service at {node_url}: {e}"))?;
    let req = ExecRequest {
        namespace: a.namespace,
        pod: a.pod,
        container: a.container,
        command: a.command,
    };
    let mut stream = client
        .exec(req)
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut exit_code = None;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        out.write_all(&chunk.stdout)?;
        out.flush()?;
        err.write_all(&chunk.stderr)?;
        if chunk.exit_code.is_some() {
            exit_code = chunk.exit_code;
        }
    }
    match exit_code {
        Some(0) => Ok(()),
        Some(code) => Err(Exited(code).into()),
        None => anyhow::bail!("the node ended the exec without an exit code"),
    }
}
