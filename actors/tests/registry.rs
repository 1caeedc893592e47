//! The API registry over a real raft store: resourceVersion is the store's mod revision, stale
//! writes are refused as conflicts, invalid objects are refused before anything is stored, and
//! a watch resumes from a resourceVersion without gaps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use actors::apiserver::{EventType, Registry};
use actors::Error;
use api::v1::{self, Object};
use api::Kind;
use futures::StreamExt;

async fn registry(dir: &std::path::Path) -> Registry {
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: dir.join("store"),
    })
    .await
    .unwrap();
    let r = Registry::new(store);
    r.ensure_namespace("default").await.unwrap();
    r
}

fn pod(name: &str, image: &str) -> Object {
    Object::from(v1::Pod {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::PodSpec {
            containers: vec![v1::Container {
                name: "c".into(),
                image: image.into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict_and_a_fresh_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let created = r.create(pod("p", "busybox")).await.unwrap();
    let rv1 = created.metadata().resource_version.clone();
    assert_eq!(
        created.as_pod().unwrap().status.as_ref().unwrap().phase,
        "Pending"
    );

    let mut first = created.clone();
    first.as_pod_mut().unwrap().status = Some(v1::PodStatus {
        phase: "Running".into(),
        ..Default::default()
    });
    let updated = r.update_status(first).await.unwrap();
    assert!(
        updated.metadata().resource_version.parse::<i64>().unwrap() > rv1.parse::<i64>().unwrap()
    );

    let mut stale = created.clone();
    stale.as_pod_mut().unwrap().status = Some(v1::PodStatus {
        phase: "Failed".into(),
        ..Default::default()
    });
    match r.update_status(stale).await {
        Err(Error::Conflict { expected, .. }) => assert_eq!(expected, rv1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = r.get(Kind::Pod, "default", "p").await.unwrap();
    assert_eq!(
        now.as_pod().unwrap().status.as_ref().unwrap().phase,
        "Running"
    );
    assert_eq!(
        now.metadata().resource_version,
        updated.metadata().resource_version
    );
    r.store().shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_or_duplicate_objects_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let rev = r.store().revision();
    match r.create(pod("Bad_Name", "busybox")).await {
        Err(Error::Invalid { details, .. }) => {
            assert!(details.contains("metadata.name"), "{details}")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    match r.create(pod("noimage", "")).await {
        Err(Error::Invalid { details, .. }) => {
            assert!(details.contains("spec.containers[0].image"), "{details}")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let mut elsewhere = pod("p", "busybox");
    elsewhere.metadata_mut().namespace = "missing".into();
    assert!(matches!(
        r.create(elsewhere).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(r.store().revision(), rev, "nothing was written");

    r.create(pod("p", "busybox")).await.unwrap();
    assert!(matches!(
        r.create(pod("p", "busybox")).await,
        Err(Error::AlreadyExists { .. })
    ));
    r.store().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_watch_resumes_after_a_listed_resource_version() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    r.create(pod("a", "busybox")).await.unwrap();
    let (items, rev) = r.list(Kind::Pod, "default", "").await.unwrap();
    assert_eq!(items.len(), 1);
    r.create(pod("b", "busybox")).await.unwrap();
    r.delete(Kind::Pod, "default", "a").await.unwrap();

    let mut events = Box::pin(
        r.watch(Kind::Pod, "default", "", &rev.to_string())
            .await
            .unwrap(),
    );
    let first = events.next().await.unwrap().unwrap();
    let second = events.next().await.unwrap().unwrap();
    assert_eq!(
        (first.event_type, first.object.metadata().name.as_str()),
        (EventType::Added, "b")
    );
    assert_eq!(
        (second.event_type, second.object.metadata().name.as_str()),
        (EventType::Deleted, "a")
    );
    drop(events);
    r.store().shutdown().await.unwrap();
}

fn service(name: &str, kind: &str, cluster_ip: &str) -> Object {
    Object::from(v1::Service {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(v1::ServiceSpec {
            r#type: kind.into(),
            cluster_ip: cluster_ip.into(),
            selector: [("app".to_string(), name.to_string())].into(),
            ports: vec![v1::ServicePort {
                port: 80,
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    })
}

fn allocated(o: &Object) -> (String, i32) {
    let spec = o.as_typed::<v1::Service>().unwrap().spec.clone().unwrap();
    (spec.cluster_ip, spec.ports[0].node_port)
}

#[tokio::test]
async fn services_get_distinct_cluster_ips_and_node_ports_that_deletion_frees() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let a = allocated(&r.create(service("a", "NodePort", "")).await.unwrap());
    let b = allocated(&r.create(service("b", "NodePort", "")).await.unwrap());
    assert!(
        a.0.starts_with("10.96.") && b.0.starts_with("10.96."),
        "{a:?} {b:?}"
    );
    assert_ne!(a.0, b.0);
    assert!((30000..=32767).contains(&a.1) && a.1 != b.1, "{a:?} {b:?}");

    match r.create(service("c", "ClusterIP", &a.0)).await {
        Err(Error::Invalid { details, .. }) => {
            assert!(details.contains("spec.clusterIP"), "{details}")
        }
        other => panic!("a taken ClusterIP must be refused, got {other:?}"),
    }
    let headless = allocated(&r.create(service("h", "ClusterIP", "None")).await.unwrap());
    assert_eq!(headless, ("None".to_string(), 0));

    // An update that leaves the allocations out keeps them.
    let mut again = r.get(Kind::Service, "default", "a").await.unwrap();
    let spec = again
        .as_typed_mut::<v1::Service>()
        .unwrap()
        .spec
        .as_mut()
        .unwrap();
    spec.cluster_ip.clear();
    spec.ports[0].node_port = 0;
    assert_eq!(allocated(&r.update(again).await.unwrap()), a);

    r.delete(Kind::Service, "default", "a").await.unwrap();
    let c = allocated(&r.create(service("c", "ClusterIP", &a.0)).await.unwrap());
    assert_eq!(c.0, a.0, "deleting a Service frees its ClusterIP");
    r.store().shutdown().await.unwrap();
}

/// The NodePort reservations in the store, sorted.
async fn node_port_keys(r: &Registry) -> Vec<String> {
    let mut keys: Vec<String> = r
        .store()
        .range_prefix(b"/registry/ranges/nodeports/")
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_service_update_allocates_added_node_ports_and_frees_dropped_ones() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    // Regression: an update that added NodePort ports allocated nothing, and ports an update
    // dropped kept their reservation keys for ever.
    let plain = r.create(service("a", "ClusterIP", "")).await.unwrap();
    assert!(node_port_keys(&r).await.is_empty());

    let mut upgrade = plain.clone();
    let spec = upgrade
        .as_typed_mut::<v1::Service>()
        .unwrap()
        .spec
        .as_mut()
        .unwrap();
    spec.r#type = "NodePort".into();
    spec.ports.push(v1::ServicePort {
        name: "b".into(),
        port: 81,
        ..Default::default()
    });
    spec.ports[0].name = "a".into();
    let upgraded = r.update(upgrade).await.unwrap();
    let ports: Vec<i32> = upgraded
        .as_typed::<v1::Service>()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.node_port)
        .collect();
    assert!(
        ports.iter().all(|p| (30000..=32767).contains(p)) && ports[0] != ports[1],
        "{ports:?}"
    );
    let keys: Vec<String> = ports
        .iter()
        .map(|p| format!("/registry/ranges/nodeports/{p}"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(node_port_keys(&r).await, sorted);
    // Another Service cannot get them.
    let other = allocated(&r.create(service("b", "NodePort", "")).await.unwrap());
    assert!(!ports.contains(&other.1), "{other:?} vs {ports:?}");

    // Dropping port 81 frees its NodePort; going back to ClusterIP frees the other.
    let mut fewer = r.get(Kind::Service, "default", "a").await.unwrap();
    fewer
        .as_typed_mut::<v1::Service>()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .ports
        .truncate(1);
    let fewer = r.update(fewer).await.unwrap();
    assert_eq!(
        allocated(&fewer).1,
        ports[0],
        "the kept port keeps its NodePort"
    );
    let mut expect = vec![
        keys[0].clone(),
        format!("/registry/ranges/nodeports/{}", other.1),
    ];
    expect.sort();
    assert_eq!(node_port_keys(&r).await, expect);
    let mut back = fewer;
    back.as_typed_mut::<v1::Service>()
        .unwrap()
        .spec
        .as_mut()
        .unwrap()
        .r#type = "ClusterIP".into();
    let back = r.update(back).await.unwrap();
    assert_eq!(allocated(&back).1, 0);
    assert_eq!(
        node_port_keys(&r).await,
        vec![format!("/registry/ranges/nodeports/{}", other.1)]
    );
    r.store().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_selector_watch_sees_objects_enter_and_leave_the_selection() {
    // Regression: a watch with a label selector never said DELETED for an object relabelled
    // out of the selection, so a watcher kept it for ever.
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path()).await;
    let (_, rev) = r.list(Kind::Pod, "default", "").await.unwrap();
    let mut events = Box::pin(
        r.watch(Kind::Pod, "default", "tier=web", &rev.to_string())
            .await
            .unwrap(),
    );
    let relabel = |tier: &str, o: Object| {
        let mut o = o;
        o.metadata_mut().labels.insert("tier".into(), tier.into());
        o
    };
    let created = r.create(relabel("web", pod("a", "busybox"))).await.unwrap();
    r.create(relabel("db", pod("other", "busybox")))
        .await
        .unwrap();
    let moved = r.update(relabel("db", created)).await.unwrap();
    let back = r.update(relabel("web", moved)).await.unwrap();
    let mut touched = back;
    touched
        .metadata_mut()
        .annotations
        .insert("k".into(), "v".into());
    r.update(touched).await.unwrap();
    r.delete(Kind::Pod, "default", "a").await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..5 {
        let ev = events.next().await.unwrap().unwrap();
        seen.push((
            ev.event_type,
            ev.object.metadata().name.clone(),
            ev.object.metadata().labels["tier"].clone(),
        ));
    }
    let want = |t, tier: &str| (t, "a".to_string(), tier.to_string());
    assert_eq!(
        seen,
        vec![
            want(EventType::Added, "web"),
            want(EventType::Deleted, "db"),
            want(EventType::Added, "web"),
            want(EventType::Modified, "web"),
            want(EventType::Deleted, "web"),
        ]
    );
    drop(events);
    r.store().shutdown().await.unwrap();
}
