//! Capstan's etcd: an MVCC key-value store (revisions, transactions, watches) replicated with
//! openraft and persisted in sled, as a single member ([`Store::open`]) or a member of a
//! multi-member cluster talking to its peers over the `capstan.raft.v1` gRPC peer service
//! ([`Store::open_cluster`]). This file only wires the modules together; see [`Store`] for the
//! API and the `log_store` / `state_machine` modules for the durability contract.

mod cluster;
mod codec;
mod error;
mod etcd;
mod key_range;
mod log_store;
mod model;
mod mvcc;
mod network;
mod peer_service;
mod proposal;
mod state_machine;
mod store;
mod store_cluster;
mod types;
mod watch;
mod wire;

pub use cluster::{
    parse_initial_cluster, ClusterConfig, InitialClusterState, InitialMember, RaftTuning,
};
pub use error::{Error, Result};
pub use etcd::{EtcdServer, EtcdServerConfig};
pub use key_range::{prefix_end, KeyRange};
pub use log_store::LogStore;
pub use model::{
    Compare, CompareOp, CompareTarget, DeleteRangeResult, DeleteResult, EventKind, KeyValue,
    PutResult, RangeResult, Txn, TxnOp, TxnOpResult, TxnResult, WatchEvent,
};
pub use network::{NetworkError, PeerNetwork, PeerNetworkFactory};
pub use state_machine::{StateMachineStore, INITIAL_REVISION};
pub use store::{ReadConsistency, Store, StoreConfig};
pub use store_cluster::{ClusterStatus, MemberInfo, StatusWatch};
pub use types::{NodeId, RaftRequest, RaftResponse, TypeConfig};
pub use watch::{WatchStream, WATCH_CHANNEL_CAPACITY};
