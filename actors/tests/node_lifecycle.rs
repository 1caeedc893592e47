//! The node lifecycle controller over a real store: a node that stopped heartbeating becomes
//! `Ready=Unknown`, its pods not ready, and after the eviction timeout its pods are evicted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use actors::apiserver::Registry;
use actors::controllers::decide_node::LifecycleConfig;
use actors::controllers::node_lifecycle::{pass, NodeLifecycleArgs};
use api::v1::{self, Object};
use api::Kind;
use chrono::{Duration, Utc};

fn ready(node: &v1::Node) -> String {
    node.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .unwrap()
        .status
        .clone()
}

#[tokio::test]
async fn a_silent_node_is_marked_unknown_and_its_pods_evicted_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let reg = Registry::new(store);
    reg.ensure_namespace("default").await.unwrap();
    let t0 = Utc::now();
    let ts = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);

    let node = v1::Node {
        metadata: Some(v1::ObjectMeta {
            name: "n1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut node = reg
        .create(Object::from(node))
        .await
        .unwrap()
        .into_node()
        .unwrap();
    node.status = Some(v1::NodeStatus {
        conditions: vec![v1::NodeCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_heartbeat_time: ts(t0),
            last_transition_time: ts(t0),
            ..Default::default()
        }],
        ..Default::default()
    });
    reg.update_status(Object::from(node)).await.unwrap();
    let pod = v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: "p".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            containers: vec![v1::Container {
                name: "c".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    reg.create(Object::from(pod)).await.unwrap();
    reg.bind("default", "p", "n1").await.unwrap();

    let args = NodeLifecycleArgs {
        registry: reg.clone(),
        config: LifecycleConfig::default(),
    };
    pass(&args, t0 + Duration::seconds(30)).await.unwrap();
    let n = reg
        .get(Kind::Node, "", "n1")
        .await
        .unwrap()
        .into_node()
        .unwrap();
    assert_eq!(ready(&n), "True", "within the grace period nothing changes");

    pass(&args, t0 + Duration::seconds(41)).await.unwrap();
    let n = reg
        .get(Kind::Node, "", "n1")
        .await
        .unwrap()
        .into_node()
        .unwrap();
    assert_eq!(ready(&n), "Unknown");
    let p = reg
        .get(Kind::Pod, "default", "p")
        .await
        .unwrap()
        .into_pod()
        .unwrap();
    let pod_ready = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "Ready")
        .unwrap();
    assert_eq!(pod_ready.status, "False");
    assert!(p.metadata.as_ref().unwrap().deletion_timestamp.is_empty());

    pass(&args, t0 + Duration::seconds(41 + 301)).await.unwrap();
    let p = reg.get(Kind::Pod, "default", "p").await.unwrap();
    assert!(
        !p.metadata().deletion_timestamp.is_empty(),
        "the pod is being evicted"
    );
    reg.store().shutdown().await.unwrap();
}
