//! Multi-member clusters: three (or four) real `Store`s in one process, talking over the real
//! tonic peer service on 127.0.0.1 with ports picked by the OS, each on its own sled directory.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use raftstore::{
    ClusterConfig, EventKind, NodeId, RaftTuning, ReadConsistency, Store, WatchStream,
};
use tokio::net::TcpListener;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(15);

/// Fast timings so elections settle in well under a second on loopback.
fn fast() -> RaftTuning {
    RaftTuning {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..RaftTuning::default()
    }
}

/// A cluster of `n` members; member `configs[i].node_id` lives at `stores[i]` while running.
struct Cluster {
    _root: tempfile::TempDir,
    configs: Vec<ClusterConfig>,
    stores: Vec<Option<Store>>,
}

impl Cluster {
    async fn start(n: usize, tuning: RaftTuning) -> anyhow::Result<Cluster> {
        let root = tempfile::tempdir()?;
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        let urls = listeners
            .iter()
            .map(|l| Ok(format!("http://{}", l.local_addr()?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let spec = urls
            .iter()
            .enumerate()
            .map(|(i, url)| format!("n{}={url}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut configs = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mut cfg = ClusterConfig::new(&name, root.path().join(&name), url, &spec)?;
            cfg.tuning = tuning.clone();
            configs.push(cfg);
        }
        let opens = configs
            .iter()
            .cloned()
            .zip(listeners)
            .map(|(cfg, l)| Store::open_cluster_on(cfg, l));
        let stores = futures::future::try_join_all(opens)
            .await?
            .into_iter()
            .map(Some)
            .collect();
        Ok(Cluster {
            _root: root,
            configs,
            stores,
        })
    }

    /// The members' ids (derived from their peer URLs), in start order.
    fn ids(&self) -> Vec<NodeId> {
        self.configs.iter().map(|c| c.node_id).collect()
    }

    fn index(&self, id: NodeId) -> anyhow::Result<usize> {
        self.configs
            .iter()
            .position(|c| c.node_id == id)
            .with_context(|| format!("no member {id:x}"))
    }

    fn store(&self, id: NodeId) -> anyhow::Result<&Store> {
        self.stores
            .get(self.index(id)?)
            .and_then(Option::as_ref)
            .with_context(|| format!("member {id:x} is not running"))
    }

    fn running(&self) -> impl Iterator<Item = &Store> {
        self.stores.iter().flatten()
    }

    /// Waits until every running member names the same running leader.
    async fn leader(&self) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + WAIT;
        loop {
            let views: Vec<_> = self.running().map(|s| s.members().leader).collect();
            if let Some(Some(leader)) = views.first() {
                if views.iter().all(|v| v == &Some(*leader)) && self.store(*leader).is_ok() {
                    return Ok(*leader);
                }
            }
            if Instant::now() > deadline {
                bail!("members did not agree on a leader: {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Any running member other than the leader.
    async fn follower(&self) -> anyhow::Result<NodeId> {
        let leader = self.leader().await?;
        self.running()
            .map(Store::node_id)
            .find(|id| *id != leader)
            .context("no running follower")
    }

    async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.index(id)?;
        let store = self.stores[i]
            .take()
            .with_context(|| format!("member {id} is not running"))?;
        store.shutdown().await?;
        Ok(())
    }

    async fn restart(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self.index(id)?;
        let cfg = self.configs[i].clone();
        let store = tokio::time::timeout(WAIT, Store::open_cluster(cfg)).await??;
        self.stores[i] = Some(store);
        Ok(())
    }

    async fn shutdown(mut self) -> anyhow::Result<()> {
        for store in self.stores.iter_mut().filter_map(Option::take) {
            store.shutdown().await?;
        }
        Ok(())
    }
}

async fn value(
    store: &Store,
    key: &str,
    consistency: ReadConsistency,
) -> anyhow::Result<Option<String>> {
    let kv = store.get_with(key.as_bytes(), consistency).await?;
    Ok(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

async fn next_event(stream: &mut WatchStream) -> anyhow::Result<raftstore::WatchEvent> {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(e))) => bail!("watch ended with error: {e}"),
        Ok(None) => bail!("watch ended without error"),
        Err(_) => bail!("timed out waiting for a watch event"),
    }
}

/// Polls `cond` until it holds or [`WAIT`] passes.
async fn eventually(what: &str, cond: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Retries a write until the cluster accepts it (a client's view during an election).
async fn put_eventually(store: &Store, key: &str, value: &str) -> anyhow::Result<i64> {
    let deadline = Instant::now() + WAIT;
    loop {
        match store.put(key.into(), value.into()).await {
            Ok(put) => return Ok(put.revision),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "retrying put");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_a_leader_and_a_put_through_a_follower_is_readable_everywhere(
) -> anyhow::Result<()> {
    let cluster = Cluster::start(3, fast()).await?;
    let leader = cluster.leader().await?;
    let status = cluster.store(leader)?.members();
    assert_eq!(status.leader, Some(leader));
    assert!(status.term >= 1);
    let ids: Vec<_> = status.members.iter().map(|m| (m.id, m.voter)).collect();
    let mut expected: Vec<_> = cluster.ids().into_iter().map(|id| (id, true)).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(status
        .members
        .iter()
        .all(|m| m.peer_url.starts_with("http://127.0.0.1:")));

    let follower = cluster.follower().await?;
    let put = cluster
        .store(follower)?
        .put(b"/k".to_vec(), b"from-follower".to_vec())
        .await?;
    assert!(put.revision > raftstore::INITIAL_REVISION);
    for store in cluster.running() {
        // Linearizable by default: every member sees the acknowledged write at once.
        assert_eq!(
            value(store, "/k", ReadConsistency::Linearizable)
                .await?
                .as_deref(),
            Some("from-follower"),
            "member {}",
            store.node_id()
        );
        assert_eq!(store.revision(), put.revision);
        // After a linearizable read, the local (serializable) state is at least as new.
        assert_eq!(
            value(store, "/k", ReadConsistency::Serializable)
                .await?
                .as_deref(),
            Some("from-follower")
        );
    }
    // A transaction and a delete through a follower, too.
    let del = cluster.store(follower)?.delete(b"/k").await?;
    assert_eq!(del.prev.map(|kv| kv.mod_revision), Some(put.revision));
    assert_eq!(
        value(cluster.store(leader)?, "/k", ReadConsistency::Linearizable).await?,
        None
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_are_each_answered_on_their_own() -> anyhow::Result<()>
{
    use raftstore::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
    const PUTS: usize = 40;
    let cluster = Cluster::start(3, fast()).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.store(cluster.follower().await?)?.clone();
    let start = follower.revision();
    // Puts, failing compare-and-swaps and puts naming a missing lease, all at once: they travel
    // to the leader in shared forwarded calls, and each must get its own answer.
    let mut puts = Vec::new();
    for i in 0..PUTS {
        let store = follower.clone();
        puts.push(tokio::spawn(async move {
            store
                .put(
                    format!("/f/{i:02}").into_bytes(),
                    format!("v{i}").into_bytes(),
                )
                .await
        }));
    }
    let mut swaps = Vec::new();
    for i in 0..5 {
        let store = follower.clone();
        swaps.push(tokio::spawn(async move {
            store
                .txn(Txn {
                    compares: vec![Compare {
                        key: format!("/absent/{i}").into_bytes(),
                        target: CompareTarget::Version(3),
                        op: CompareOp::Equal,
                    }],
                    success: vec![TxnOp::Delete {
                        key: b"/f/00".to_vec(),
                    }],
                    failure: vec![],
                })
                .await
        }));
    }
    let mut leased = Vec::new();
    for i in 0..5 {
        let store = follower.clone();
        leased.push(tokio::spawn(async move {
            store
                .put_with_lease(format!("/l/{i}").into_bytes(), b"x".to_vec(), 4242)
                .await
        }));
    }
    let mut revisions = Vec::new();
    for put in puts {
        revisions.push(put.await??.revision);
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), PUTS, "every put has a revision of its own");
    for swap in swaps {
        assert!(!swap.await??.succeeded, "the compare cannot hold");
    }
    for put in leased {
        let refused = put.await?;
        assert!(
            matches!(
                refused,
                Err(raftstore::Error::LeaseNotFound { lease: 4242 })
            ),
            "{refused:?}"
        );
    }
    let leader = cluster.store(leader)?;
    for i in 0..PUTS {
        let got = value(leader, &format!("/f/{i:02}"), ReadConsistency::Linearizable).await?;
        assert_eq!(got, Some(format!("v{i}")));
    }
    // Only the puts created revisions.
    assert_eq!(leader.revision(), start + PUTS as i64);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_sees_writes_made_through_the_leader() -> anyhow::Result<()> {
    let cluster = Cluster::start(3, fast()).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.follower().await?;
    let mut watch = cluster.store(follower)?.watch(b"/w/".to_vec(), 0).await?;
    let mut revisions = Vec::new();
    for i in 0..5 {
        let put = cluster
            .store(leader)?
            .put(format!("/w/{i}").into_bytes(), b"v".to_vec())
            .await?;
        revisions.push(put.revision);
    }
    cluster.store(leader)?.delete(b"/w/0").await?;
    for (i, revision) in revisions.iter().enumerate() {
        let event = next_event(&mut watch).await?;
        assert_eq!(event.kind, EventKind::Put);
        assert_eq!(event.kv.key, format!("/w/{i}").into_bytes());
        assert_eq!(event.kv.mod_revision, *revision);
    }
    assert_eq!(next_event(&mut watch).await?.kind, EventKind::Delete);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_the_leader_elects_a_new_one_and_writes_continue() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, fast()).await?;
    let old = cluster.leader().await?;
    cluster
        .store(old)?
        .put(b"/before".to_vec(), b"1".to_vec())
        .await?;
    let old_term = cluster.store(old)?.members().term;

    let stopped_at = Instant::now();
    cluster.stop(old).await?;
    let new = cluster.leader().await?;
    let took = stopped_at.elapsed();
    assert_ne!(new, old);
    assert!(took < Duration::from_secs(5), "new leader after {took:?}");
    assert!(cluster.store(new)?.members().term > old_term);

    let follower = cluster.follower().await?;
    put_eventually(cluster.store(follower)?, "/after", "2").await?;
    assert_eq!(
        value(
            cluster.store(new)?,
            "/before",
            ReadConsistency::Linearizable
        )
        .await?
        .as_deref(),
        Some("1")
    );

    // The old leader (possibly the member that initialised the cluster) restarts from disk
    // without re-initialising and catches up as a follower.
    cluster.restart(old).await?;
    cluster.leader().await?;
    assert_eq!(
        value(cluster.store(old)?, "/after", ReadConsistency::Linearizable)
            .await?
            .as_deref(),
        Some("2")
    );
    assert_eq!(cluster.store(old)?.members().members.len(), 3);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_with_every_acknowledged_key() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3, fast()).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.follower().await?;
    cluster
        .store(leader)?
        .put(b"/r/first".to_vec(), b"0".to_vec())
        .await?;
    cluster.stop(follower).await?;

    let mut acknowledged = Vec::new();
    for i in 0..100 {
        let key = format!("/r/{i:03}");
        cluster
            .store(leader)?
            .put(key.clone().into_bytes(), b"v".to_vec())
            .await?;
        acknowledged.push(key.into_bytes());
    }
    let leader_revision = cluster.store(leader)?.revision();

    cluster.restart(follower).await?;
    let store = cluster.store(follower)?;
    // Linearizable: waits until the restarted member applied up to the leader's read index.
    let range = store.range_prefix(b"/r/").await?;
    let keys: Vec<_> = range.kvs.into_iter().map(|kv| kv.key).collect();
    for key in &acknowledged {
        assert!(
            keys.contains(key),
            "missing {}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(keys.len(), 101);
    assert_eq!(store.revision(), leader_revision);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_learner_gets_a_snapshot_becomes_a_voter_and_a_member_can_be_removed(
) -> anyhow::Result<()> {
    let tuning = RaftTuning {
        snapshot_logs_since_last: 20,
        logs_to_keep_after_snapshot: 0,
        ..fast()
    };
    let mut cluster = Cluster::start(3, tuning.clone()).await?;
    let leader = cluster.leader().await?;
    for i in 0..60 {
        cluster
            .store(leader)?
            .put(format!("/s/{i:02}").into_bytes(), b"v".to_vec())
            .await?;
    }
    // The leader's log start is gone, so a new member can only catch up from a snapshot.
    let deadline = Instant::now() + WAIT;
    let purged = loop {
        let purged = cluster.store(leader)?.members().purged_index;
        if purged > 0 {
            break purged;
        }
        if Instant::now() > deadline {
            bail!("leader never purged its log");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut cfg = ClusterConfig::joining("n4", 4, cluster._root.path().join("n4"), &url);
    cfg.tuning = tuning;
    let n4 = Store::open_cluster_on(cfg, listener).await?;
    // Added through a follower: the change is forwarded to the leader.
    let follower = cluster.follower().await?;
    cluster.store(follower)?.add_learner(4, &url).await?;
    // The learner's own metrics trail the leader's view of its progress by a moment.
    eventually(
        "the learner installs a snapshot covering the purged log",
        || n4.members().snapshot_index >= purged,
    )
    .await?;
    // Linearizable on a learner: read index from the leader, then wait for the local apply.
    let range = n4.range_prefix(b"/s/").await?;
    assert_eq!(range.kvs.len(), 60);
    assert!(n4.members().members.iter().any(|m| m.id == 4 && !m.voter));

    // Refused (as in etcd) until the leader has seen the learner catch up.
    let deadline = Instant::now() + WAIT;
    while let Err(e) = cluster.store(leader)?.promote(4).await {
        if Instant::now() > deadline {
            return Err(e.into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let voters = |s: &Store| -> Vec<NodeId> {
        let members = s.members().members;
        members.iter().filter(|m| m.voter).map(|m| m.id).collect()
    };
    let mut all = cluster.ids();
    all.push(4);
    all.sort_unstable();
    eventually("member 4 is listed as a voter everywhere", || {
        cluster.running().chain([&n4]).all(|s| voters(s) == all)
    })
    .await?;
    // The new voter serves linearizable reads and forwarded writes.
    n4.put(b"/s/from-4".to_vec(), b"v".to_vec()).await?;
    assert_eq!(n4.range_prefix(b"/s/").await?.kvs.len(), 61);

    // Remove a follower that is not the leader; the rest keep working without it.
    let leader = cluster.leader().await?;
    let gone = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .context("no follower")?;
    n4.remove_member(gone).await?;
    let members: Vec<_> = cluster
        .store(leader)?
        .members()
        .members
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(!members.contains(&gone), "{gone} still listed: {members:?}");
    assert_eq!(members.len(), 3);
    cluster.stop(gone).await?;
    cluster
        .store(leader)?
        .put(b"/s/after-remove".to_vec(), b"v".to_vec())
        .await?;
    assert_eq!(
        value(&n4, "/s/after-remove", ReadConsistency::Linearizable)
            .await?
            .as_deref(),
        Some("v")
    );
    n4.shutdown().await?;
    cluster.shutdown().await
}
