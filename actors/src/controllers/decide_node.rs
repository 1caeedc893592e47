//! Node lifecycle decisions, as pure functions of the Node objects, the pods and the time:
//! a node whose agent stopped heartbeating becomes `Ready=Unknown`; pods bound to a node that has
//! not been Ready for longer than the eviction timeout are evicted (gracefully deleted).

use api::v1;
use chrono::{DateTime, Duration, Utc};

/// Tunables of the node lifecycle controller (Kubernetes' defaults).
#[derive(Debug, Clone, Copy)]
pub struct LifecycleConfig {
    /// A node whose last heartbeat is older than this is marked `Ready=Unknown` (k8s: 40 s).
    pub monitor_grace: Duration,
    /// Pods on a node that has not been Ready for this long are evicted (k8s: 300 s).
    pub eviction_timeout: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            monitor_grace: Duration::seconds(40),
            eviction_timeout: Duration::seconds(300),
        }
    }
}

fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn ready_condition(node: &v1::Node) -> Option<&v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
}

/// The node's Ready condition as the controller must set it at `now`, or `None` when it stays.
pub fn stale_ready_condition(
    node: &v1::Node,
    now: DateTime<Utc>,
    cfg: &LifecycleConfig,
) -> Option<v1::NodeCondition> {
    let cond = ready_condition(node)?;
    if cond.status == "Unknown" {
        return None;
    }
    let heartbeat = parse(&cond.last_heartbeat_time)?;
    if now - heartbeat <= cfg.monitor_grace {
        return None;
    }
    Some(v1::NodeCondition {
        r#type: "Ready".into(),
        status: "Unknown".into(),
        reason: "NodeStatusUnknown".into(),
        message: "Kubelet stopped posting node status.".into(),
        last_heartbeat_time: cond.last_heartbeat_time.clone(),
        last_transition_time: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// True when pods on this node must be evicted at `now`: it has not been Ready for longer
/// than the eviction timeout.
pub fn evicts_pods(node: &v1::Node, now: DateTime<Utc>, cfg: &LifecycleConfig) -> bool {
    match ready_condition(node) {
        Some(c) if c.status != "True" => {
            parse(&c.last_transition_time).is_some_and(|t| now - t > cfg.eviction_timeout)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(status: &str, heartbeat: &str, transition: &str) -> v1::Node {
        v1::Node {
            status: Some(v1::NodeStatus {
                conditions: vec![v1::NodeCondition {
                    r#type: "Ready".into(),
                    status: status.into(),
                    last_heartbeat_time: heartbeat.into(),
                    last_transition_time: transition.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse(s).expect("test time")
    }

    #[test]
    fn a_silent_node_turns_unknown_after_the_grace_period() {
        let cfg = LifecycleConfig::default();
        let n = node("True", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        assert!(stale_ready_condition(&n, at("2026-01-01T00:00:40Z"), &cfg).is_none());
        let c = stale_ready_condition(&n, at("2026-01-01T00:00:41Z"), &cfg).expect("stale");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "NodeStatusUnknown")
        );
        assert_eq!(c.last_transition_time, "2026-01-01T00:00:41Z");
        let unknown = node("Unknown", "2026-01-01T00:00:00Z", "2026-01-01T00:00:41Z");
        assert!(stale_ready_condition(&unknown, at("2026-01-01T01:00:00Z"), &cfg).is_none());
    }

    #[test]
    fn pods_are_evicted_only_after_the_node_was_not_ready_long_enough() {
        let cfg = LifecycleConfig::default();
        let n = node("Unknown", "2026-01-01T00:00:00Z", "2026-01-01T00:00:41Z");
        assert!(!evicts_pods(&n, at("2026-01-01T00:05:41Z"), &cfg));
        assert!(evicts_pods(&n, at("2026-01-01T00:05:42Z"), &cfg));
        let ready = node("True", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        assert!(!evicts_pods(&ready, at("2026-01-02T00:00:00Z"), &cfg));
    }
}
