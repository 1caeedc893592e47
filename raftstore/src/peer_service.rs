//! Raft peer service, server side: the `capstan.raft.v1.RaftPeer` tonic service that hands
//! peers' messages to the local openraft instance and answers forwarded proposals and read-index
//! calls when this member is the leader.
//!
//! Errors are converted to `tonic::Status` in exactly one place ([`bad_request`]); Raft's own
//! errors travel back inside the payload so the caller's openraft sees them as remote errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::lease_keeper::Lessor;
use crate::proposal;
use crate::read_index::ReadIndex;
use crate::types::{NodeId, Raft, TypeConfig};
use crate::wire::proto::raft_peer_server::{RaftPeer, RaftPeerServer};
use crate::wire::proto::RaftMessage;
use crate::wire::{self, Proposal, WireError};
use crate::write_batch::WriteBatcher;

/// How long [`PeerServer::stop`] waits for in-flight calls before aborting the server.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// The running peer service of one member.
pub(crate) struct PeerServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// The address actually bound.
    pub(crate) addr: SocketAddr,
}

impl PeerServer {
    /// Serves the peer service for `raft` (and `lessor`, for forwarded lease calls) on
    /// `listener` until [`PeerServer::stop`].
    pub(crate) fn start(
        raft: Raft,
        lessor: Arc<Lessor>,
        reads: ReadIndex,
        writes: Arc<WriteBatcher>,
        node: NodeId,
        listener: tokio::net::TcpListener,
    ) -> Result<Self> {
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr: None, source })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = crate::tcp::incoming_nodelay(listener);
        let service = RaftPeerServer::new(PeerService {
            raft,
            lessor,
            reads,
            writes,
        })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(node, error = %e, "peer service failed");
            }
        });
        tracing::info!(node, addr = %addr, "peer service listening");
        Ok(PeerServer {
            stop: Some(stop),
            task,
            addr,
        })
    }

    /// Stops accepting calls and waits (briefly) for the server task, so it lets go of Raft.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("peer service did not stop in time; aborting it");
            abort.abort();
            let _ = self.task.await;
        }
    }
}

struct PeerService {
    raft: Raft,
    lessor: Arc<Lessor>,
    reads: ReadIndex,
    writes: Arc<WriteBatcher>,
}

fn bad_request(e: &Error) -> Status {
    Status::invalid_argument(format!("malformed peer message: {e}"))
}

fn reply<T: Serialize>(value: &T) -> std::result::Result<Response<RaftMessage>, Status> {
    wire::message(value)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> std::result::Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            wire::payload(request.get_ref()).map_err(|e| bad_request(&e))?;
        reply(&self.raft.append_entries(req).await)
    }

    async fn vote(
        &self,
        request: Request<RaftMessage>,
    ) -> std::result::Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> =
            wire::payload(request.get_ref()).map_err(|e| bad_request(&e))?;
        reply(&self.raft.vote(req).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> std::result::Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> =
            wire::payload(request.get_ref()).map_err(|e| bad_request(&e))?;
        let result: std::result::Result<_, RaftError<NodeId, InstallSnapshotError>> =
            self.raft.install_snapshot(req).await;
        reply(&result)
    }

    async fn client_write(
        &self,
        request: Request<RaftMessage>,
    ) -> std::result::Result<Response<RaftMessage>, Status> {
        let proposal: Proposal = wire::payload(request.get_ref()).map_err(|e| bad_request(&e))?;
        let result = proposal::propose_local(&self.raft, &self.lessor, &self.writes, proposal)
            .await
            .map_err(WireError::from);
        reply(&result)
    }

    async fn read_index(
        &self,
        _request: Request<RaftMessage>,
    ) -> std::result::Result<Response<RaftMessage>, Status> {
        // Joins the leader's batched rounds, with its local reads.
        let result = self.reads.on_leader().await.map_err(WireError::from);
        reply(&result)
    }
}
