//! Read-index batching: concurrent linearizable reads share one leadership round.
//!
//! A linearizable read needs a read index obtained after the read arrived: the leader confirms
//! with a quorum that it still leads and returns its commit index (openraft's
//! `get_read_log_id`, one round of heartbeats per call), and the read waits until that index is
//! applied. Fetched per read, the rounds grow with the read rate and the leader spends its time
//! on heartbeats. Here reads that arrive while a round is in flight wait for the next round,
//! which starts after they arrived; so every read still gets a read index fetched after its
//! arrival, and one round serves any number of reads (etcd's read loop batches the same way).
//!
//! Two coalescers per member: one for rounds on this member as leader (local reads and the
//! read-index calls followers forward to it share it), one for rounds a follower forwards to
//! its leader. This module only coalesces and routes one attempt; retries stay with the caller.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::network::PeerChannels;
use crate::proposal::read_index_local;
use crate::types::{NodeId, Raft};
use crate::wire::WireError;

/// The outcome of one round, shared by every read that waited for it.
type RoundResult = std::result::Result<u64, WireError>;

/// Runs rounds of `fetch` one after another; each round answers every caller that joined
/// before it started.
#[derive(Default)]
struct Coalescer {
    state: Mutex<CoalescerState>,
}

#[derive(Default)]
struct CoalescerState {
    /// A driver task is running rounds.
    driving: bool,
    /// Callers waiting for the next round.
    next: Vec<oneshot::Sender<RoundResult>>,
}

impl Coalescer {
    /// Waits for the result of a round that starts after this call. `fetch` runs a round; it
    /// is used only if this call has to start the driver.
    async fn join<F, Fut>(self: &Arc<Self>, fetch: F) -> Option<RoundResult>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = RoundResult> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.next.push(tx);
            !std::mem::replace(&mut state.driving, true)
        };
        if start {
            // A task of its own, so a caller that gives up does not strand the others.
            tokio::spawn(self.clone().drive(fetch));
        }
        rx.await.ok()
    }

    async fn drive<F, Fut>(self: Arc<Self>, fetch: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = RoundResult>,
    {
        loop {
            let waiting = {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.next.is_empty() {
                    state.driving = false;
                    return;
                }
                std::mem::take(&mut state.next)
            };
            let result = fetch().await;
            for waiter in waiting {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

/// Batched read-index rounds of one member.
#[derive(Clone)]
pub(crate) struct ReadIndex {
    node: NodeId,
    raft: Raft,
    channels: PeerChannels,
    local: Arc<Coalescer>,
    remote: Arc<Coalescer>,
}

impl ReadIndex {
    /// Read-index batching for member `node`.
    pub(crate) fn new(node: NodeId, raft: Raft, channels: PeerChannels) -> Self {
        ReadIndex {
            node,
            raft,
            channels,
            local: Arc::default(),
            remote: Arc::default(),
        }
    }

    /// The read index from a round on this member, which must lead ([`Error::NotLeader`]
    /// otherwise). Used for local reads on the leader and for followers' forwarded calls.
    pub(crate) async fn on_leader(&self) -> Result<u64> {
        let raft = self.raft.clone();
        let round = move || {
            let raft = raft.clone();
            async move { read_index_local(&raft).await.map_err(WireError::from) }
        };
        let result = self.local.join(round).await.ok_or(Error::Shutdown)?;
        result.map_err(|e| e.into_error(self.node))
    }

    /// One attempt at a read index as seen from this member: from a local round if it leads,
    /// else from a round forwarded to the leader it knows. The caller retries on
    /// [`Error::NotLeader`] and [`Error::PeerUnreachable`].
    pub(crate) async fn fetch(&self) -> Result<u64> {
        match leader_of(&self.raft) {
            Some((leader, _)) if leader == self.node => self.on_leader().await,
            Some((leader, _)) => {
                let (raft, channels, me) = (self.raft.clone(), self.channels.clone(), self.node);
                // Routed per round: a round after an election goes to the new leader.
                let round = move || {
                    let (raft, channels) = (raft.clone(), channels.clone());
                    async move {
                        match leader_of(&raft) {
                            Some((l, url)) if l != me => {
                                channels.read_index(l, &url).await.map_err(WireError::from)
                            }
                            // Became leader (or lost it) since: let the caller route again.
                            _ => Err(WireError::NotLeader {
                                leader: None,
                                leader_url: None,
                            }),
                        }
                    }
                };
                let result = self.remote.join(round).await.ok_or(Error::Shutdown)?;
                result.map_err(|e| e.into_error(leader))
            }
            None => Err(Error::NotLeader {
                leader: None,
                leader_url: None,
            }),
        }
    }
}

/// The leader `raft` knows of and its peer URL (empty when membership does not name it).
pub(crate) fn leader_of(raft: &Raft) -> Option<(NodeId, String)> {
    let m = raft.metrics();
    let m = m.borrow();
    let leader = m.current_leader?;
    let url = m
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|n| n.peer_url.clone())
        .unwrap_or_default();
    Some((leader, url))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_rounds_and_each_round_starts_after_its_callers_joined() {
        let coalescer = Arc::new(Coalescer::default());
        let rounds = Arc::new(AtomicU64::new(0));
        let round = {
            let rounds = rounds.clone();
            move || {
                let rounds = rounds.clone();
                async move {
                    // The round's number is fixed when it starts.
                    let n = rounds.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(n)
                }
            }
        };
        let first = {
            let (c, r) = (coalescer.clone(), round.clone());
            tokio::spawn(async move { c.join(r).await })
        };
        // Let round 1 start, then join 50 callers while it runs.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut later = Vec::new();
        for _ in 0..50 {
            let (c, r) = (coalescer.clone(), round.clone());
            later.push(tokio::spawn(async move { c.join(r).await }));
        }
        assert!(matches!(first.await, Ok(Some(Ok(1)))));
        for handle in later {
            // Joined while round 1 ran: answered by round 2, which started after they joined.
            assert!(matches!(handle.await, Ok(Some(Ok(2)))));
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
        // Idle again: the next caller starts a fresh round.
        assert!(matches!(coalescer.join(round).await, Some(Ok(3))));
    }
}
