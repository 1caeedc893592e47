//! The actor shell the workload controllers share: it turns watch events on the kinds a
//! controller cares about, a resync timer and requeues into passes, and runs one pass at a time
//! (so no object is ever reconciled twice at once). It owns no decisions and no state of the
//! objects: each pass re-reads everything from the registry (level-triggered).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use api::Kind;
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::apiserver::Registry;
use crate::error::Result;
use crate::trigger::spawn_watch_trigger;

/// How soon a failed pass (a conflict, a store error) is retried.
const RETRY: Duration = Duration::from_secs(1);

/// One controller's pass over all its objects.
pub trait Pass: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// Registered actor name.
    const NAME: &'static str;
    /// Kinds whose changes trigger a pass.
    const WATCHED: &'static [Kind];
    /// How often a pass runs without events.
    const RESYNC: Duration;
    /// The registry passes read and write.
    fn registry(&self) -> &Registry;
    /// Reconciles every object once at `now`; `Ok(Some(d))` asks for another pass after `d`.
    fn run(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Option<Duration>>> + Send;
}

/// Messages of a [`Controller`].
#[derive(Debug)]
pub enum ControllerMsg {
    /// Something changed, the timer fired or a requeue is due: run a pass. May be dropped.
    Sync,
}

/// The actor running the passes of `P`.
#[derive(Debug)]
pub struct Controller<P>(PhantomData<fn() -> P>);

impl<P> Default for Controller<P> {
    fn default() -> Self {
        Controller(PhantomData)
    }
}

/// State of a [`Controller`].
#[derive(Debug)]
pub struct ControllerState<P> {
    pass: P,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    requeue: Option<tokio::task::JoinHandle<()>>,
}

/// The watch, timer and requeue tasks end with the state: also when the actor is killed (a
/// deposed leader's control plane is), where ractor runs no `post_stop`.
impl<P> Drop for ControllerState<P> {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
        if let Some(t) = self.requeue.take() {
            t.abort();
        }
    }
}

impl<P: Pass> Actor for Controller<P> {
    type Msg = ControllerMsg;
    type State = ControllerState<P>;
    type Arguments = P;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        pass: P,
    ) -> std::result::Result<Self::State, ActorProcessingErr> {
        let mut tasks = Vec::new();
        for &kind in P::WATCHED {
            let reg = pass.registry().clone();
            tasks.push(spawn_watch_trigger(
                myself.clone(),
                move || {
                    let reg = reg.clone();
                    async move { reg.watch(kind, "", "", "").await.map(Box::pin) }
                },
                || ControllerMsg::Sync,
            ));
        }
        tasks.push(myself.send_interval(P::RESYNC, || ControllerMsg::Sync));
        Ok(ControllerState {
            pass,
            tasks,
            requeue: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            ControllerMsg::Sync => {
                let span = tracing::debug_span!("pass", controller = P::NAME);
                let again = match state.pass.run(Utc::now()).instrument(span).await {
                    Ok(again) => again,
                    Err(e @ crate::Error::Fenced { .. }) => {
                        // The elector stops this controller; until then, nothing to retry.
                        tracing::warn!(controller = P::NAME, error = %e, "write fenced: this server no longer leads");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(controller = P::NAME, error = %e, "controller pass failed; will retry");
                        Some(RETRY)
                    }
                };
                if let Some(t) = state.requeue.take() {
                    t.abort();
                }
                state.requeue = again.map(|d| {
                    let me = myself.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(d).await;
                        // The actor may be gone by then; nothing to do about it.
                        let _ = me.send_message(ControllerMsg::Sync);
                    })
                });
            }
        }
        Ok(())
    }
}

/// The outcome of one pass over many objects: the soonest requeue asked for, and the first
/// error, returned only once every object had its turn (each failure is logged as it happens).
#[derive(Debug, Default)]
pub struct PassResult {
    again: Option<Duration>,
    failed: Option<crate::error::Error>,
}

impl PassResult {
    /// One object asks to be looked at again after `after` (if any).
    pub fn requeue(&mut self, after: Option<Duration>) {
        self.again = sooner(self.again, after);
    }

    /// Syncing one object of `kind` failed; logged now, returned by [`PassResult::finish`].
    pub fn fail(&mut self, kind: &str, meta: Option<&api::v1::ObjectMeta>, e: crate::error::Error) {
        let (namespace, name) = meta.map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()));
        tracing::warn!(kind, namespace, name, error = %e, "cannot sync object; will retry");
        self.failed.get_or_insert(e);
    }

    /// The first error, or when to run again.
    pub fn finish(self) -> crate::error::Result<Option<Duration>> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.again),
        }
    }
}

/// The earlier of two optional requeue delays.
pub fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
