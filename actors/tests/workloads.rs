//! The ReplicaSet and Deployment controllers and the garbage collector over a real store and
//! registry. Nothing runs pods here: a pod's readiness is simulated by writing its status, which
//! is all the controllers read. Each step runs the controllers' passes directly, so the
//! invariants are checked between every pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use actors::apiserver::Registry;
use actors::controllers::decide_rollout::{POD_TEMPLATE_HASH, REVISION};
use actors::controllers::{deployment, garbage_collector, replicaset};
use api::v1::{self, Object};
use api::Kind;
use chrono::Utc;

struct Env {
    reg: Registry,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
    })
    .await
    .unwrap();
    let reg = Registry::new(store);
    reg.ensure_namespace("default").await.unwrap();
    Env { reg, _dir: dir }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(name: &str) -> Option<v1::ObjectMeta> {
    Some(v1::ObjectMeta {
        name: name.into(),
        namespace: "default".into(),
        ..Default::default()
    })
}

fn template(app: &str, image: &str) -> v1::PodTemplateSpec {
    v1::PodTemplateSpec {
        metadata: Some(v1::ObjectMeta {
            labels: labels(&[("app", app)]),
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
    }
}

fn selector(app: &str) -> Option<v1::LabelSelector> {
    Some(v1::LabelSelector {
        match_labels: labels(&[("app", app)]),
        ..Default::default()
    })
}

fn replica_set(name: &str, app: &str, replicas: i32) -> v1::ReplicaSet {
    v1::ReplicaSet {
        metadata: meta(name),
        spec: Some(v1::ReplicaSetSpec {
            replicas: Some(replicas),
            selector: selector(app),
            template: Some(template(app, "busybox:latest")),
            min_ready_seconds: 0,
        }),
        status: None,
    }
}

fn deployment(
    name: &str,
    app: &str,
    replicas: i32,
    strategy: v1::DeploymentStrategy,
) -> v1::Deployment {
    v1::Deployment {
        metadata: meta(name),
        spec: Some(v1::DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(app),
            template: Some(template(app, "busybox:a")),
            strategy: Some(strategy),
            ..Default::default()
        }),
        status: None,
    }
}

fn rolling(surge: i32, unavailable: i32) -> v1::DeploymentStrategy {
    v1::DeploymentStrategy {
        r#type: "RollingUpdate".into(),
        rolling_update: Some(v1::RollingUpdateDeployment {
            max_surge: Some(v1::IntOrString::int(surge)),
            max_unavailable: Some(v1::IntOrString::int(unavailable)),
        }),
    }
}

fn name_of(p: &v1::Pod) -> String {
    p.metadata.as_ref().unwrap().name.clone()
}

fn is_ready(p: &v1::Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.r#type == "Ready" && c.status == "True")
    })
}

/// Pods that count: not being deleted.
async fn pods(reg: &Registry, selector: &str) -> Vec<v1::Pod> {
    let (objs, _) = reg.list(Kind::Pod, "default", selector).await.unwrap();
    objs.into_iter()
        .filter_map(|o| o.into_typed::<v1::Pod>())
        .filter(|p| p.metadata.as_ref().unwrap().deletion_timestamp.is_empty())
        .collect()
}

async fn get<T: api::Resource>(reg: &Registry, kind: Kind, name: &str) -> T {
    reg.get(kind, "default", name)
        .await
        .unwrap()
        .into_typed::<T>()
        .unwrap()
}

/// What a node agent would report for a running, ready pod.
async fn mark_ready(reg: &Registry, pod: &v1::Pod) {
    let mut p = pod.clone();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    p.status = Some(v1::PodStatus {
        phase: "Running".into(),
        conditions: vec![v1::PodCondition {
            r#type: "Ready".into(),
            status: "True".into(),
            last_transition_time: now,
            ..Default::default()
        }],
        ..Default::default()
    });
    p.metadata.as_mut().unwrap().resource_version.clear();
    reg.update_status(Object::from(p)).await.unwrap();
}

async fn rs_pass(reg: &Registry) {
    replicaset::sync_all(reg, Utc::now()).await.unwrap();
}

async fn deploy_pass(reg: &Registry) {
    deployment::sync_all(reg, Utc::now()).await.unwrap();
}

async fn set_replicas(reg: &Registry, name: &str, n: i32) {
    let mut rs: v1::ReplicaSet = get(reg, Kind::ReplicaSet, name).await;
    rs.spec.as_mut().unwrap().replicas = Some(n);
    reg.update(Object::from(rs)).await.unwrap();
}

fn owner_uid(p: &v1::Pod) -> Option<String> {
    p.metadata
        .as_ref()
        .unwrap()
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

#[tokio::test]
async fn a_replicaset_adopts_scales_replaces_and_releases_pods() {
    let env = env().await;
    let reg = &env.reg;
    // An orphan that matches is adopted instead of a new pod being created.
    let orphan = v1::Pod {
        metadata: Some(v1::ObjectMeta {
            labels: labels(&[("app", "web")]),
            ..meta("orphan").unwrap()
        }),
        spec: template("web", "busybox:latest").spec,
        status: None,
    };
    reg.create(Object::from(orphan)).await.unwrap();
    let rs = reg
        .create(Object::from(replica_set("web", "web", 3)))
        .await
        .unwrap();
    let uid = rs.metadata().uid.clone();
    rs_pass(reg).await;
    let ps = pods(reg, "app=web").await;
    assert_eq!(ps.len(), 3);
    assert!(ps
        .iter()
        .all(|p| owner_uid(p).as_deref() == Some(uid.as_str())));
    assert!(
        ps.iter().any(|p| name_of(p) == "orphan"),
        "the orphan was adopted"
    );
    assert!(ps
        .iter()
        .filter(|p| name_of(p) != "orphan")
        .all(|p| name_of(p).starts_with("web-")));

    set_replicas(reg, "web", 5).await;
    rs_pass(reg).await;
    let ps = pods(reg, "app=web").await;
    assert_eq!(ps.len(), 5);

    // Scale down keeps the ready pods: not-ready ones go first.
    let keep: Vec<String> = ps.iter().take(2).map(name_of).collect();
    for p in ps.iter().take(2) {
        mark_ready(reg, p).await;
    }
    set_replicas(reg, "web", 2).await;
    rs_pass(reg).await;
    let mut left: Vec<String> = pods(reg, "app=web").await.iter().map(name_of).collect();
    left.sort();
    let mut want = keep.clone();
    want.sort();
    assert_eq!(left, want);
    let st = get::<v1::ReplicaSet>(reg, Kind::ReplicaSet, "web")
        .await
        .status
        .unwrap();
    let generation = reg
        .get(Kind::ReplicaSet, "default", "web")
        .await
        .unwrap()
        .metadata()
        .generation;
    assert_eq!(
        (
            st.replicas,
            st.ready_replicas,
            st.available_replicas,
            st.fully_labeled_replicas
        ),
        (2, 2, 2, 2)
    );
    assert_eq!(st.observed_generation, generation);

    // A deleted pod is replaced.
    reg.delete(Kind::Pod, "default", &keep[0]).await.unwrap();
    rs_pass(reg).await;
    let ps = pods(reg, "app=web").await;
    assert_eq!(ps.len(), 2);
    assert!(ps.iter().all(|p| name_of(p) != keep[0]));

    // A pod relabelled out of the selector is released and replaced.
    let mut stray: v1::Pod = get(reg, Kind::Pod, &keep[1]).await;
    stray.metadata.as_mut().unwrap().labels = labels(&[("app", "debug")]);
    reg.update(Object::from(stray)).await.unwrap();
    rs_pass(reg).await;
    let stray: v1::Pod = get(reg, Kind::Pod, &keep[1]).await;
    assert!(
        stray.metadata.unwrap().owner_references.is_empty(),
        "released"
    );
    assert_eq!(pods(reg, "app=web").await.len(), 2);
}

/// Checks the rollout bounds and returns (pods, ready pods).
async fn check_bounds(
    reg: &Registry,
    n: usize,
    surge: usize,
    unavailable: usize,
    step: &str,
) -> (usize, usize) {
    let ps = pods(reg, "app=roll").await;
    let ready = ps.iter().filter(|p| is_ready(p)).count();
    assert!(
        ps.len() <= n + surge,
        "{step}: {} pods > {n} + {surge}",
        ps.len()
    );
    assert!(
        ready + unavailable >= n,
        "{step}: {ready} ready < {n} - {unavailable}"
    );
    (ps.len(), ready)
}

async fn ready_one(reg: &Registry, app: &str) {
    if let Some(p) = pods(reg, &format!("app={app}"))
        .await
        .iter()
        .find(|p| !is_ready(p))
    {
        mark_ready(reg, p).await;
    }
}

async fn rollout_done(reg: &Registry, name: &str, n: i32) -> bool {
    let d: v1::Deployment = get(reg, Kind::Deployment, name).await;
    let generation = d.metadata.as_ref().unwrap().generation;
    let s = d.status.unwrap_or_default();
    s.observed_generation >= generation
        && s.updated_replicas == n
        && s.replicas == n
        && s.available_replicas == n
}

fn owned_sets(sets: Vec<Object>, uid: &str) -> Vec<v1::ReplicaSet> {
    sets.into_iter()
        .filter_map(|o| o.into_typed::<v1::ReplicaSet>())
        .filter(|rs| {
            rs.metadata
                .as_ref()
                .unwrap()
                .owner_references
                .iter()
                .any(|r| r.uid == uid)
        })
        .collect()
}

#[tokio::test]
async fn a_deployment_rolls_to_a_new_template_within_max_surge_and_max_unavailable() {
    let env = env().await;
    let reg = &env.reg;
    let (n, surge, unavailable) = (4usize, 1usize, 1usize);
    let d = reg
        .create(Object::from(deployment("roll", "roll", 4, rolling(1, 1))))
        .await
        .unwrap();
    let uid = d.metadata().uid.clone();
    // Template A comes up; pods become ready one at a time.
    for i in 0..60 {
        deploy_pass(reg).await;
        rs_pass(reg).await;
        ready_one(reg, "roll").await;
        rs_pass(reg).await;
        if rollout_done(reg, "roll", 4).await {
            break;
        }
        assert!(i < 59, "template A never became available");
    }
    let (sets, _) = reg.list(Kind::ReplicaSet, "default", "").await.unwrap();
    let old = owned_sets(sets, &uid);
    assert_eq!(old.len(), 1);
    let old_name = old[0].metadata.as_ref().unwrap().name.clone();
    let hash = old[0].metadata.as_ref().unwrap().labels[POD_TEMPLATE_HASH].clone();
    assert_eq!(old_name, format!("roll-{hash}"));
    assert_eq!(old[0].metadata.as_ref().unwrap().annotations[REVISION], "1");

    // Template B: every step stays within the bounds.
    let mut dep: v1::Deployment = get(reg, Kind::Deployment, "roll").await;
    dep.spec.as_mut().unwrap().template = Some(template("roll", "busybox:b"));
    reg.update(Object::from(dep)).await.unwrap();
    let mut max_pods = 0;
    for i in 0..100 {
        deploy_pass(reg).await;
        rs_pass(reg).await;
        let (total, _) = check_bounds(
            reg,
            n,
            surge,
            unavailable,
            &format!("step {i} after scaling"),
        )
        .await;
        max_pods = max_pods.max(total);
        ready_one(reg, "roll").await;
        rs_pass(reg).await;
        check_bounds(
            reg,
            n,
            surge,
            unavailable,
            &format!("step {i} after readiness"),
        )
        .await;
        if rollout_done(reg, "roll", 4).await {
            break;
        }
        assert!(i < 99, "rollout to template B never finished");
    }
    assert_eq!(max_pods, n + surge, "the rollout used its surge");
    let (sets, _) = reg.list(Kind::ReplicaSet, "default", "").await.unwrap();
    let sets = owned_sets(sets, &uid);
    assert_eq!(sets.len(), 2, "the old ReplicaSet is kept as history");
    let (new, old): (Vec<_>, Vec<_>) = sets
        .into_iter()
        .partition(|rs| rs.metadata.as_ref().unwrap().name != old_name);
    let rep = |rs: &v1::ReplicaSet| rs.spec.as_ref().unwrap().replicas.unwrap();
    assert_eq!((rep(&new[0]), rep(&old[0])), (4, 0));
    assert_eq!(new[0].metadata.as_ref().unwrap().annotations[REVISION], "2");
    let ps = pods(reg, "app=roll").await;
    let new_uid = new[0].metadata.as_ref().unwrap().uid.clone();
    assert!(ps
        .iter()
        .all(|p| owner_uid(p).as_deref() == Some(new_uid.as_str())));
    assert!(ps
        .iter()
        .all(|p| p.spec.as_ref().unwrap().containers[0].image == "busybox:b"));
    let dep: v1::Deployment = get(reg, Kind::Deployment, "roll").await;
    assert_eq!(dep.metadata.as_ref().unwrap().annotations[REVISION], "2");
    let st = dep.status.unwrap();
    assert_eq!((st.ready_replicas, st.unavailable_replicas), (4, 0));
    let cond = |t: &str| {
        let c = st.conditions.iter().find(|c| c.r#type == t).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(
        cond("Available"),
        ("True".into(), "MinimumReplicasAvailable".into())
    );
    assert_eq!(
        cond("Progressing"),
        ("True".into(), "NewReplicaSetAvailable".into())
    );
}

#[tokio::test]
async fn recreate_removes_every_old_pod_before_a_new_one_and_history_is_trimmed() {
    let env = env().await;
    let reg = &env.reg;
    let recreate = v1::DeploymentStrategy {
        r#type: "Recreate".into(),
        rolling_update: None,
    };
    let mut d = deployment("re", "re", 2, recreate);
    d.spec.as_mut().unwrap().revision_history_limit = Some(0);
    reg.create(Object::from(d)).await.unwrap();
    for _ in 0..10 {
        deploy_pass(reg).await;
        rs_pass(reg).await;
        for p in pods(reg, "app=re").await {
            mark_ready(reg, &p).await;
        }
        rs_pass(reg).await;
    }
    assert!(rollout_done(reg, "re", 2).await);
    let mut dep: v1::Deployment = get(reg, Kind::Deployment, "re").await;
    dep.spec.as_mut().unwrap().template = Some(template("re", "busybox:b"));
    reg.update(Object::from(dep)).await.unwrap();
    for i in 0..30 {
        deploy_pass(reg).await;
        rs_pass(reg).await;
        let images: Vec<String> = pods(reg, "app=re")
            .await
            .iter()
            .map(|p| p.spec.as_ref().unwrap().containers[0].image.clone())
            .collect();
        assert!(
            !(images.iter().any(|i| i == "busybox:a") && images.iter().any(|i| i == "busybox:b")),
            "step {i}: old and new pods at once: {images:?}"
        );
        for p in pods(reg, "app=re").await {
            mark_ready(reg, &p).await;
        }
        rs_pass(reg).await;
        if rollout_done(reg, "re", 2).await {
            break;
        }
    }
    assert!(rollout_done(reg, "re", 2).await);
    deploy_pass(reg).await;
    let (sets, _) = reg
        .list(Kind::ReplicaSet, "default", "app=re")
        .await
        .unwrap();
    assert_eq!(
        sets.len(),
        1,
        "revisionHistoryLimit 0 removes the drained old ReplicaSet"
    );
}

#[tokio::test]
async fn a_paused_deployment_starts_no_rollout() {
    let env = env().await;
    let reg = &env.reg;
    reg.create(Object::from(deployment("p", "p", 1, rolling(1, 0))))
        .await
        .unwrap();
    deploy_pass(reg).await;
    let mut dep: v1::Deployment = get(reg, Kind::Deployment, "p").await;
    let spec = dep.spec.as_mut().unwrap();
    spec.paused = true;
    spec.template = Some(template("p", "busybox:b"));
    reg.update(Object::from(dep)).await.unwrap();
    for _ in 0..3 {
        deploy_pass(reg).await;
        rs_pass(reg).await;
    }
    let (sets, _) = reg
        .list(Kind::ReplicaSet, "default", "app=p")
        .await
        .unwrap();
    assert_eq!(
        sets.len(),
        1,
        "no ReplicaSet for the new template while paused"
    );
    let dep: v1::Deployment = get(reg, Kind::Deployment, "p").await;
    let progressing = dep
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason, "DeploymentPaused");
}

#[tokio::test]
async fn the_garbage_collector_removes_dependents_of_deleted_owners_in_cascade() {
    let env = env().await;
    let reg = &env.reg;
    reg.create(Object::from(replica_set("lone", "lone", 2)))
        .await
        .unwrap();
    reg.create(Object::from(deployment("dep", "dep", 2, rolling(1, 0))))
        .await
        .unwrap();
    let bystander = v1::Pod {
        metadata: meta("bystander"),
        spec: template("x", "busybox:latest").spec,
        status: None,
    };
    reg.create(Object::from(bystander)).await.unwrap();
    deploy_pass(reg).await;
    rs_pass(reg).await;
    assert_eq!(pods(reg, "app=lone").await.len(), 2);
    assert_eq!(pods(reg, "app=dep").await.len(), 2);
    garbage_collector::collect(reg).await.unwrap();
    assert_eq!(
        pods(reg, "app=lone").await.len(),
        2,
        "owners exist: nothing collected"
    );

    reg.delete(Kind::ReplicaSet, "default", "lone")
        .await
        .unwrap();
    reg.delete(Kind::Deployment, "default", "dep")
        .await
        .unwrap();
    // Deployment -> ReplicaSet -> pods: one level per pass.
    for _ in 0..3 {
        garbage_collector::collect(reg).await.unwrap();
    }
    assert!(pods(reg, "app=lone").await.is_empty());
    assert!(pods(reg, "app=dep").await.is_empty());
    let (sets, _) = reg.list(Kind::ReplicaSet, "default", "").await.unwrap();
    assert!(sets.is_empty());
    assert!(
        reg.get(Kind::Pod, "default", "bystander").await.is_ok(),
        "orphans without owners stay"
    );
}
