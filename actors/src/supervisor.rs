//! A one-for-one supervisor: starts its children by id, and restarts one that fails or is
//! killed, with back-off, until the restart budget is spent; then it fails itself, so that its
//! own supervisor decides (escalation). ractor does not restart children by itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

use crate::restart::{RestartDecision, RestartPolicy, RestartTracker};

/// How long a stopping supervisor waits for its children to stop.
pub const CHILD_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a child linked to the given supervisor and returns its cell.
pub type StartFn = Arc<
    dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>
        + Send
        + Sync,
>;

/// The actor and the reason when `evt` says a child ended (stopped, killed or failed);
/// `None` for other events.
pub fn child_exit(evt: SupervisionEvent) -> Option<(ActorCell, String)> {
    match evt {
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell, reason.unwrap_or_else(|| "stopped".into())))
        }
        SupervisionEvent::ActorFailed(cell, err) => Some((cell, format!("failed: {err}"))),
        _ => None,
    }
}

/// One supervised child: a stable id (also its registered actor name) and how to start it.
#[derive(Clone)]
pub struct ChildSpec {
    /// Stable id; the child is registered under this name.
    pub id: String,
    /// Starts the child, linked to the supervisor passed in.
    pub start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Arguments of a [`Supervisor`].
#[derive(Debug)]
pub struct SupervisorArgs {
    /// Children, started in this order.
    pub children: Vec<ChildSpec>,
    /// Back-off and budget for restarts.
    pub policy: RestartPolicy,
}

/// Messages of a [`Supervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start the child with this id again (sent to itself after the back-off). Must be delivered.
    Restart(String),
    /// The ids of the children and the actor id of each running one. May be dropped.
    Children(RpcReplyPort<Vec<(String, Option<ActorId>)>>),
}

/// The supervisor actor; state lives in [`SupervisorState`].
#[derive(Debug, Default)]
pub struct Supervisor;

/// State of a [`Supervisor`].
#[derive(Debug)]
pub struct SupervisorState {
    specs: Vec<ChildSpec>,
    running: HashMap<ActorId, String>,
    trackers: HashMap<String, RestartTracker>,
}

impl SupervisorState {
    fn spec(&self, id: &str) -> Option<ChildSpec> {
        self.specs.iter().find(|s| s.id == id).cloned()
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    spec: &ChildSpec,
) -> Result<(), ActorProcessingErr> {
    match (spec.start)(myself.get_cell()).await {
        Ok(cell) => {
            state.running.insert(cell.get_id(), spec.id.clone());
            if let Some(t) = state.trackers.get_mut(&spec.id) {
                t.started(Instant::now());
            }
            tracing::info!(child = %spec.id, actor_id = %cell.get_id(), "child started");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(child = %spec.id, error = %e, "child failed to start");
            schedule_restart(myself, state, &spec.id)
        }
    }
}

fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    id: &str,
) -> Result<(), ActorProcessingErr> {
    let Some(tracker) = state.trackers.get_mut(id) else {
        return Ok(());
    };
    match tracker.failed(Instant::now()) {
        RestartDecision::RestartAfter(delay) => {
            tracing::info!(child = %id, delay_ms = delay.as_millis() as u64, "restarting child after back-off");
            let id = id.to_string();
            myself.send_after(delay, move || SupervisorMsg::Restart(id));
            Ok(())
        }
        RestartDecision::Escalate => {
            tracing::error!(child = %id, "restart budget spent; escalating");
            Err(format!("child {id} exceeded its restart budget").into())
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let trackers = args
            .children
            .iter()
            .map(|c| (c.id.clone(), RestartTracker::new(args.policy)))
            .collect();
        let mut state = SupervisorState {
            specs: args.children,
            running: HashMap::new(),
            trackers,
        };
        for spec in state.specs.clone() {
            start_child(&myself, &mut state, &spec).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // ractor leaves linked children running when their supervisor stops; an orderly stop
        // of the tree stops them too.
        myself
            .stop_children_and_wait(Some("supervisor stopped".into()), Some(CHILD_STOP_GRACE))
            .await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(id) => {
                if let Some(spec) = state.spec(&id) {
                    if !state.running.values().any(|r| *r == id) {
                        start_child(&myself, state, &spec).await?;
                    }
                }
            }
            SupervisorMsg::Children(reply) => {
                let list = state
                    .specs
                    .iter()
                    .map(|s| {
                        let id = state
                            .running
                            .iter()
                            .find(|(_, v)| **v == s.id)
                            .map(|(k, _)| *k);
                        (s.id.clone(), id)
                    })
                    .collect();
                let _ = reply.send(list);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = child_exit(evt) else {
            return Ok(());
        };
        if let Some(id) = state.running.remove(&cell.get_id()) {
            tracing::warn!(child = %id, actor_id = %cell.get_id(), reason = %why, "child exited");
            schedule_restart(&myself, state, &id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Crashy;
    impl Actor for Crashy {
        type Msg = ();
        type State = ();
        type Arguments = Arc<AtomicUsize>;
        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            starts: Arc<AtomicUsize>,
        ) -> Result<(), ActorProcessingErr> {
            starts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn handle(
            &self,
            _myself: ActorRef<()>,
            _msg: (),
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("crash on purpose".into())
        }
    }

    fn crashy_spec(name: &str, starts: Arc<AtomicUsize>) -> ChildSpec {
        let name = name.to_string();
        ChildSpec {
            id: name.clone(),
            start: Arc::new(move |sup| {
                let (name, starts) = (name.clone(), starts.clone());
                Box::pin(async move {
                    let (r, _) = Actor::spawn_linked(Some(name), Crashy, starts, sup).await?;
                    Ok(r.get_cell())
                })
            }),
        }
    }

    async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_crashed_or_killed_child_is_restarted_under_its_name() {
        let starts = Arc::new(AtomicUsize::new(0));
        let name = format!("crashy-{}", uuid::Uuid::new_v4());
        let args = SupervisorArgs {
            children: vec![crashy_spec(&name, starts.clone())],
            policy: RestartPolicy {
                base_delay: Duration::from_millis(5),
                ..Default::default()
            },
        };
        let (sup, handle) = Actor::spawn(None, Supervisor, args)
            .await
            .expect("spawn supervisor");
        assert_eq!(starts.load(Ordering::SeqCst), 1);

        let child = ractor::registry::where_is(name.clone()).expect("child registered");
        child.send_message::<()>(()).expect("send");
        assert!(
            wait_for(|| starts.load(Ordering::SeqCst) == 2).await,
            "restarted after crash"
        );

        assert!(wait_for(|| ractor::registry::where_is(name.clone()).is_some()).await);
        let child = ractor::registry::where_is(name.clone()).expect("child registered again");
        child.kill();
        assert!(
            wait_for(|| starts.load(Ordering::SeqCst) == 3).await,
            "restarted after kill"
        );

        sup.stop(None);
        handle.await.expect("supervisor exits");
    }

    #[tokio::test]
    async fn a_spent_budget_fails_the_supervisor() {
        let starts = Arc::new(AtomicUsize::new(0));
        let name = format!("crashy-{}", uuid::Uuid::new_v4());
        let args = SupervisorArgs {
            children: vec![crashy_spec(&name, starts.clone())],
            policy: RestartPolicy {
                base_delay: Duration::from_millis(1),
                budget: 2,
                ..Default::default()
            },
        };
        let (_sup, handle) = Actor::spawn(None, Supervisor, args)
            .await
            .expect("spawn supervisor");
        for round in 1..=3 {
            assert!(wait_for(|| starts.load(Ordering::SeqCst) == round).await);
            assert!(wait_for(|| ractor::registry::where_is(name.clone()).is_some()).await);
            if let Some(c) = ractor::registry::where_is(name.clone()) {
                let _ = c.send_message::<()>(());
            }
        }
        let joined = tokio::time::timeout(Duration::from_secs(5), handle).await;
        assert!(
            joined.is_ok(),
            "supervisor stopped after the budget was spent"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }
}
