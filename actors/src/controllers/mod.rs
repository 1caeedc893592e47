//! Control-plane controllers other than the scheduler. Each is an actor that re-reads the state
//! it needs on every pass (level-triggered) and computes its actions with pure functions
//! (the `decide_*` modules).

pub mod cronjob;
pub mod decide_cronjob;
pub mod decide_gc;
pub mod decide_job;
pub mod decide_node;
pub mod decide_replicas;
pub mod decide_rollout;
pub mod deployment;
pub mod endpoints;
pub mod garbage_collector;
pub mod job;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod runner;
