//! The elector actor: once per round it reads the Lease, asks [`decide`](super::decide) what to
//! do, and does it: takes the lease over (with a new fencing token), renews it, or stands by.
//! While it leads, it runs the control plane (scheduler and controllers) as a linked
//! supervisor whose registry is fenced; when leadership is lost it kills that supervisor at once
//! (in-flight writes are cut off, and any that still reach the store fail on the fence).
//!
//! Every store call is bounded by a timeout that ends no later than the renew deadline, so a
//! hung store cannot keep a deposed leader acting. It owns no decision of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::v1::Object;
use api::Kind;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::decide::{self, Decision, LeaseRead, Observed, Role};
use super::lease;
use super::ElectionConfig;
use crate::apiserver::fence::{fence_key, Fence};
use crate::apiserver::Registry;
use crate::error::Error;
use crate::restart::RestartPolicy;
use crate::supervisor::{child_exit, ChildSpec, Supervisor, SupervisorArgs, SupervisorMsg};

/// How long a stopping leader may take to release its lease (so a standby takes over at once).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the control plane gets to stop when the elector stops in an orderly way.
const CONTROL_PLANE_STOP_GRACE: Duration = Duration::from_secs(5);

/// Builds the control plane's children over the fenced registry they must write through.
pub type ControlPlaneFactory = Arc<dyn Fn(Registry) -> Vec<ChildSpec> + Send + Sync>;

/// Arguments of an [`Elector`].
#[derive(Clone)]
pub struct ElectorArgs {
    /// The registry the lease is read and written through (not fenced).
    pub registry: Registry,
    /// This server's identity, written as the lease's holder.
    pub identity: String,
    /// Election timing.
    pub config: ElectionConfig,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// The scheduler and controllers to run while leading.
    pub control_plane: ControlPlaneFactory,
    /// Registered name of the control plane's supervisor (`None`: unregistered).
    pub control_plane_name: Option<String>,
}

impl std::fmt::Debug for ElectorArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectorArgs")
            .field("identity", &self.identity)
            .field("config", &self.config)
            .field(
                "lease",
                &format!("{}/{}", self.lease_namespace, self.lease_name),
            )
            .finish_non_exhaustive()
    }
}

/// What an elector reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionStatus {
    /// Whether this server leads (its control plane runs).
    pub leading: bool,
    /// The fencing token of the current leadership.
    pub fence: Option<i64>,
    /// The holder named in the last lease read (empty: none or unknown).
    pub holder: String,
}

/// Messages of an [`Elector`].
#[derive(Debug)]
pub enum ElectorMsg {
    /// Run one round: read the lease, decide, act, schedule the next round. Sent only by the
    /// elector itself, one chain of them; may be dropped only when the elector is stopping.
    Tick,
    /// Reply with the current status. May be dropped.
    Status(RpcReplyPort<ElectionStatus>),
}

/// The elector actor; state lives in [`ElectorState`].
#[derive(Debug, Default)]
pub struct Elector;

/// The running control plane of a leader.
#[derive(Debug)]
struct Leadership {
    fence: Fence,
    control_plane: ActorRef<SupervisorMsg>,
}

/// State of an [`Elector`].
#[derive(Debug)]
pub struct ElectorState {
    args: ElectorArgs,
    role: Role,
    /// The lease as last read or written (for the next compare-and-swap).
    current: Option<Object>,
    /// The last observation of the lease (its version and since when it looks like that).
    seen: Option<Observed>,
    leadership: Option<Leadership>,
    /// The holder last logged, so following the same leader is logged once.
    followed: String,
}

impl ElectorState {
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.args.lease_namespace, self.args.lease_name)
    }

    /// How long a store call may take now: until the renew deadline while leading, else the
    /// renew deadline itself.
    fn io_budget(&self, now: Instant) -> Duration {
        match self.role {
            Role::Leading { renewed_at } => {
                decide::renew_deadline_at(&self.args.config, renewed_at)
                    .saturating_duration_since(now)
            }
            Role::Standby => self.args.config.renew_deadline,
        }
    }

    fn status(&self) -> ElectionStatus {
        ElectionStatus {
            leading: self.leadership.is_some(),
            fence: self.leadership.as_ref().map(|l| l.fence.revision),
            holder: self
                .seen
                .as_ref()
                .map(|o| o.holder.clone())
                .unwrap_or_default(),
        }
    }
}

async fn bounded<T>(
    budget: Duration,
    fut: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    match tokio::time::timeout(budget, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Actor {
            actor: "leader-elector".into(),
            reason: format!("store call timed out after {} ms", budget.as_millis()),
        }),
    }
}

/// Reads the lease and records what was seen. The read is local (this store member's applied
/// state) when the member has applied everything this elector wrote or saw: it keeps working
/// while the store elects a new leader, so a standby sees the last renewal as soon as it is
/// replicated here. A stale read is safe: expiry counts from when this server first saw a
/// version, which is after it was written, and every write of the lease is a compare-and-swap
/// that fails on a stale version. A member that lags behind this elector's own writes is read
/// through the leader instead.
async fn read_lease(st: &mut ElectorState) -> LeaseRead {
    let budget = st.io_budget(Instant::now());
    let known = st
        .current
        .as_ref()
        .and_then(|o| o.metadata().resource_version.parse::<i64>().ok())
        .unwrap_or(0);
    let (reg, ns, name) = (
        &st.args.registry,
        &st.args.lease_namespace,
        &st.args.lease_name,
    );
    let got = if reg.store().revision() >= known {
        bounded(budget, reg.get_local(Kind::Lease, ns, name)).await
    } else {
        bounded(budget, reg.get(Kind::Lease, ns, name)).await
    };
    match got {
        Ok(obj) => {
            let seen = lease::observe(&obj, st.seen.as_ref(), Instant::now());
            st.current = Some(obj);
            st.seen = Some(seen.clone());
            LeaseRead::Present(seen)
        }
        Err(Error::NotFound { .. }) => {
            st.current = None;
            st.seen = None;
            LeaseRead::Absent
        }
        Err(e) => {
            tracing::debug!(lease = %st.lease_ref(), error = %e, "cannot read the leader lease");
            LeaseRead::Unknown
        }
    }
}

/// Records a lease this server just wrote as the current observation.
fn wrote(st: &mut ElectorState, obj: Object) {
    st.seen = Some(lease::observe(&obj, st.seen.as_ref(), Instant::now()));
    st.current = Some(obj);
}

async fn acquire(
    myself: &ActorRef<ElectorMsg>,
    st: &mut ElectorState,
) -> Result<(), ActorProcessingErr> {
    let sent_at = Instant::now();
    let previous = st.current.as_ref().map(lease::holder).unwrap_or_default();
    let now = lease::micro_time(chrono::Utc::now());
    let next = lease::acquired(
        st.current.as_ref(),
        &st.args.lease_namespace,
        &st.args.lease_name,
        &st.args.identity,
        st.args.config.lease_duration,
        &now,
    );
    let budget = st.io_budget(sent_at);
    if st.current.is_none() {
        if let Err(e) = bounded(
            budget,
            st.args.registry.ensure_namespace(&st.args.lease_namespace),
        )
        .await
        {
            tracing::warn!(namespace = %st.args.lease_namespace, error = %e, "cannot create the lease's namespace; will retry");
            return Ok(());
        }
    }
    let key = fence_key(&st.args.lease_namespace, &st.args.lease_name);
    let (written, fence) = match bounded(budget, st.args.registry.take_over_lease(next, &key)).await
    {
        Ok(done) => done,
        Err(e @ (Error::Conflict { .. } | Error::AlreadyExists { .. })) => {
            tracing::debug!(lease = %st.lease_ref(), identity = %st.args.identity, error = %e, "another server wrote the lease first");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(lease = %st.lease_ref(), identity = %st.args.identity, error = %e, "cannot take the lease; will retry");
            return Ok(());
        }
    };
    wrote(st, written);
    st.role = Role::Leading {
        renewed_at: sent_at,
    };
    // A control plane left from an earlier leadership would act on a dead fence.
    stop_control_plane(st, "re-acquired").await;
    let children = (st.args.control_plane)(st.args.registry.fenced(fence.clone()));
    let (control_plane, _) = Actor::spawn_linked(
        st.args.control_plane_name.clone(),
        Supervisor,
        SupervisorArgs {
            children,
            policy: RestartPolicy::default(),
        },
        myself.get_cell(),
    )
    .await?;
    tracing::info!(
        lease = %st.lease_ref(),
        identity = %st.args.identity,
        previous_holder = %previous,
        fence_revision = fence.revision,
        "leadership acquired; control plane started"
    );
    st.followed.clear();
    st.leadership = Some(Leadership {
        fence,
        control_plane,
    });
    Ok(())
}

async fn renew(st: &mut ElectorState) {
    let Some(current) = st.current.as_ref() else {
        return;
    };
    let sent_at = Instant::now();
    let next = lease::renewed(current, &lease::micro_time(chrono::Utc::now()));
    let budget = st.io_budget(sent_at);
    match bounded(budget, st.args.registry.update(next)).await {
        Ok(written) => {
            wrote(st, written);
            st.role = Role::Leading {
                renewed_at: sent_at,
            };
            tracing::trace!(lease = %st.lease_ref(), "lease renewed");
        }
        Err(e) => {
            tracing::warn!(lease = %st.lease_ref(), identity = %st.args.identity, error = %e, "lease renewal failed; will retry until the renew deadline");
        }
    }
}

/// Kills the control plane at once: handlers in flight are cut off.
async fn stop_control_plane(st: &mut ElectorState, why: &str) {
    if let Some(l) = st.leadership.take() {
        if let Err(e) = l
            .control_plane
            .kill_and_wait(Some(CONTROL_PLANE_STOP_GRACE))
            .await
        {
            tracing::warn!(error = %e, reason = why, "control plane did not confirm its stop");
        }
    }
}

async fn round(
    myself: &ActorRef<ElectorMsg>,
    st: &mut ElectorState,
) -> Result<(), ActorProcessingErr> {
    let read = read_lease(st).await;
    let cfg = st.args.config;
    let decision = decide::decide(&cfg, &st.args.identity, st.role, &read, Instant::now());
    match &decision {
        Decision::Acquire => acquire(myself, st).await?,
        Decision::Renew => renew(st).await,
        Decision::Follow { holder, .. } => {
            if *holder != st.followed {
                tracing::info!(lease = %st.lease_ref(), identity = %st.args.identity, holder = %holder, "standing by; another server leads");
                st.followed = holder.clone();
            }
        }
        Decision::Retry { .. } => {}
        Decision::Lost(reason) => {
            let fence = st.leadership.as_ref().map(|l| l.fence.revision);
            stop_control_plane(st, "leadership lost").await;
            st.role = Role::Standby;
            tracing::warn!(
                lease = %st.lease_ref(),
                identity = %st.args.identity,
                reason = %reason,
                fence_revision = fence,
                "leadership lost; control plane stopped"
            );
        }
    }
    let delay = decide::next_round_in(&cfg, st.role, &decision, Instant::now());
    myself.send_after(delay, || ElectorMsg::Tick);
    Ok(())
}

/// Releases a held lease so a standby need not wait for it to expire.
async fn release(st: &mut ElectorState) {
    let Some(current) = st.current.as_ref() else {
        return;
    };
    if lease::holder(current) != st.args.identity {
        return;
    }
    let next = lease::released(current, &lease::micro_time(chrono::Utc::now()));
    match bounded(RELEASE_TIMEOUT, st.args.registry.update(next)).await {
        Ok(_) => {
            tracing::info!(lease = %st.lease_ref(), identity = %st.args.identity, "leadership released")
        }
        Err(e) => {
            tracing::warn!(lease = %st.lease_ref(), error = %e, "could not release the lease; standbys take over when it expires")
        }
    }
}

impl Actor for Elector {
    type Msg = ElectorMsg;
    type State = ElectorState;
    type Arguments = ElectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ElectorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A crashed elector leaves its control plane running (ractor does not stop the
        // children of a failed actor): stop it before anything else.
        if let Some(name) = &args.control_plane_name {
            if let Some(old) = ractor::registry::where_is(name.clone()) {
                tracing::warn!(actor = %name, "stopping a control plane left by an earlier elector");
                let _ = old.kill_and_wait(Some(CONTROL_PLANE_STOP_GRACE)).await;
            }
        }
        myself.send_message(ElectorMsg::Tick)?;
        tracing::info!(identity = %args.identity, lease = %format!("{}/{}", args.lease_namespace, args.lease_name), lease_duration_ms = args.config.lease_duration.as_millis() as u64, "leader election started");
        Ok(ElectorState {
            args,
            role: Role::Standby,
            current: None,
            seen: None,
            leadership: None,
            followed: String::new(),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(l) = st.leadership.take() {
            let _ = l
                .control_plane
                .stop_and_wait(
                    Some("server stopping".into()),
                    Some(CONTROL_PLANE_STOP_GRACE),
                )
                .await;
            release(st).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ElectorMsg::Tick => round(&myself, st).await?,
            ElectorMsg::Status(reply) => {
                let _ = reply.send(st.status());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = child_exit(evt) else {
            return Ok(());
        };
        let ours = st
            .leadership
            .as_ref()
            .is_some_and(|l| l.control_plane.get_id() == cell.get_id());
        if ours {
            // The control plane spent its restart budget: fail, so the root supervisor
            // restarts this elector (which takes the lease back) or escalates.
            st.leadership = None;
            return Err(format!("control plane exited while leading: {why}").into());
        }
        Ok(())
    }
}
