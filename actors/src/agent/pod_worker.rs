//! The pod worker: one actor per pod bound to this node. Each sync re-reads the pod from the
//! API and the pod's containers from the runtime (never its own memory), plans with
//! [`super::plan`], starts what is missing, and reports the status. Because the truth is re-read,
//! a restarted worker adopts running containers instead of starting second copies.

use std::collections::HashMap;
use std::time::Duration;

use api::client::ClientError;
use api::v1::{self, Object};
use api::Kind;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::context::{blocking, container_id, netns_name, AgentContext};
use super::images;
use super::plan::{self, ContainerAction, StartFailure};
use crate::error::{Error, Result};

/// How often a worker re-syncs without a trigger.
pub const RESYNC: Duration = Duration::from_secs(1);

/// The reason a worker gives when it stops because its pod is gone; the agent does not restart
/// a worker that stopped with it.
pub const DONE: &str = "pod gone";

/// Registered name of the worker of `namespace/name`.
pub fn worker_name(namespace: &str, name: &str) -> String {
    format!("pod-worker/{namespace}/{name}")
}

/// Messages of a [`PodWorker`].
#[derive(Debug)]
pub enum PodWorkerMsg {
    /// Re-read the pod and its containers and converge. May be dropped (the timer resends it).
    Sync,
}

/// The pod worker actor.
#[derive(Debug, Default)]
pub struct PodWorker;

/// Arguments of a [`PodWorker`].
#[derive(Debug, Clone)]
pub struct PodWorkerArgs {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod uid; a pod recreated under the same name is another pod.
    pub uid: String,
    /// Shared agent context.
    pub ctx: AgentContext,
}

/// State of a [`PodWorker`].
#[derive(Debug)]
pub struct PodWorkerState {
    args: PodWorkerArgs,
    start_failures: HashMap<String, StartFailure>,
    pull_failures: HashMap<String, Option<images::PullFailures>>,
    pod_ip: Option<std::net::Ipv4Addr>,
}

impl Actor for PodWorker {
    type Msg = PodWorkerMsg;
    type State = PodWorkerState;
    type Arguments = PodWorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PodWorkerArgs,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        myself.send_message(PodWorkerMsg::Sync)?;
        myself.send_interval(RESYNC, || PodWorkerMsg::Sync);
        Ok(PodWorkerState {
            args,
            start_failures: HashMap::new(),
            pull_failures: HashMap::new(),
            pod_ip: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            PodWorkerMsg::Sync => match sync(state).await {
                Ok(Outcome::Continue) => {}
                Ok(Outcome::Done) => myself.stop(Some(DONE.into())),
                Err(e) => {
                    let a = &state.args;
                    tracing::warn!(namespace = %a.namespace, pod = %a.name, error = %e, "pod sync failed; will retry");
                }
            },
        }
        Ok(())
    }
}

enum Outcome {
    Continue,
    Done,
}

async fn sync(state: &mut PodWorkerState) -> Result<Outcome> {
    let a = state.args.clone();
    let obj = match a.ctx.client.get(Kind::Pod, &a.namespace, &a.name).await {
        Ok(o) => Some(o),
        Err(ClientError::NotFound(_)) => None,
        Err(e) => return Err(Error::Client(e.to_string())),
    };
    let pod = match obj.and_then(|o| match o.kind {
        Some(v1::object::Kind::Pod(p)) => Some(p),
        _ => None,
    }) {
        Some(p) if p.metadata.as_ref().is_some_and(|m| m.uid == a.uid) => p,
        _ => {
            teardown(&a, Duration::from_secs(30)).await?;
            return Ok(Outcome::Done);
        }
    };
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if !meta.deletion_timestamp.is_empty() {
        let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64;
        teardown(&a, Duration::from_secs(grace)).await?;
        match a.ctx.client.delete(Kind::Pod, &a.namespace, &a.name).await {
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => return Err(Error::Client(e.to_string())),
        }
        tracing::info!(namespace = %a.namespace, pod = %a.name, "pod deleted after its containers stopped");
        return Ok(Outcome::Done);
    }

    let netns = {
        let (mgr, name) = (a.ctx.netns.clone(), netns_name(&a.uid));
        blocking(move || Ok(mgr.create(&name)?)).await?
    };
    // Attaching is idempotent but costs netlink round trips: once per worker is enough (a
    // restarted worker re-checks it once).
    let pod_ip = match (&a.ctx.network, state.pod_ip) {
        (None, _) => None,
        (Some(_), Some(ip)) => Some(ip),
        (Some(network), None) => {
            let (network, path, uid) = (network.clone(), netns.clone(), a.uid.clone());
            match blocking(move || network.attach(&path, &uid)).await? {
                Some(ip) => {
                    state.pod_ip = Some(ip);
                    Some(ip)
                }
                None => {
                    tracing::debug!(namespace = %a.namespace, pod = %a.name, "waiting for the node's pod network");
                    return Ok(Outcome::Continue);
                }
            }
        }
    };
    let records = pod_records(&a).await?;
    for action in plan::plan(&spec, &records, chrono::Utc::now()) {
        match action {
            ContainerAction::Start { name, attempt } => {
                let Some(c) = spec.containers.iter().find(|c| c.name == name) else {
                    continue;
                };
                let failures = state.pull_failures.entry(name.clone()).or_default();
                if let Err(f) = images::ensure_image(&a.ctx, c, failures).await {
                    tracing::info!(namespace = %a.namespace, pod = %a.name, container = %name, reason = %f.reason, "image not available");
                    state.start_failures.insert(name, f);
                    continue;
                }
                let cspec = container_spec(&a, &pod, c, attempt, netns.clone());
                let limits = images::resources(c);
                let rt = a.ctx.runtime.clone();
                match blocking(move || Ok(rt.start_container_with(&cspec, &limits)?)).await {
                    Ok(_) => {
                        state.start_failures.remove(&name);
                        tracing::info!(namespace = %a.namespace, pod = %a.name, container = %name, attempt, "container started");
                    }
                    Err(e) => {
                        tracing::warn!(namespace = %a.namespace, pod = %a.name, container = %name, error = %e, "container failed to start");
                        state.start_failures.insert(name, start_failure(c, &e));
                    }
                }
            }
            ContainerAction::Remove { id } => {
                let rt = a.ctx.runtime.clone();
                blocking(move || Ok(rt.remove_container(&id)?)).await?;
            }
        }
    }
    let records = pod_records(&a).await?;
    let mut status = plan::pod_status(
        &pod,
        &records,
        &state.start_failures,
        &a.ctx.host_ip,
        chrono::Utc::now(),
    );
    if let Some(ip) = pod_ip {
        status.pod_ip = ip.to_string();
    }
    if pod.status.as_ref() != Some(&status) {
        let mut next = pod.clone();
        if let Some(m) = next.metadata.as_mut() {
            m.resource_version.clear();
        }
        let phase = status.phase.clone();
        next.status = Some(status);
        match a.ctx.client.update_status(Object::from(next)).await {
            Ok(_) => {
                tracing::debug!(namespace = %a.namespace, pod = %a.name, phase = %phase, "pod status reported")
            }
            Err(e) => return Err(Error::Client(e.to_string())),
        }
    }
    Ok(Outcome::Continue)
}

fn start_failure(c: &v1::Container, e: &Error) -> StartFailure {
    let msg = e.to_string();
    if matches!(e, Error::Runtime(runtime::Error::ImageNotFound { .. })) {
        let reason = if c.image_pull_policy == "Never" {
            "ErrImageNeverPull"
        } else {
            "ErrImagePull"
        };
        return StartFailure {
            reason: reason.into(),
            message: format!(
                "{msg}; this node cannot pull from registries yet: import the image with `capstan image import`"
            ),
        };
    }
    StartFailure {
        reason: "RunContainerError".into(),
        message: msg,
    }
}

/// The runtime's containers of this pod.
async fn pod_records(a: &PodWorkerArgs) -> Result<Vec<runtime::ContainerStatus>> {
    let (rt, uid) = (a.ctx.runtime.clone(), a.uid.clone());
    blocking(move || {
        Ok(rt
            .list_containers()?
            .into_iter()
            .filter(|c| c.pod_uid == uid)
            .collect())
    })
    .await
}

/// Stops and removes every container of the pod and its network namespace. Idempotent.
async fn teardown(a: &PodWorkerArgs, grace: Duration) -> Result<()> {
    let (rt, mgr, uid) = (a.ctx.runtime.clone(), a.ctx.netns.clone(), a.uid.clone());
    let network = a.ctx.network.clone();
    blocking(move || {
        for c in rt
            .list_containers()?
            .into_iter()
            .filter(|c| c.pod_uid == uid)
        {
            rt.stop_container(&c.id, grace)?;
            rt.remove_container(&c.id)?;
        }
        if let Some(network) = &network {
            network.detach(&uid)?;
        }
        mgr.delete(&netns_name(&uid))?;
        rt.remove_pod_cgroup(&uid)?;
        Ok(())
    })
    .await?;
    tracing::info!(namespace = %a.namespace, pod = %a.name, "pod torn down");
    Ok(())
}

fn container_spec(
    a: &PodWorkerArgs,
    pod: &v1::Pod,
    c: &v1::Container,
    attempt: u32,
    netns: std::path::PathBuf,
) -> runtime::ContainerSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    runtime::ContainerSpec {
        id: container_id(&a.uid, &c.name, attempt),
        pod_uid: a.uid.clone(),
        pod_namespace: a.namespace.clone(),
        pod_name: a.name.clone(),
        container_name: c.name.clone(),
        attempt,
        image: c.image.clone(),
        command: c.command.clone(),
        args: c.args.clone(),
        env: c
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        working_dir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
        hostname: if spec.hostname.is_empty() {
            a.name.clone()
        } else {
            spec.hostname.clone()
        },
        netns_path: Some(netns),
    }
}
