//! Write forwarding on followers, batched: concurrent transactions a follower receives go to the
//! leader together, in one peer call ([`Proposal::Writes`]), instead of one call each.
//!
//! Every forwarded call costs a gRPC round on both members (HTTP/2 frames, encoding, a task on
//! the leader), whatever its size; under load the followers spent as much CPU forwarding as the
//! leader spent committing. Here at most [`MAX_IN_FLIGHT`] calls per follower are in flight;
//! transactions arriving meanwhile queue and go together in the next call. A lone write is sent
//! at once, so batching costs no latency when there is nothing to batch. On the leader the
//! batch joins its own write batching (see `write_batch`), so the transactions are committed
//! exactly as if each had been forwarded alone: each is answered on its own, only once its
//! entry is committed (fsynced on a majority) and applied.
//!
//! Each call is routed to the leader this member knows when it is sent (as read-index rounds
//! are): if this member leads by then, or knows no leader, the transactions are answered
//! [`Error::NotLeader`] and the caller routes them again. Compactions are never batched (the
//! leader proposes them alone); they go through the single-proposal path. This module only
//! groups, routes and splits; retries stay with the caller.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::Txn;
use crate::network::PeerChannels;
use crate::read_index::leader_of;
use crate::types::{NodeId, Raft, RaftResponse};
use crate::wire::{Proposal, ProposalOutcome, WireError};

/// Forwarded calls in flight at once per member. More than one, so a write that arrives while
/// a call is out need not wait for that call's whole commit round before it is even sent.
const MAX_IN_FLIGHT: usize = 2;
/// Most transactions in one forwarded call (the leader's entries hold at most 512).
const MAX_BATCH: usize = 256;

type Reply = Result<RaftResponse>;

struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    in_flight: usize,
}

/// Groups a follower's concurrent transactions into forwarded batches.
pub(crate) struct ForwardBatcher {
    node: NodeId,
    raft: Raft,
    channels: PeerChannels,
    queue: Mutex<Queue>,
}

impl ForwardBatcher {
    /// A batcher forwarding for member `node` over `channels` to the leader `raft` knows.
    pub(crate) fn new(node: NodeId, raft: Raft, channels: PeerChannels) -> Arc<Self> {
        Arc::new(ForwardBatcher {
            node,
            raft,
            channels,
            queue: Mutex::default(),
        })
    }

    /// Sends `txn` to the leader (alone or with concurrent ones) and returns its response once
    /// its entry is committed and applied. Fails with [`Error::NotLeader`] if no other member
    /// is known to lead when the call goes out, and with [`Error::PeerUnreachable`] if the
    /// leader did not answer (the transaction may or may not have been applied).
    pub(crate) async fn write(self: &Arc<Self>, txn: Txn) -> Result<RaftResponse> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.waiting.push(Pending { txn, reply });
            let start = q.in_flight < MAX_IN_FLIGHT;
            if start {
                q.in_flight += 1;
            }
            start
        };
        if start {
            // A task of its own, so a caller that gives up does not strand the others.
            tokio::spawn(self.clone().send_until_idle());
        }
        answer.await.unwrap_or_else(|_| Err(Error::Shutdown))
    }

    /// One in-flight slot: sends what is queued, call after call, until the queue is empty.
    async fn send_until_idle(self: Arc<Self>) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if q.waiting.is_empty() {
                    q.in_flight -= 1;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect::<Vec<_>>()
            };
            self.send(batch).await;
        }
    }

    async fn send(&self, batch: Vec<Pending>) {
        let (txns, replies): (Vec<Txn>, Vec<_>) =
            batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
        let n = replies.len();
        let answers = match leader_of(&self.raft) {
            Some((leader, url)) if leader != self.node => {
                let outcome = self
                    .channels
                    .forward(leader, &url, &Proposal::Writes(txns))
                    .await;
                split(outcome, leader, n)
            }
            // This member leads now (or knows no leader): let each caller route again.
            _ => fan_out(
                Error::NotLeader {
                    leader: None,
                    leader_url: None,
                },
                self.node,
                n,
            ),
        };
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// One answer per transaction from the leader's answer to a forwarded batch of `n`.
fn split(outcome: Result<ProposalOutcome>, leader: NodeId, n: usize) -> Vec<Reply> {
    match outcome {
        Ok(ProposalOutcome::Writes(answers)) if answers.len() == n => answers
            .into_iter()
            .map(|a| a.map_err(|e| e.into_error(leader)))
            .collect(),
        Ok(_) => fan_out(
            Error::UnexpectedResponse("forwarded batch answered with a malformed outcome"),
            leader,
            n,
        ),
        Err(e) => fan_out(e, leader, n),
    }
}

/// `e`, once for each of `n` transactions of a batch that failed as a whole (at `peer`).
fn fan_out(e: Error, peer: NodeId, n: usize) -> Vec<Reply> {
    match e {
        // Kept as it is: the caller must not retry, the writes may have been applied.
        Error::PeerUnreachable { peer, reason } => (0..n)
            .map(|_| {
                Err(Error::PeerUnreachable {
                    peer,
                    reason: reason.clone(),
                })
            })
            .collect(),
        other => {
            let wire = WireError::from(other);
            (0..n).map(|_| Err(wire.clone().into_error(peer))).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TxnResult;

    fn txn_result(revision: i64) -> RaftResponse {
        RaftResponse::Txn(TxnResult {
            succeeded: true,
            revision,
            responses: vec![],
        })
    }

    #[test]
    fn a_leaders_answers_are_split_in_order_with_each_error_kept() {
        let answers = split(
            Ok(ProposalOutcome::Writes(vec![
                Ok(txn_result(4)),
                Err(WireError::LeaseNotFound { lease: 9 }),
                Ok(txn_result(5)),
            ])),
            2,
            3,
        );
        assert!(matches!(&answers[0], Ok(r) if *r == txn_result(4)));
        assert!(matches!(
            &answers[1],
            Err(Error::LeaseNotFound { lease: 9 })
        ));
        assert!(matches!(&answers[2], Ok(r) if *r == txn_result(5)));
    }

    #[test]
    fn a_failed_call_reaches_every_writer_and_a_count_mismatch_is_never_misattributed() {
        let unreachable = split(
            Err(Error::PeerUnreachable {
                peer: 2,
                reason: "connection refused".to_string(),
            }),
            2,
            3,
        );
        assert_eq!(unreachable.len(), 3);
        assert!(unreachable
            .iter()
            .all(|a| matches!(a, Err(Error::PeerUnreachable { peer: 2, .. }))));

        let not_leader = split(
            Err(Error::NotLeader {
                leader: Some(3),
                leader_url: Some("http://127.0.0.1:3".to_string()),
            }),
            2,
            2,
        );
        assert!(not_leader.iter().all(|a| matches!(
            a,
            Err(Error::NotLeader {
                leader: Some(3),
                ..
            })
        )));

        let short = split(Ok(ProposalOutcome::Writes(vec![Ok(txn_result(4))])), 2, 2);
        assert_eq!(short.len(), 2);
        assert!(short.iter().all(|a| a.is_err()));
    }
}
