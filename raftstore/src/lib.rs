//! Capstan's etcd: an MVCC key-value store (revisions, transactions, watches) replicated with
//! openraft and persisted in sled. This file only wires the modules together; see [`Store`] for
//! the API and the `log_store` / `state_machine` modules for the durability contract.

mod codec;
mod error;
mod log_store;
mod model;
mod mvcc;
mod network;
mod state_machine;
mod store;
mod types;
mod watch;

pub use error::{Error, Result};
pub use log_store::LogStore;
pub use model::{
    Compare, CompareOp, CompareTarget, DeleteResult, EventKind, KeyValue, PutResult, RangeResult,
    Txn, TxnOp, TxnOpResult, TxnResult, WatchEvent,
};
pub use network::{NetworkError, PeerNetwork, PeerNetworkFactory};
pub use state_machine::{StateMachineStore, INITIAL_REVISION};
pub use store::{Store, StoreConfig};
pub use types::{NodeId, RaftRequest, RaftResponse, TypeConfig};
pub use watch::{WatchStream, WATCH_CHANNEL_CAPACITY};
