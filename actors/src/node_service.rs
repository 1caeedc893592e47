//! Node-level gRPC services: container logs and exec (what kubelet serves to `kubectl logs`
//! and `kubectl exec`) and the
//! debug service that lets chaos tests kill actors by name (off unless enabled).

use std::pin::Pin;
use std::time::Duration;

use api::client::ClientError;
use api::v1;
use api::Kind;
use futures::Stream;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::{Request, Response, Status};

use crate::agent::context::blocking;
use crate::agent::AgentContext;

/// Generated types of `capstan.node.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("capstan.node.v1");
}

/// Strips the CRI framing (`<time> <stream> <P|F> <text>`) from one log line.
/// Returns the text, with a newline unless the line was a partial (`P`) one.
pub fn cri_payload(line: &str) -> Option<String> {
    let mut parts = line.splitn(4, ' ');
    let (_time, _stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
    let text = parts.next().unwrap_or("");
    match tag {
        "F" => Some(format!("{text}\n")),
        "P" => Some(text.to_string()),
        _ => None,
    }
}

/// Serves `capstan.node.v1.NodeService` for the pods of this node.
#[derive(Debug, Clone)]
pub struct NodeService {
    ctx: AgentContext,
}

impl NodeService {
    /// A service over the agent's context.
    pub fn new(ctx: AgentContext) -> Self {
        NodeService { ctx }
    }

    /// The named (or only) container of the pod, and its attempts on this node, newest first.
    async fn attempts(
        &self,
        namespace: &str,
        pod_name: &str,
        container: &str,
    ) -> Result<(String, Vec<runtime::ContainerStatus>), Status> {
        let obj = self
            .ctx
            .client
            .get(Kind::Pod, namespace, pod_name)
            .await
            .map_err(|e| match e {
                ClientError::NotFound(m) => Status::not_found(m),
                other => Status::unavailable(other.to_string()),
            })?;
        let Some(v1::object::Kind::Pod(pod)) = obj.kind else {
            return Err(Status::not_found(format!(
                "pod {namespace}/{pod_name} not found"
            )));
        };
        let uid = pod
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default();
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let container = match (container.is_empty(), names.as_slice()) {
            (false, _) if names.iter().any(|n| n == container) => container.to_owned(),
            (false, _) => {
                return Err(Status::invalid_argument(format!(
                    "container: Invalid value: {container:?}: not a container of pod {pod_name}; choose one of: {}",
                    names.join(", ")
                )))
            }
            (true, [only]) => only.clone(),
            (true, _) => {
                return Err(Status::invalid_argument(format!(
                    "container: Required value: pod {pod_name} has {} containers; choose one of: {}",
                    names.len(),
                    names.join(", ")
                )))
            }
        };
        let rt = self.ctx.runtime.clone();
        let c2 = container.clone();
        let mut attempts: Vec<runtime::ContainerStatus> = blocking(move || {
            Ok(rt
                .list_containers()?
                .into_iter()
                .filter(|c| c.pod_uid == uid && c.container_name == c2)
                .collect())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        attempts.sort_by_key(|r| std::cmp::Reverse(r.attempt));
        Ok((container, attempts))
    }
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;
type ExecStream = Pin<Box<dyn Stream<Item = Result<pb::ExecOutput, Status>> + Send>>;

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeService {
    type LogsStream = LogStream;
    type ExecStream = ExecStream;

    async fn exec(&self, req: Request<pb::ExecRequest>) -> Result<Response<ExecStream>, Status> {
        let r = req.into_inner();
        if r.command.is_empty() || r.command[0].is_empty() {
            return Err(Status::invalid_argument("command: Required value"));
        }
        let (container, attempts) = self.attempts(&r.namespace, &r.pod, &r.container).await?;
        let running = attempts
            .first()
            .filter(|a| matches!(a.state, runtime::ContainerState::Running { .. }));
        let Some(record) = running.cloned() else {
            return Err(Status::failed_precondition(format!(
                "container {container:?} of pod {:?} is not running",
                r.pod
            )));
        };
        let (rt, id, argv) = (
            self.ctx.runtime.clone(),
            record.id.clone(),
            r.command.clone(),
        );
        let child = blocking(move || Ok(rt.spawn_exec(&id, &argv)?))
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        tracing::info!(namespace = %r.namespace, pod = %r.pod, container = %container, command = ?r.command, "exec");
        Ok(Response::new(Box::pin(exec_stream(child))))
    }

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<LogStream>, Status> {
        let r = req.into_inner();
        let (container, attempts) = self.attempts(&r.namespace, &r.pod, &r.container).await?;
        let pick = if r.previous {
            attempts.get(1)
        } else {
            attempts.first()
        };
        let Some(record) = pick.cloned() else {
            return Err(Status::failed_precondition(format!(
                "container {container:?} in pod {:?} has not {} yet",
                r.pod,
                if r.previous {
                    "been restarted"
                } else {
                    "started"
                }
            )));
        };
        let runtime = self.ctx.runtime.clone();
        let follow = r.follow;
        let stream = async_stream(record, runtime, follow);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Streams the exec'd process's output as it comes, then its exit code.
fn exec_stream(
    mut child: std::process::Child,
) -> impl Stream<Item = Result<pb::ExecOutput, Status>> + Send {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let pump = |stream: Option<Box<dyn Read + Send>>, tx: tokio::sync::mpsc::Sender<_>, is_err| {
        tokio::task::spawn_blocking(move || {
            let Some(mut stream) = stream else { return };
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let data = buf[..n].to_vec();
                let chunk = if is_err {
                    pb::ExecOutput {
                        stderr: data,
                        ..Default::default()
                    }
                } else {
                    pb::ExecOutput {
                        stdout: data,
                        ..Default::default()
                    }
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        })
    };
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let (out, err) = (pump(out, tx.clone(), false), pump(err, tx.clone(), true));
    tokio::spawn(async move {
        let _ = out.await;
        let _ = err.await;
        let status = tokio::task::spawn_blocking(move || child.wait()).await;
        let last = match status {
            Ok(Ok(status)) => Ok(pb::ExecOutput {
                exit_code: Some(status.code().unwrap_or(runtime::shim::EXEC_FAILED)),
                ..Default::default()
            }),
            Ok(Err(e)) => Err(Status::internal(format!("waiting for exec: {e}"))),
            Err(e) => Err(Status::internal(e.to_string())),
        };
        let _ = tx.send(last).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn async_stream(
    record: runtime::ContainerStatus,
    rt: std::sync::Arc<runtime::Runtime>,
    follow: bool,
) -> impl Stream<Item = Result<pb::LogChunk, Status>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let file = match tokio::fs::File::open(&record.log_path).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::not_found(format!("log of {}: {e}", record.id))))
                    .await;
                return;
            }
        };
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) => {
                    if !follow || !still_running(&rt, &record.id).await {
                        // One more read: the container may have written just before it exited.
                        line.clear();
                        if matches!(reader.read_line(&mut line).await, Ok(n) if n > 0) {
                            continue_line(&tx, &line).await;
                            continue;
                        }
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(_) => {
                    if !continue_line(&tx, &line).await {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn continue_line(
    tx: &tokio::sync::mpsc::Sender<Result<pb::LogChunk, Status>>,
    line: &str,
) -> bool {
    match cri_payload(line.trim_end_matches('\n')) {
        Some(text) => tx
            .send(Ok(pb::LogChunk {
                data: text.into_bytes(),
            }))
            .await
            .is_ok(),
        None => true,
    }
}

async fn still_running(rt: &std::sync::Arc<runtime::Runtime>, id: &str) -> bool {
    let (rt, id) = (rt.clone(), id.to_string());
    let st = blocking(move || Ok(rt.container_status(&id)?)).await;
    matches!(
        st,
        Ok(Some(runtime::ContainerStatus {
            state: runtime::ContainerState::Running { .. },
            ..
        }))
    )
}

/// Serves `capstan.node.v1.DebugService`: list and kill actors by name.
#[derive(Debug, Clone, Default)]
pub struct DebugService;

#[tonic::async_trait]
impl pb::debug_service_server::DebugService for DebugService {
    async fn list_actors(
        &self,
        _req: Request<pb::ListActorsRequest>,
    ) -> Result<Response<pb::ListActorsResponse>, Status> {
        let mut actors: Vec<pb::ActorInfo> = ractor::registry::registered()
            .into_iter()
            .filter_map(|name| {
                ractor::registry::where_is(name.clone()).map(|cell| pb::ActorInfo {
                    name: name.to_string(),
                    id: cell.get_id().to_string(),
                })
            })
            .collect();
        actors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(pb::ListActorsResponse { actors }))
    }

    async fn kill_actor(
        &self,
        req: Request<pb::KillActorRequest>,
    ) -> Result<Response<pb::KillActorResponse>, Status> {
        let name = req.into_inner().name;
        let cell = ractor::registry::where_is(name.clone())
            .ok_or_else(|| Status::not_found(format!("no actor named {name:?}")))?;
        let id = cell.get_id().to_string();
        tracing::warn!(actor = %name, actor_id = %id, "killing actor on request of the debug service");
        cell.kill();
        Ok(Response::new(pb::KillActorResponse { id }))
    }
}

#[cfg(test)]
mod tests {
    use super::cri_payload;

    #[test]
    fn cri_framing_is_removed() {
        assert_eq!(
            cri_payload("2026-01-01T00:00:00.1Z stdout F hello world").as_deref(),
            Some("hello world\n")
        );
        assert_eq!(
            cri_payload("2026-01-01T00:00:00.1Z stderr P part").as_deref(),
            Some("part")
        );
        assert_eq!(
            cri_payload("2026-01-01T00:00:00.1Z stdout F ").as_deref(),
            Some("\n")
        );
        assert_eq!(cri_payload("garbage"), None);
    }
}
