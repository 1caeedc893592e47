//! Control-plane controllers other than the scheduler. Each is an actor that re-reads the state
//! it needs on every pass (level-triggered) and computes its actions with pure functions.

pub mod decide_node;
pub mod node_ipam;
pub mod node_lifecycle;
