//! Raft peer transport. For the single-member skeleton there is no transport yet: every RPC to a
//! peer fails with openraft's `Unreachable`, so openraft backs off and retries, and nothing ever
//! pretends a peer answered. A later issue replaces [`PeerNetwork`] with a tonic peer client.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::types::{Node, NodeId, TypeConfig};

/// Why a peer RPC could not be sent.
#[derive(thiserror::Error, Debug)]
pub enum NetworkError {
    /// No transport to peers exists yet in this build.
    #[error("no peer transport configured; node {target} is unreachable")]
    NoTransport {
        /// The peer that was addressed.
        target: NodeId,
    },
}

/// Creates [`PeerNetwork`] clients for openraft.
#[derive(Clone, Debug, Default)]
pub struct PeerNetworkFactory;

/// A client for one peer; currently always unreachable.
#[derive(Clone, Debug)]
pub struct PeerNetwork {
    target: NodeId,
}

impl PeerNetwork {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<NodeId, Node, E> {
        RPCError::Unreachable(Unreachable::new(&NetworkError::NoTransport {
            target: self.target,
        }))
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Self::Network {
        PeerNetwork { target }
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(self.unreachable())
    }
}
