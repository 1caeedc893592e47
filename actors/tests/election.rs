//! Leader election over a real store: one elector leads and runs its control plane, a standby
//! takes over only after the leader stops renewing (at once when it releases the lease), a
//! deposed leader stops its control plane, and writes fenced by an old leadership fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::apiserver::fence::fence_key;
use actors::apiserver::{Fence, Registry};
use actors::election::elector::ControlPlaneFactory;
use actors::election::{lease, ElectionConfig, ElectionStatus, Elector, ElectorArgs, ElectorMsg};
use actors::supervisor::ChildSpec;
use actors::Error;
use api::v1::{self, Object};
use api::Kind;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus};

const NS: &str = "kube-system";
const NAME: &str = "test-lease";

fn timing() -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
    }
}

async fn registry(dir: &std::path::Path) -> Registry {
    let store = raftstore::Store::open(raftstore::StoreConfig {
        node_id: 1,
        data_dir: dir.join("store"),
    })
    .await
    .unwrap();
    Registry::new(store)
}

/// A control plane that does nothing but stay alive; the factory records who started one with
/// which fence.
struct Probe;
impl Actor for Probe {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _m: ActorRef<()>, _a: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

type Started = Arc<Mutex<Vec<(String, Fence, ActorCell)>>>;

fn probe_plane(identity: &str, started: Started) -> ControlPlaneFactory {
    let identity = identity.to_string();
    Arc::new(move |reg: Registry| {
        let (identity, started) = (identity.clone(), started.clone());
        let fence = reg
            .fence()
            .cloned()
            .expect("the control plane's registry is fenced");
        vec![ChildSpec {
            id: format!("probe-{identity}"),
            start: Arc::new(move |sup| {
                let (identity, started, fence) = (identity.clone(), started.clone(), fence.clone());
                Box::pin(async move {
                    let (r, _) = Actor::spawn_linked(None, Probe, (), sup).await?;
                    started
                        .lock()
                        .unwrap()
                        .push((identity, fence, r.get_cell()));
                    Ok(r.get_cell())
                })
            }),
        }]
    })
}

async fn elector(reg: &Registry, identity: &str, started: Started) -> ActorRef<ElectorMsg> {
    let args = ElectorArgs {
        registry: reg.clone(),
        identity: identity.into(),
        config: timing(),
        lease_namespace: NS.into(),
        lease_name: NAME.into(),
        control_plane: probe_plane(identity, started),
        control_plane_name: None,
    };
    Actor::spawn(None, Elector, args).await.unwrap().0
}

async fn status(e: &ActorRef<ElectorMsg>) -> ElectionStatus {
    ractor::call_t!(e, ElectorMsg::Status, 2000).unwrap()
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn config_map(name: &str) -> Object {
    Object::from(v1::ConfigMap {
        metadata: Some(v1::ObjectMeta {
            name: name.into(),
            namespace: NS.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_standby_takes_over_only_after_the_leader_stops_renewing_and_old_writes_are_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let started: Started = Default::default();

    let a = elector(&reg, "a", started.clone()).await;
    wait_until(Duration::from_secs(10), "a to lead", || async {
        status(&a).await.leading
    })
    .await;
    let b = elector(&reg, "b", started.clone()).await;
    // b keeps standing by while a renews, for several lease durations.
    tokio::time::sleep(timing().lease_duration * 3).await;
    let (sa, sb) = (status(&a).await, status(&b).await);
    assert!(sa.leading && !sb.leading, "a: {sa:?}, b: {sb:?}");
    assert_eq!(sb.holder, "a");
    let fence_a = started.lock().unwrap()[0].1.clone();
    assert_eq!(
        started.lock().unwrap().len(),
        1,
        "only one control plane ran"
    );

    // a dies without releasing: its control plane dies with it (as in a crashed process).
    a.kill();
    let killed_at = Instant::now();
    wait_until(Duration::from_secs(10), "b to lead", || async {
        status(&b).await.leading
    })
    .await;
    // b's clock starts at a's last renewal (at most a retry period or so before the kill,
    // more on a loaded machine): half the lease is a safe lower bound.
    let took = killed_at.elapsed();
    assert!(
        took >= timing().lease_duration / 2,
        "b took over after {took:?}, before a's lease could have expired"
    );
    let fence_b = started.lock().unwrap()[1].1.clone();
    assert_eq!(started.lock().unwrap()[1].0, "b");
    assert!(fence_b.revision > fence_a.revision);
    let obj = reg.get(Kind::Lease, NS, NAME).await.unwrap();
    assert_eq!(lease::holder(&obj), "b");
    let spec = obj.as_typed::<v1::Lease>().unwrap().spec.clone().unwrap();
    assert_eq!(spec.lease_transitions, Some(1));

    // A write still carrying a's fence (one in flight when a died) fails; b's lands.
    let err = reg
        .fenced(fence_a)
        .create(config_map("from-a"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(matches!(
        reg.get(Kind::ConfigMap, NS, "from-a").await,
        Err(Error::NotFound { .. })
    ));
    reg.fenced(fence_b)
        .create(config_map("from-b"))
        .await
        .unwrap();
    b.stop(None);
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_its_control_plane_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let started: Started = Default::default();
    let a = elector(&reg, "a", started.clone()).await;
    wait_until(Duration::from_secs(10), "a to lead", || async {
        status(&a).await.leading
    })
    .await;
    let (fence_a, plane) = {
        let s = started.lock().unwrap();
        (s[0].1.clone(), s[0].2.clone())
    };
    // Someone else takes the lease over behind a's back.
    let current = reg.get(Kind::Lease, NS, NAME).await.unwrap();
    let theirs = lease::acquired(
        Some(&current),
        NS,
        NAME,
        "intruder",
        Duration::from_secs(60),
        "now",
    );
    let (_, fence_x) = reg
        .take_over_lease(theirs, &fence_key(NS, NAME))
        .await
        .unwrap();
    assert!(fence_x.revision > fence_a.revision);
    // Even before a notices, its writes no longer land.
    assert!(matches!(
        reg.fenced(fence_a.clone()).create(config_map("late")).await,
        Err(Error::Fenced { .. })
    ));
    let noticed = wait_until(Duration::from_secs(5), "a to step down", || async {
        !status(&a).await.leading
    })
    .await;
    assert!(
        noticed < Duration::from_secs(2),
        "stepped down after {noticed:?}"
    );
    wait_until(Duration::from_secs(5), "a's control plane to stop", || {
        let plane = plane.clone();
        async move { plane.get_status() == ActorStatus::Stopped }
    })
    .await;
    assert_eq!(status(&a).await.holder, "intruder");
    a.stop(None);
}

#[tokio::test]
async fn a_leader_that_stops_in_order_releases_the_lease_for_an_immediate_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path()).await;
    let started: Started = Default::default();
    let a = elector(&reg, "a", started.clone()).await;
    wait_until(Duration::from_secs(10), "a to lead", || async {
        status(&a).await.leading
    })
    .await;
    let b = elector(&reg, "b", started.clone()).await;
    wait_until(Duration::from_secs(5), "b to see a", || async {
        status(&b).await.holder == "a"
    })
    .await;
    a.stop_and_wait(None, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let took = wait_until(Duration::from_secs(10), "b to lead", || async {
        status(&b).await.leading
    })
    .await;
    assert!(
        took < timing().lease_duration,
        "b waited {took:?} although a released the lease"
    );
    b.stop(None);
}
