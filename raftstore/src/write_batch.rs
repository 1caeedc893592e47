//! Write batching on the leader: concurrent transactions go into one log entry
//! ([`RaftRequest::Batch`]), so one append and one fsync commit them all.
//!
//! openraft 0.9 appends one entry per `client_write` and its core waits for each append's
//! fsync before it takes the next request, so without batching the leader's write rate is
//! bounded by one fsync per write. Here at most [`MAX_IN_FLIGHT`] entries are proposed at a
//! time; transactions arriving meanwhile queue and go together in the next entry once the
//! previous one is applied. A lone write is proposed at once, as a plain [`RaftRequest::Txn`], so batching costs
//! no latency when there is nothing to batch. The durability contract is unchanged: a
//! transaction is answered only when its entry is committed (fsynced on a majority) and applied.
//!
//! Compactions are never batched (the state machine compacts only from a single-transaction
//! entry). This module only groups and splits; Raft does the rest.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::{Txn, TxnOp};
use crate::types::{NodeId, Raft, RaftRequest, RaftResponse};
use crate::wire::WireError;

/// Entries proposed at once. One: each entry costs a sled transaction, an fsync and an
/// AppendEntries per member whatever its size, so fewer, larger entries win; measured with
/// `raftstore-bench` (2 cores, 3 members), 1 beat 2 and 4 at 16 to 256 clients.
const MAX_IN_FLIGHT: usize = 1;
/// Most transactions in one entry (bounds the entry size and the apply time of one entry).
const MAX_BATCH: usize = 512;

/// One transaction's answer, as it crosses the wire to a follower that forwarded it.
pub(crate) type Reply = std::result::Result<RaftResponse, WireError>;

struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Reply>,
}

/// Where the answer to one transaction of [`WriteBatcher::write_all`] comes from.
enum Answer {
    /// Queued for a batch entry.
    Queued(oneshot::Receiver<Reply>),
    /// A compaction, proposed on its own.
    Alone(Txn),
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    in_flight: usize,
}

/// Groups the leader's concurrent transactions into batch entries.
pub(crate) struct WriteBatcher {
    node: NodeId,
    raft: Raft,
    queue: Mutex<Queue>,
}

impl WriteBatcher {
    /// A batcher proposing to `raft` (member `node`).
    pub(crate) fn new(node: NodeId, raft: Raft) -> Arc<Self> {
        Arc::new(WriteBatcher {
            node,
            raft,
            queue: Mutex::default(),
        })
    }

    /// Proposes `txn` (on its own or batched with concurrent ones) and returns its response
    /// once its entry is committed and applied. Fails with [`Error::NotLeader`] if this member
    /// does not lead.
    pub(crate) async fn write(self: &Arc<Self>, txn: Txn) -> Result<RaftResponse> {
        if compacts(&txn) {
            return Ok(self.raft.client_write(RaftRequest::Txn(txn)).await?.data);
        }
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
            tokio::spawn(self.clone().propose_until_idle());
        }
        match answer.await {
            Ok(reply) => reply.map_err(|e| e.into_error(self.node)),
            Err(_) => Err(Error::Shutdown),
        }
    }

    /// Proposes `txns` (forwarded together by a follower, see `forward_batch`) with the
    /// concurrent transactions, in order, and answers each once its entry is committed and
    /// applied. Compactions among them are proposed alone, as [`WriteBatcher::write`] does.
    pub(crate) async fn write_all(self: &Arc<Self>, txns: Vec<Txn>) -> Vec<Reply> {
        let mut answers = Vec::with_capacity(txns.len());
        let mut start = false;
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            for txn in txns {
                if compacts(&txn) {
                    answers.push(Answer::Alone(txn));
                    continue;
                }
                let (reply, answer) = oneshot::channel();
                q.waiting.push(Pending { txn, reply });
                answers.push(Answer::Queued(answer));
            }
            if !q.waiting.is_empty() && q.in_flight < MAX_IN_FLIGHT {
                q.in_flight += 1;
                start = true;
            }
        }
        if start {
            tokio::spawn(self.clone().propose_until_idle());
        }
        let mut replies = Vec::with_capacity(answers.len());
        for answer in answers {
            replies.push(match answer {
                Answer::Queued(answer) => answer.await.unwrap_or(Err(WireError::Shutdown)),
                Answer::Alone(txn) => self
                    .raft
                    .client_write(RaftRequest::Txn(txn))
                    .await
                    .map(|r| r.data)
                    .map_err(|e| WireError::from(Error::from(e))),
            });
        }
        replies
    }

    /// One in-flight slot: proposes what is queued, entry after entry, until the queue is empty.
    async fn propose_until_idle(self: Arc<Self>) {
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
            self.propose(batch).await;
        }
    }

    async fn propose(&self, batch: Vec<Pending>) {
        let (txns, replies): (Vec<Txn>, Vec<_>) =
            batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
        let n = replies.len();
        let (request, single) = match <[Txn; 1]>::try_from(txns) {
            Ok([txn]) => (RaftRequest::Txn(txn), true),
            Err(txns) => (RaftRequest::Batch(txns), false),
        };
        let outcome = self.raft.client_write(request).await.map(|r| r.data);
        for (reply, answer) in replies.into_iter().zip(split(outcome, single, n)) {
            let _ = reply.send(answer);
        }
    }
}

/// One answer per transaction from the entry's outcome.
fn split<E: Into<Error>>(
    outcome: std::result::Result<RaftResponse, E>,
    single: bool,
    n: usize,
) -> Vec<Reply> {
    match outcome {
        Err(e) => {
            let e = WireError::from(e.into());
            vec![Err(e); n]
        }
        Ok(response) if single => vec![Ok(response)],
        Ok(RaftResponse::Batch(responses)) if responses.len() == n => {
            responses.into_iter().map(Ok).collect()
        }
        Ok(_) => vec![
            Err(WireError::Failed(
                "batch entry answered with a malformed response".to_string()
            ));
            n
        ],
    }
}

/// Whether `txn` may compact history (either branch, nested transactions included).
pub(crate) fn compacts(txn: &Txn) -> bool {
    txn.success.iter().chain(&txn.failure).any(|op| match op {
        TxnOp::Compact { .. } => true,
        TxnOp::Txn(nested) => compacts(nested),
        _ => false,
    })
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
    fn a_batch_outcome_is_split_in_order_and_a_failure_reaches_every_writer() {
        let ok: std::result::Result<RaftResponse, Error> =
            Ok(RaftResponse::Batch(vec![txn_result(5), txn_result(6)]));
        let answers = split(ok, false, 2);
        assert!(
            matches!(&answers[..], [Ok(a), Ok(b)] if *a == txn_result(5) && *b == txn_result(6))
        );

        let failed: std::result::Result<RaftResponse, Error> = Err(Error::NotLeader {
            leader: Some(2),
            leader_url: None,
        });
        let answers = split(failed, false, 3);
        assert_eq!(answers.len(), 3);
        assert!(answers.iter().all(|a| matches!(
            a,
            Err(WireError::NotLeader {
                leader: Some(2),
                ..
            })
        )));

        // A count mismatch is never silently misattributed.
        let short: std::result::Result<RaftResponse, Error> =
            Ok(RaftResponse::Batch(vec![txn_result(5)]));
        assert!(split(short, false, 2).iter().all(|a| a.is_err()));
    }

    #[test]
    fn compactions_are_recognised_in_either_branch() {
        let plain = Txn {
            compares: vec![],
            success: vec![TxnOp::Delete { key: b"k".to_vec() }],
            failure: vec![],
        };
        assert!(!compacts(&plain));
        let in_failure = Txn {
            failure: vec![TxnOp::Compact { revision: 3 }],
            ..plain.clone()
        };
        assert!(compacts(&in_failure));
        let nested = Txn {
            success: vec![TxnOp::Txn(in_failure)],
            ..plain
        };
        assert!(compacts(&nested));
    }
}
