//! Capstan's etcd: an MVCC key-value store (revisions, transactions, watches) replicated with
//! openraft and persisted in sled, as a single member ([`Store::open`]) or a member of a
//! multi-member cluster talking to its peers over the `capstan.raft.v1` gRPC peer service
//! ([`Store::open_cluster`]). This file only wires the modules together; see [`Store`] for the
//! API and the `log_store` / `state_machine` modules for the durability contract.

mod backup;
mod batch_apply;
mod cluster;
mod codec;
mod compaction;
mod error;
mod etcd;
mod forward_batch;
mod key_range;
mod lease;
mod lease_keeper;
mod lease_store;
mod log_store;
mod member;
mod member_agent;
mod model;
mod mvcc;
mod network;
mod peer_service;
mod proposal;
mod read_index;
mod state_machine;
mod store;
mod store_cluster;
pub mod tcp;
mod types;
mod watch;
mod wire;
mod write_batch;

pub use backup::{restore_backup, verify_backup, Backup, BackupError, BackupInfo};
pub use cluster::{
    parse_initial_cluster, ClusterConfig, InitialClusterState, InitialMember, RaftTuning,
};
pub use compaction::{AutoCompactor, CompactionPolicy, PolicyError, DEFAULT_REVISION_INTERVAL};
pub use error::{Error, Result};
pub use etcd::{save_snapshot, EtcdServer, EtcdServerConfig, SavedSnapshot, SnapshotError};
pub use key_range::{prefix_end, KeyRange};
pub use lease::{Lease, LeaseId, LeaseTimeToLive, MAX_LEASE_TTL, NO_LEASE};
pub use log_store::LogStore;
pub use member::{member_id, normalize_peer_url, Member, MemberError};
pub use model::{
    Compare, CompareOp, CompareTarget, DeleteRangeResult, DeleteResult, EventKind, KeyValue,
    PutResult, RangeResult, Refusal, Txn, TxnOp, TxnOpResult, TxnResult, WatchEvent,
};
pub use network::{NetworkError, PeerNetwork, PeerNetworkFactory};
pub use state_machine::{StateMachineStore, INITIAL_REVISION};
pub use store::{ReadConsistency, Store, StoreConfig};
pub use store_cluster::{ClusterStatus, MemberInfo, StatusWatch};
pub use types::{NodeId, RaftRequest, RaftResponse, TypeConfig};
pub use watch::{WatchStream, WATCH_CHANNEL_CAPACITY};
