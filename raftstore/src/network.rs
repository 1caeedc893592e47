//! Raft peer transport, client side: one lazily connected tonic channel per peer URL, shared by
//! openraft's replication (append entries, vote, snapshot chunks) and by request forwarding
//! (writes and read-index calls to the leader).
//!
//! Error mapping for openraft: a peer that cannot be connected to (or that fails at the HTTP/2
//! level) is `Unreachable`, so openraft backs off; a timeout or a garbled answer is a
//! `NetworkError`, so openraft retries; an error the peer's Raft returned is a `RemoteError`.
//! Nothing here ever pretends a peer answered. This module must not touch storage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError as RaftNetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::types::{Node, NodeId, TypeConfig};
use crate::wire::proto::raft_peer_client::RaftPeerClient;
use crate::wire::proto::RaftMessage;
use crate::wire::{self, Proposal, ProposalOutcome, WireError};

/// How long to wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a forwarded write or read-index call may take (covers a leader's commit).
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The peer service's calls.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    ClientWrite,
    ReadIndex,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "append_entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install_snapshot",
            Rpc::ClientWrite => "client_write",
            Rpc::ReadIndex => "read_index",
        }
    }
}

/// Why a peer RPC failed on the way.
#[derive(thiserror::Error, Debug)]
pub enum NetworkError {
    /// The membership holds no usable URL for the peer.
    #[error("node {target} has no valid peer URL ({url:?}): {reason}")]
    BadAddress {
        /// The peer that was addressed.
        target: NodeId,
        /// The URL from the membership.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The call failed at the transport or gRPC level.
    #[error("rpc {rpc} to node {target} failed: {status}")]
    Rpc {
        /// The peer that was addressed.
        target: NodeId,
        /// The RPC name.
        rpc: &'static str,
        /// The gRPC status, as text.
        status: String,
    },
    /// The call did not finish in time.
    #[error("rpc {rpc} to node {target} timed out after {after_ms} ms")]
    Timeout {
        /// The peer that was addressed.
        target: NodeId,
        /// The RPC name.
        rpc: &'static str,
        /// The time allowed.
        after_ms: u64,
    },
    /// The request could not be encoded or the answer decoded.
    #[error("rpc {rpc} to node {target}: bad payload: {reason}")]
    Payload {
        /// The peer that was addressed.
        target: NodeId,
        /// The RPC name.
        rpc: &'static str,
        /// The codec error, as text.
        reason: String,
    },
}

impl NetworkError {
    /// Whether the peer could not be reached at all (as opposed to answering badly or slowly).
    fn is_unreachable(&self) -> bool {
        matches!(
            self,
            NetworkError::BadAddress { .. } | NetworkError::Rpc { .. }
        )
    }
}

/// The per-URL channel cache shared by all peer clients of one member.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
    /// A client for `url`, reusing a cached channel (tonic reconnects it as needed).
    fn client(
        &self,
        target: NodeId,
        url: &str,
    ) -> std::result::Result<RaftPeerClient<Channel>, NetworkError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(url) {
            return Ok(RaftPeerClient::new(channel.clone()));
        }
        let bad = |reason: String| NetworkError::BadAddress {
            target,
            url: url.to_string(),
            reason,
        };
        if url.is_empty() {
            return Err(bad("no peer URL".to_string()));
        }
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(RaftPeerClient::new(channel))
    }

    /// Sends one unary call: encodes `req`, waits at most `timeout`, decodes the answer.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: NodeId,
        url: &str,
        call: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> std::result::Result<Resp, NetworkError> {
        let rpc = call.name();
        let payload_err = |reason: String| NetworkError::Payload {
            target,
            rpc,
            reason,
        };
        let mut client = self.client(target, url)?;
        let msg = wire::message(req).map_err(|e| payload_err(e.to_string()))?;
        let call = async move {
            match call {
                Rpc::AppendEntries => client.append_entries(msg).await,
                Rpc::Vote => client.vote(msg).await,
                Rpc::InstallSnapshot => client.install_snapshot(msg).await,
                Rpc::ClientWrite => client.client_write(msg).await,
                Rpc::ReadIndex => client.read_index(msg).await,
            }
        };
        let reply: RaftMessage = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| NetworkError::Timeout {
                target,
                rpc,
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })?
            .map_err(|status| NetworkError::Rpc {
                target,
                rpc,
                status: status.to_string(),
            })?
            .into_inner();
        wire::payload(&reply).map_err(|e| payload_err(e.to_string()))
    }

    /// Forwards `proposal` to the leader `target` at `url`.
    pub(crate) async fn forward(
        &self,
        target: NodeId,
        url: &str,
        proposal: &Proposal,
    ) -> Result<ProposalOutcome> {
        let reply: std::result::Result<ProposalOutcome, WireError> = self
            .call(target, url, Rpc::ClientWrite, proposal, FORWARD_TIMEOUT)
            .await
            .map_err(|e| unreachable_peer(target, &e))?;
        reply.map_err(|e| e.into_error(target))
    }

    /// Asks the leader `target` for its read index.
    pub(crate) async fn read_index(&self, target: NodeId, url: &str) -> Result<u64> {
        let reply: std::result::Result<u64, WireError> = self
            .call(target, url, Rpc::ReadIndex, &(), FORWARD_TIMEOUT)
            .await
            .map_err(|e| unreachable_peer(target, &e))?;
        reply.map_err(|e| e.into_error(target))
    }
}

fn unreachable_peer(peer: NodeId, e: &NetworkError) -> Error {
    Error::PeerUnreachable {
        peer,
        reason: e.to_string(),
    }
}

/// Creates [`PeerNetwork`] clients for openraft.
#[derive(Clone, Debug, Default)]
pub struct PeerNetworkFactory {
    channels: PeerChannels,
}

impl PeerNetworkFactory {
    /// A factory sharing `channels` with the forwarding path.
    pub(crate) fn new(channels: PeerChannels) -> Self {
        PeerNetworkFactory { channels }
    }
}

/// openraft's client for one peer.
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    target: NodeId,
    url: String,
    channels: PeerChannels,
}

impl PeerNetwork {
    async fn send<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> std::result::Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: std::result::Result<Resp, RaftError<NodeId, E>> = self
            .channels
            .call(self.target, &self.url, rpc, req, option.hard_ttl())
            .await
            .map_err(|e| {
                tracing::debug!(node = self.target, rpc = rpc.name(), error = %e, "peer rpc failed");
                if e.is_unreachable() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(RaftNetworkError::new(&e))
                }
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerNetwork {
            target,
            url: node.peer_url.clone(),
            channels: self.channels.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>>
    {
        self.send(Rpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.send(Rpc::Vote, &rpc, &option).await
    }
}
