//! Capstan's control plane and node agent as supervised actors (ractor), composed from the
//! `raftstore`, `api`, `runtime` and `net` crates.
//!
//! - [`apiserver`]: the only writer of objects (validate, store, notify);
//! - [`scheduler`]: binds pending pods to ready nodes;
//! - [`election`]: leader election; only the lease holder runs the scheduler and controllers;
//! - [`agent`]: the node agent and its per-pod workers;
//! - [`supervisor`]: one-for-one restarts with back-off and a budget;
//! - [`server`]: wires one server process.

pub mod agent;
pub mod apiserver;
pub mod controllers;
pub mod election;
pub mod error;
pub mod failover;
pub mod node_service;
pub mod restart;
pub mod scheduler;
pub mod server;
pub mod supervisor;
pub mod trigger;

pub use error::{Error, Result};
