//! The pod worker: one actor per pod bound to this node. Each sync re-reads the pod from the
//! API and the pod's containers from the runtime (never its own memory), plans with
//! [`super::plan`], starts what is missing, and reports the status. Because the truth is re-read,
//! a restarted worker adopts running containers instead of starting second copies.
//!
//! Probes run off the handler: each due probe is a spawned task whose outcome comes back as
//! [`PodWorkerMsg::ProbeResult`]; the worker only feeds outcomes to the pure
//! [`super::probe`] state machine, reports `ready`/`started` on change, and hands a container
//! that failed its liveness or startup probe to a spawned stop, after which the usual restart
//! policy and crash back-off of [`super::plan`] apply. Probe state is per container attempt and
//! in memory only: a restarted worker starts it afresh (not ready until the first success), as
//! a restarted kubelet does.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use api::client::ClientError;
use api::v1::{self, Object};
use api::Kind;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::context::{blocking, container_id, netns_name, AgentContext};
use super::hooks;
use super::images;
use super::plan::{self, ContainerAction, StartFailure};
use super::pod_files;
use super::probe::{ContainerProber, ProbeKind, ProbeOutcome, Restart};
use super::prober::{self, ProbeTarget};
use super::volumes::{self, PrepareFailure};
use super::{env, security, service_env};
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
    /// Start the probes that are due. May be dropped (every sync schedules the next one).
    ProbeTick,
    /// The outcome of one probe run. Should be delivered; a lost one only delays the probe by
    /// its timeout plus a period.
    ProbeResult {
        /// Container name.
        container: String,
        /// Runtime id of the attempt that was probed (results for an older attempt are dropped).
        container_id: String,
        /// Which probe ran.
        kind: ProbeKind,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// A container stopped for a failed liveness or startup probe has exited. Must be
    /// delivered (until then the attempt is not stopped a second time).
    Killed {
        /// Runtime id of the stopped attempt.
        container_id: String,
    },
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
    /// Probes of running containers that have any, by container name.
    probes: HashMap<String, ProbeSlot>,
    /// When the next [`PodWorkerMsg::ProbeTick`] is due, if one is scheduled.
    probe_tick: Option<Instant>,
    /// Attempts being stopped for a failed probe.
    killing: HashSet<String>,
    /// The pod's volumes as last prepared, and when (files volumes are refreshed every
    /// [`volumes::REFRESH`]).
    volumes: Option<(volumes::Prepared, Instant)>,
}

/// The probes of one running container attempt, and what running them needs.
#[derive(Debug)]
struct ProbeSlot {
    prober: ContainerProber,
    container: v1::Container,
    /// Grace of a stop for a failed probe: the probe's, else the pod's.
    pod_grace: Duration,
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
            probes: HashMap::new(),
            probe_tick: None,
            killing: HashSet::new(),
            volumes: None,
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
                Ok(Outcome::Continue) => dispatch_probes(&myself, state),
                Ok(Outcome::Done) => myself.stop(Some(DONE.into())),
                Err(e) => {
                    let a = &state.args;
                    tracing::warn!(namespace = %a.namespace, pod = %a.name, error = %e, "pod sync failed; will retry");
                }
            },
            PodWorkerMsg::ProbeTick => {
                state.probe_tick = None;
                dispatch_probes(&myself, state);
            }
            PodWorkerMsg::ProbeResult {
                container,
                container_id,
                kind,
                outcome,
            } => {
                probe_result(&myself, state, &container, &container_id, kind, &outcome);
                dispatch_probes(&myself, state);
            }
            PodWorkerMsg::Killed { container_id } => {
                state.killing.remove(&container_id);
                myself.send_message(PodWorkerMsg::Sync)?;
            }
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
            teardown(&a, Duration::from_secs(30), None, None).await?;
            return Ok(Outcome::Done);
        }
    };
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    if !meta.deletion_timestamp.is_empty() {
        let grace = pod_grace(&spec);
        let pod_ip = state.pod_ip.map(IpAddr::V4);
        teardown(&a, grace, Some(&spec), pod_ip).await?;
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
    let actions = plan::plan(&spec, &records, chrono::Utc::now());
    let starting = actions
        .iter()
        .any(|a| matches!(a, ContainerAction::Start { .. }));
    let pod_volumes = pod_volumes(state, &pod, starting).await?;
    // Listed (written) at most once per sync, and only when a container starts.
    let mut links: Option<Vec<(String, String)>> = None;
    let mut files: Option<Vec<runtime::BindMount>> = None;
    for action in actions {
        match action {
            ContainerAction::Start { name, attempt } => {
                let all = spec.init_containers.iter().chain(&spec.containers);
                let Some(c) = all.into_iter().find(|c| c.name == name) else {
                    continue;
                };
                let dir = volumes::pod_volumes_dir(&a.ctx.pods_dir, &a.uid);
                let links = match &links {
                    Some(links) => links.clone(),
                    None => links.insert(service_variables(&a, &spec).await?).clone(),
                };
                let facts = env::PodFacts {
                    host_ip: a.ctx.host_ip.clone(),
                    pod_ip: pod_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    node_name: a.ctx.node_name.clone(),
                };
                let made = pod_volumes.as_ref().map_err(Clone::clone).and_then(|p| {
                    let mounts = volumes::plan::container_mounts(c, &p.volumes, |n| dir.join(n))
                        .map_err(|e| e.to_string())?;
                    let env = env::container_env(&pod, c, &p.fetched, &facts, links)?;
                    let seccomp_dir = a.ctx.pods_dir.with_file_name("seccomp");
                    let security = security::security(&spec, c, &seccomp_dir)?;
                    Ok((mounts, env, security))
                });
                let (mounts, env, security) = match made {
                    Ok(made) => made,
                    Err(message) => {
                        tracing::info!(namespace = %a.namespace, pod = %a.name, container = %name, reason = %message, "container configuration not ready");
                        let reason = "CreateContainerConfigError".into();
                        state
                            .start_failures
                            .insert(name, StartFailure { reason, message });
                        continue;
                    }
                };
                let pull_secrets: Vec<v1::Secret> = pod_volumes
                    .as_ref()
                    .map(|p| {
                        spec.image_pull_secrets
                            .iter()
                            .filter_map(|r| p.fetched.secrets.get(&r.name).cloned().flatten())
                            .collect()
                    })
                    .unwrap_or_default();
                let failures = state.pull_failures.entry(name.clone()).or_default();
                if let Err(f) = images::ensure_image(&a.ctx, c, &pull_secrets, failures).await {
                    tracing::info!(namespace = %a.namespace, pod = %a.name, container = %name, reason = %f.reason, "image not available");
                    state.start_failures.insert(name, f);
                    continue;
                }
                let cspec = runtime::ContainerSpec {
                    mounts,
                    security,
                    ..container_spec(&a, &pod, c, attempt, netns.clone(), env)
                };
                let pod_mounts = match &files {
                    Some(m) => m.clone(),
                    None => files
                        .insert(write_pod_files(&a, &pod, pod_ip).await?)
                        .clone(),
                };
                let mut cspec = cspec;
                // After the volume mounts, as kubelet adds its managed files.
                cspec.mounts.extend(pod_mounts);
                let limits = images::resources(c);
                let rt = a.ctx.runtime.clone();
                let start = move || {
                    // As the kubelet: a subPath missing in a volume of the pod is created.
                    for m in cspec.mounts.iter().filter(|m| m.source.starts_with(&dir)) {
                        if !m.source.exists() {
                            std::fs::create_dir_all(&m.source).map_err(|e| {
                                Error::FailedPrecondition(format!(
                                    "create subPath {}: {e}",
                                    m.source.display()
                                ))
                            })?;
                        }
                    }
                    Ok(rt.start_container_with(&cspec, &limits)?)
                };
                match blocking(start).await {
                    Ok(started) => {
                        state.start_failures.remove(&name);
                        tracing::info!(namespace = %a.namespace, pod = %a.name, container = %name, attempt, "container started");
                        post_start(&a, &spec, c, &started.id, pod_ip).await;
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
    track_probes(state, &spec, &records);
    let health = state
        .probes
        .iter()
        .map(|(name, slot)| (name.clone(), slot.prober.health()))
        .collect();
    let mut status = plan::pod_status(
        &pod,
        &records,
        &state.start_failures,
        &health,
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

/// Keeps one prober per running container attempt that has probes: a new attempt gets a fresh
/// one, a container that is not running has none.
fn track_probes(
    state: &mut PodWorkerState,
    spec: &v1::PodSpec,
    records: &[runtime::ContainerStatus],
) {
    let (now, wall) = (Instant::now(), chrono::Utc::now());
    let pod_grace = pod_grace(spec);
    let mut running = HashSet::new();
    for c in &spec.containers {
        if c.startup_probe.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none() {
            continue;
        }
        let latest = records
            .iter()
            .filter(|r| r.container_name == c.name)
            .max_by_key(|r| r.attempt);
        let Some((id, started_at)) = latest.and_then(|r| match &r.state {
            runtime::ContainerState::Running { started_at, .. } => Some((&r.id, started_at)),
            _ => None,
        }) else {
            continue;
        };
        running.insert(c.name.clone());
        if state
            .probes
            .get(&c.name)
            .is_some_and(|s| s.prober.container_id() == id.as_str())
        {
            continue;
        }
        // initialDelaySeconds counts from the container's start, also for a container this
        // worker adopted after a restart.
        let ran = chrono::DateTime::parse_from_rfc3339(started_at)
            .ok()
            .and_then(|t| (wall - t.with_timezone(&chrono::Utc)).to_std().ok())
            .unwrap_or_default();
        let started = now.checked_sub(ran).unwrap_or(now);
        let a = &state.args;
        tracing::debug!(namespace = %a.namespace, pod = %a.name, container = %c.name, "probing container");
        state.probes.insert(
            c.name.clone(),
            ProbeSlot {
                prober: ContainerProber::new(c, id, started),
                container: c.clone(),
                pod_grace,
            },
        );
    }
    state.probes.retain(|name, _| running.contains(name));
}

/// Spawns the probes that are due and schedules the next [`PodWorkerMsg::ProbeTick`].
fn dispatch_probes(myself: &ActorRef<PodWorkerMsg>, state: &mut PodWorkerState) {
    let now = Instant::now();
    let pod_ip = state.pod_ip.map(IpAddr::V4);
    for (name, slot) in &mut state.probes {
        for kind in slot.prober.due(now) {
            let Some(probe) = kind.of(&slot.container).cloned() else {
                continue;
            };
            let target = ProbeTarget {
                pod_ip,
                ports: slot.container.ports.clone(),
                exec: Some((
                    state.args.ctx.runtime.clone(),
                    slot.prober.container_id().to_string(),
                )),
            };
            let me = myself.clone();
            let (container, container_id) = (name.clone(), slot.prober.container_id().to_string());
            tokio::spawn(async move {
                let outcome = prober::run(&probe, &target).await;
                // The worker may be gone (pod deleted): then nobody needs the result.
                let _ = me.send_message(PodWorkerMsg::ProbeResult {
                    container,
                    container_id,
                    kind,
                    outcome,
                });
            });
        }
    }
    let next = state
        .probes
        .values()
        .filter_map(|s| s.prober.next_due(now))
        .min();
    if let Some(at) = next {
        if state.probe_tick.is_none_or(|t| at < t || t <= now) {
            state.probe_tick = Some(at);
            myself.send_after(at.saturating_duration_since(now), || {
                PodWorkerMsg::ProbeTick
            });
        }
    }
}

/// Feeds one probe outcome to its container's prober; reports a change of `ready`/`started`
/// through a sync and stops the container when its liveness or startup probe failed for good.
fn probe_result(
    myself: &ActorRef<PodWorkerMsg>,
    state: &mut PodWorkerState,
    container: &str,
    container_id: &str,
    kind: ProbeKind,
    outcome: &ProbeOutcome,
) {
    let a = state.args.clone();
    let Some(slot) = state.probes.get_mut(container) else {
        return;
    };
    if slot.prober.container_id() != container_id {
        return;
    }
    if let ProbeOutcome::Failure { message } = outcome {
        tracing::debug!(namespace = %a.namespace, pod = %a.name, container = %container, probe = kind.as_str(), reason = %message, "probe failed");
    }
    let before = slot.prober.health();
    let verdict = slot.prober.record(kind, outcome);
    let after = slot.prober.health();
    if after != before {
        tracing::info!(namespace = %a.namespace, pod = %a.name, container = %container, ready = after.ready, started = after.started, "container health changed");
        let _ = myself.send_message(PodWorkerMsg::Sync);
    }
    let Some(Restart { message, .. }) = verdict else {
        return;
    };
    let grace = kind
        .of(&slot.container)
        .and_then(|p| p.termination_grace_period_seconds)
        .map(|s| Duration::from_secs(s.max(0) as u64))
        .unwrap_or(slot.pod_grace);
    if !state.killing.insert(container_id.to_string()) {
        return;
    }
    tracing::info!(namespace = %a.namespace, pod = %a.name, container = %container, reason = %message, "container failed its probe; stopping it for a restart");
    let (rt, me, id) = (
        a.ctx.runtime.clone(),
        myself.clone(),
        container_id.to_string(),
    );
    let name = container.to_string();
    let (ctx, spec_c, pod_ip) = (a.ctx.clone(), slot.container.clone(), state.pod_ip);
    tokio::spawn(async move {
        let stop_id = id.clone();
        let pod_ip = pod_ip.map(IpAddr::V4);
        let grace = hooks::pre_stop(&ctx, Some(&spec_c), &id, pod_ip, grace).await;
        if let Err(e) = blocking(move || Ok(rt.stop_container(&stop_id, grace)?)).await {
            tracing::warn!(namespace = %a.namespace, pod = %a.name, container = %name, error = %e, "stopping a container that failed its probe failed");
        }
        let _ = me.send_message(PodWorkerMsg::Killed { container_id: id });
    });
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

/// The pod's `terminationGracePeriodSeconds` (Kubernetes' default 30 s).
fn pod_grace(spec: &v1::PodSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
}

/// Runs the container's postStart hook, if any; when it fails the container is stopped (and
/// restarted by the restart policy), as the kubelet does.
async fn post_start(
    a: &PodWorkerArgs,
    spec: &v1::PodSpec,
    c: &v1::Container,
    id: &str,
    pod_ip: Option<std::net::Ipv4Addr>,
) {
    let Some(handler) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
        return;
    };
    let pod_ip = pod_ip.map(IpAddr::V4);
    let outcome = hooks::run(&a.ctx, handler, c, id, pod_ip, hooks::POST_START_TIMEOUT).await;
    let Err(reason) = outcome else {
        tracing::info!(namespace = %a.namespace, pod = %a.name, container = %c.name, "postStart hook ran");
        return;
    };
    tracing::warn!(namespace = %a.namespace, pod = %a.name, container = %c.name, reason = %reason, "FailedPostStartHook: stopping the container");
    let grace = pod_grace(spec);
    let (rt, id) = (a.ctx.runtime.clone(), id.to_owned());
    if let Err(e) = blocking(move || Ok(rt.stop_container(&id, grace)?)).await {
        tracing::warn!(namespace = %a.namespace, pod = %a.name, container = %c.name, error = %e, "stopping after a failed postStart hook failed");
    }
}

/// Stops and removes every container of the pod and its network namespace. Idempotent.
/// Running containers first get their preStop hooks (from `spec`, when the pod is still
/// known), all at once, within `grace`.
async fn teardown(
    a: &PodWorkerArgs,
    grace: Duration,
    spec: Option<&v1::PodSpec>,
    pod_ip: Option<IpAddr>,
) -> Result<()> {
    let running: Vec<_> = pod_records(a)
        .await?
        .into_iter()
        .filter(|r| matches!(r.state, runtime::ContainerState::Running { .. }))
        .collect();
    let hooks = running.iter().map(|r| {
        let c = spec.and_then(|s| s.containers.iter().find(|c| c.name == r.container_name));
        hooks::pre_stop(&a.ctx, c, &r.id, pod_ip, grace)
    });
    let grace = futures::future::join_all(hooks)
        .await
        .into_iter()
        .min()
        .unwrap_or(grace);
    let (rt, mgr, uid) = (a.ctx.runtime.clone(), a.ctx.netns.clone(), a.uid.clone());
    let (network, pods_dir) = (a.ctx.network.clone(), a.ctx.pods_dir.clone());
    let files_dir = a.ctx.pods_dir.join(&a.uid);
    blocking(move || {
        for c in rt
            .list_containers()?
            .into_iter()
            .filter(|c| c.pod_uid == uid)
        {
            rt.stop_container(&c.id, grace)?;
            rt.remove_container(&c.id)?;
        }
        volumes::teardown(&pods_dir, &uid)?;
        if let Some(network) = &network {
            network.detach(&uid)?;
        }
        mgr.delete(&netns_name(&uid))?;
        rt.remove_pod_cgroup(&uid)?;
        pod_files::remove(&files_dir)?;
        Ok(())
    })
    .await?;
    tracing::info!(namespace = %a.namespace, pod = %a.name, "pod torn down");
    Ok(())
}

/// The Service variables for the pod's containers (none when the pod opts out).
async fn service_variables(a: &PodWorkerArgs, spec: &v1::PodSpec) -> Result<Vec<(String, String)>> {
    if !service_env::wanted(spec) {
        return Ok(Vec::new());
    }
    let services: Vec<v1::Service> = a
        .ctx
        .client
        .list(Kind::Service, &a.namespace, "")
        .await
        .map_err(|e| Error::Client(e.to_string()))?
        .into_iter()
        .filter_map(|o| match o.kind {
            Some(v1::object::Kind::Service(s)) => Some(s),
            _ => None,
        })
        .collect();
    Ok(service_env::variables(&services))
}

fn container_spec(
    a: &PodWorkerArgs,
    pod: &v1::Pod,
    c: &v1::Container,
    attempt: u32,
    netns: std::path::PathBuf,
    env: Vec<(String, String)>,
) -> runtime::ContainerSpec {
    runtime::ContainerSpec {
        id: container_id(&a.uid, &c.name, attempt),
        pod_uid: a.uid.clone(),
        pod_namespace: a.namespace.clone(),
        pod_name: a.name.clone(),
        container_name: c.name.clone(),
        attempt,
        image: c.image.clone(),
        command: env::expand_all(&c.command, &env),
        args: env::expand_all(&c.args, &env),
        env,
        working_dir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
        hostname: pod_files::pod_hostname(pod),
        netns_path: Some(netns),
        mounts: Vec::new(),
        security: runtime::Security::default(),
    }
}

/// The pod's volumes (and what they and the environments reference), prepared when a
/// container is about to start or the last refresh is older than [`volumes::REFRESH`], else
/// as last prepared. `Err` holds a configuration problem for the containers' status; node
/// failures are the sync's error.
async fn pod_volumes(
    state: &mut PodWorkerState,
    pod: &v1::Pod,
    starting: bool,
) -> Result<std::result::Result<volumes::Prepared, String>> {
    let due = state
        .volumes
        .as_ref()
        .is_none_or(|(_, at)| at.elapsed() >= volumes::REFRESH);
    if !starting && !due {
        return Ok(Ok(state.volumes.clone().map(|v| v.0).unwrap_or_default()));
    }
    match volumes::prepare(&state.args.ctx, pod).await {
        Ok(prepared) => {
            state.volumes = Some((prepared.clone(), Instant::now()));
            Ok(Ok(prepared))
        }
        Err(PrepareFailure::Config(message)) => Ok(Err(message)),
        Err(PrepareFailure::Node(e)) => Err(e),
    }
}

/// Writes the pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (nameserver: this
/// node's DNS on the bridge gateway) and returns their bind mounts.
async fn write_pod_files(
    a: &PodWorkerArgs,
    pod: &v1::Pod,
    pod_ip: Option<std::net::Ipv4Addr>,
) -> Result<Vec<runtime::BindMount>> {
    let cluster_dns = a
        .ctx
        .network
        .as_ref()
        .and_then(|n| n.subnet())
        .map(|s| IpAddr::V4(net::subnet::gateway(s)));
    let (settings, dir, pod) = (a.ctx.dns.clone(), a.ctx.pods_dir.join(&a.uid), pod.clone());
    blocking(move || {
        // A node without these files gives its pods none of their content, not an error.
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        let node = pod_files::NodeFacts {
            cluster_dns,
            cluster_domain: settings.cluster_domain.clone(),
            host_resolv_conf: read(&settings.host_resolv_conf),
            host_hosts: read(&settings.host_hosts),
        };
        let files = pod_files::pod_files(&pod, pod_ip.map(IpAddr::V4), &node);
        pod_files::write(&dir, &files)
    })
    .await
}
