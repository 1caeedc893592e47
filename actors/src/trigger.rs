//! Turns a watch stream into "something changed, reconcile" messages for an actor. Events are
//! only triggers: the actor always re-reads the current state (level-triggered). Bursts of events
//! collapse into one message; a broken stream is re-opened, with one trigger after each (re)open.

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use ractor::{ActorRef, Message};
use tokio::task::JoinHandle;

/// Spawns a task that opens the stream made by `open`, and sends `msg()` to `actor` whenever it
/// yields. The task ends when the actor is gone.
pub fn spawn_watch_trigger<M, S, T, E, F, Fut>(
    actor: ActorRef<M>,
    open: F,
    msg: fn() -> M,
) -> JoinHandle<()>
where
    M: Message,
    S: Stream<Item = Result<T, E>> + Send + Unpin + 'static,
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<S, E>> + Send,
{
    tokio::spawn(async move {
        loop {
            match open().await {
                Ok(mut stream) => {
                    if actor.send_message(msg()).is_err() {
                        return;
                    }
                    while let Some(item) = stream.next().await {
                        if let Err(e) = item {
                            tracing::debug!(actor = ?actor.get_name(), error = %e, "watch ended; reopening");
                            break;
                        }
                        // Collapse whatever else is already there into the same trigger.
                        while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
                        if actor.send_message(msg()).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(actor = ?actor.get_name(), error = %e, "cannot open watch")
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            if actor.get_status() != ractor::ActorStatus::Running {
                return;
            }
        }
    })
}
