//! The scheduler's decision: which ready node a pending pod goes to. Pure: no I/O.
//!
//! Filters: node ready, schedulable, `nodeSelector` labels. Score: fewest pods (a stand-in for
//! least-allocated until resource accounting lands); ties broken round-robin by a counter.

use std::collections::HashMap;

use api::v1;

/// Why a pod could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Kubernetes-style summary, e.g. `0/2 nodes are available: 2 node(s) didn't match ...`.
    pub message: String,
}

/// True when the node reports `Ready=True` and is not cordoned.
pub fn node_ready(node: &v1::Node) -> bool {
    let unschedulable = node.spec.as_ref().is_some_and(|s| s.unschedulable);
    let ready = node.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    });
    ready && !unschedulable
}

fn selector_matches(pod: &v1::Pod, node: &v1::Node) -> bool {
    let wanted = pod.spec.as_ref().map(|s| &s.node_selector);
    let labels = node.metadata.as_ref().map(|m| &m.labels);
    match (wanted, labels) {
        (None, _) => true,
        (Some(w), l) => w.iter().all(|(k, v)| l.and_then(|l| l.get(k)) == Some(v)),
    }
}

/// Picks a node for `pod` among `nodes`, given how many pods each node already runs.
pub fn pick_node(
    pod: &v1::Pod,
    nodes: &[v1::Node],
    pods_per_node: &HashMap<String, usize>,
    round_robin: usize,
) -> Result<String, Unschedulable> {
    let (mut not_ready, mut mismatch) = (0, 0);
    let mut fit: Vec<(&str, usize)> = Vec::new();
    for node in nodes {
        let name = node
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or_default();
        if !node_ready(node) {
            not_ready += 1;
        } else if !selector_matches(pod, node) {
            mismatch += 1;
        } else {
            fit.push((name, pods_per_node.get(name).copied().unwrap_or(0)));
        }
    }
    let Some(least) = fit.iter().map(|(_, n)| *n).min() else {
        let mut reasons = Vec::new();
        if not_ready > 0 {
            reasons.push(format!("{not_ready} node(s) were not ready"));
        }
        if mismatch > 0 {
            reasons.push(format!(
                "{mismatch} node(s) didn't match Pod's node affinity/selector"
            ));
        }
        let message = if reasons.is_empty() {
            "0/0 nodes are available: no nodes registered.".to_string()
        } else {
            format!(
                "0/{} nodes are available: {}.",
                nodes.len(),
                reasons.join(", ")
            )
        };
        return Err(Unschedulable { message });
    };
    let mut best: Vec<&str> = fit
        .iter()
        .filter(|(_, n)| *n == least)
        .map(|(name, _)| *name)
        .collect();
    best.sort_unstable();
    Ok(best[round_robin % best.len()].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)]) -> v1::Node {
        v1::Node {
            metadata: Some(v1::ObjectMeta {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            status: Some(v1::NodeStatus {
                conditions: vec![v1::NodeCondition {
                    r#type: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(selector: &[(&str, &str)]) -> v1::Pod {
        v1::Pod {
            spec: Some(v1::PodSpec {
                node_selector: selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_nodes_matching_the_selector_are_picked() {
        let nodes = vec![
            node("a", false, &[]),
            node("b", true, &[("disk", "ssd")]),
            node("c", true, &[]),
        ];
        let got = pick_node(&pod(&[("disk", "ssd")]), &nodes, &HashMap::new(), 7);
        assert_eq!(got, Ok("b".to_string()));
    }

    #[test]
    fn the_least_loaded_node_wins_and_ties_rotate() {
        let nodes = vec![
            node("a", true, &[]),
            node("b", true, &[]),
            node("c", true, &[]),
        ];
        let load = HashMap::from([
            ("a".to_string(), 3),
            ("b".to_string(), 1),
            ("c".to_string(), 1),
        ]);
        assert_eq!(pick_node(&pod(&[]), &nodes, &load, 0), Ok("b".into()));
        assert_eq!(pick_node(&pod(&[]), &nodes, &load, 1), Ok("c".into()));
    }

    #[test]
    fn no_fit_explains_why() {
        let nodes = vec![node("a", false, &[]), node("b", true, &[])];
        let err = pick_node(&pod(&[("gpu", "yes")]), &nodes, &HashMap::new(), 0).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
