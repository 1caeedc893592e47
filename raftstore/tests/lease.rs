//! Leases end to end: a single member, an in-process three-member cluster on loopback (expiry
//! through the log, keep-alive and time-to-live forwarded by followers, fail-over), and Debian's
//! real `etcdctl` (ETCDCTL_API=3) against the etcd Lease service.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use raftstore::{
    ClusterConfig, Compare, CompareOp, CompareTarget, Error, EtcdServer, EtcdServerConfig,
    EventKind, NodeId, RaftTuning, ReadConsistency, Store, StoreConfig, Txn, TxnOp, WatchEvent,
    WatchStream, MAX_LEASE_TTL,
};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;

/// Generous: leases expire in seconds, and CI machines are slow.
const WAIT: Duration = Duration::from_secs(20);

/// Fast timings: elections settle in well under a second; the minimum lease TTL is 1 s.
fn fast() -> RaftTuning {
    RaftTuning {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..RaftTuning::default()
    }
}

/// A cluster of `n` members; member `ids[i]` lives at `stores[i]` while running.
struct Cluster {
    _root: tempfile::TempDir,
    ids: Vec<NodeId>,
    stores: Vec<Option<Store>>,
}

impl Cluster {
    async fn start(n: usize) -> anyhow::Result<Cluster> {
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
        let mut opens = Vec::new();
        let mut ids = Vec::new();
        for ((i, url), listener) in urls.iter().enumerate().zip(listeners) {
            let name = format!("n{}", i + 1);
            let mut cfg = ClusterConfig::new(&name, root.path().join(&name), url, &spec)?;
            cfg.tuning = fast();
            ids.push(cfg.node_id);
            opens.push(Store::open_cluster_on(cfg, listener));
        }
        let stores = futures::future::try_join_all(opens)
            .await?
            .into_iter()
            .map(Some)
            .collect();
        Ok(Cluster {
            _root: root,
            ids,
            stores,
        })
    }

    fn index(&self, id: NodeId) -> anyhow::Result<usize> {
        self.ids
            .iter()
            .position(|i| *i == id)
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

    async fn shutdown(mut self) -> anyhow::Result<()> {
        for store in self.stores.iter_mut().filter_map(Option::take) {
            store.shutdown().await?;
        }
        Ok(())
    }
}

async fn open_single(dir: &tempfile::TempDir) -> anyhow::Result<Store> {
    Ok(Store::open(StoreConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
    })
    .await?)
}

async fn next_event(stream: &mut WatchStream) -> anyhow::Result<WatchEvent> {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(e))) => bail!("watch ended with error: {e}"),
        Ok(None) => bail!("watch ended without error"),
        Err(_) => bail!("timed out waiting for a watch event"),
    }
}

/// The next `n` events of `stream`, which must all be deletes; returns (key, revision) pairs.
async fn deletes(stream: &mut WatchStream, n: usize) -> anyhow::Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let event = next_event(stream).await?;
        ensure!(
            event.kind == EventKind::Delete,
            "expected a delete: {event:?}"
        );
        out.push((
            String::from_utf8_lossy(&event.kv.key).into_owned(),
            event.kv.mod_revision,
        ));
    }
    Ok(out)
}

async fn exists(store: &Store, key: &str, consistency: ReadConsistency) -> anyhow::Result<bool> {
    Ok(store.get_with(key.as_bytes(), consistency).await?.is_some())
}

/// Polls until `key` is gone from `store`'s local state, or fails after [`WAIT`].
async fn gone(store: &Store, key: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while exists(store, key, ReadConsistency::Serializable).await? {
        if start.elapsed() > WAIT {
            bail!("{key} still exists on member {}", store.node_id());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_grants_attaches_expires_and_revokes_leases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open_single(&dir).await?;
    // Default tuning: election timeout up to 400 ms, so etcd's rule gives a 1 s minimum.
    assert_eq!(store.min_lease_ttl(), 1);
    let short = store.lease_grant(1, 0).await?;
    assert!(short.id > 0);
    assert_eq!(short.ttl, 1, "the minimum TTL is granted");
    let put = store
        .put_with_lease(b"/l/a".to_vec(), b"1".to_vec(), short.id)
        .await?;
    store
        .put_with_lease(b"/l/b".to_vec(), b"1".to_vec(), short.id)
        .await?;
    let kv = store.get(b"/l/a").await?.context("/l/a missing")?;
    assert_eq!((kv.lease, kv.mod_revision), (short.id, put.revision));

    // An unknown lease refuses the put, and a whole transaction, changing nothing.
    let revision = store.revision();
    let refused = store
        .put_with_lease(b"/l/c".to_vec(), b"1".to_vec(), 4242)
        .await;
    assert!(
        matches!(refused, Err(Error::LeaseNotFound { lease: 4242 })),
        "{refused:?}"
    );
    let txn = Txn {
        compares: vec![],
        success: vec![
            TxnOp::Put {
                key: b"/l/d".to_vec(),
                value: b"1".to_vec(),
            },
            TxnOp::PutWithLease {
                key: b"/l/e".to_vec(),
                value: b"1".to_vec(),
                lease: 4242,
            },
        ],
        failure: vec![],
    };
    assert!(matches!(
        store.txn(txn).await,
        Err(Error::LeaseNotFound { lease: 4242 })
    ));
    assert_eq!(store.revision(), revision);
    assert!(!exists(&store, "/l/d", ReadConsistency::Linearizable).await?);

    let ttl = store.lease_time_to_live(short.id, true).await?;
    assert_eq!(ttl.granted_ttl, 1);
    assert!(ttl.remaining > Duration::ZERO && ttl.remaining <= Duration::from_secs(1));
    assert_eq!(ttl.keys, vec![b"/l/a".to_vec(), b"/l/b".to_vec()]);
    assert_eq!(store.leases().await?, vec![short]);
    // Overwriting without a lease detaches the key; a compare on the lease sees it.
    store.put(b"/l/b".to_vec(), b"2".to_vec()).await?;
    let keys = store.lease_time_to_live(short.id, true).await?.keys;
    assert_eq!(keys, vec![b"/l/a".to_vec()]);
    let compare_lease = |key: &str, lease| Txn {
        compares: vec![Compare {
            key: key.into(),
            target: CompareTarget::Lease(lease),
            op: CompareOp::Equal,
        }],
        success: vec![],
        failure: vec![],
    };
    assert!(store.txn(compare_lease("/l/a", short.id)).await?.succeeded);
    assert!(store.txn(compare_lease("/l/b", 0)).await?.succeeded);
    assert!(!store.txn(compare_lease("/l/b", short.id)).await?.succeeded);

    // Expiry deletes the attached key (only it) with a watch event, and the lease is gone.
    let mut watch = store.watch(b"/l/".to_vec(), 0).await?;
    gone(&store, "/l/a").await?;
    let expired = deletes(&mut watch, 1).await?;
    assert_eq!(expired[0].0, "/l/a");
    assert_eq!(expired[0].1, store.revision());
    assert!(exists(&store, "/l/b", ReadConsistency::Linearizable).await?);
    assert!(store.leases().await?.is_empty());
    assert!(matches!(
        store.lease_time_to_live(short.id, false).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(matches!(
        store.lease_keep_alive(short.id).await,
        Err(Error::LeaseNotFound { .. })
    ));

    // An explicit id; taken ids, huge TTLs and negative ids are refused.
    let long = store.lease_grant(60, 777).await?;
    assert_eq!((long.id, long.ttl), (777, 60));
    assert!(matches!(
        store.lease_grant(60, 777).await,
        Err(Error::LeaseExists { lease: 777 })
    ));
    assert!(matches!(
        store.lease_grant(MAX_LEASE_TTL + 1, 0).await,
        Err(Error::LeaseTtlTooLarge { .. })
    ));
    assert!(matches!(
        store.lease_grant(10, -3).await,
        Err(Error::InvalidLease { .. })
    ));
    for key in ["/r/1", "/r/2", "/r/3"] {
        store.put_with_lease(key.into(), b"v".to_vec(), 777).await?;
    }
    store.shutdown().await?;
    // The watch holds the database open too.
    drop((store, watch));

    // Leases and attachments are on disk: after a restart the revoke still finds the keys.
    let store = open_single(&dir).await?;
    let ttl = store.lease_time_to_live(777, true).await?;
    assert_eq!(ttl.keys.len(), 3);
    let mut watch = store.watch(b"/r/".to_vec(), 0).await?;
    let revision = store.lease_revoke(777).await?;
    let revoked = deletes(&mut watch, 3).await?;
    assert!(
        revoked.iter().all(|(_, rev)| *rev == revision),
        "{revoked:?}"
    );
    assert!(store.range_prefix(b"/r/").await?.kvs.is_empty());
    assert!(matches!(
        store.lease_revoke(777).await,
        Err(Error::LeaseNotFound { lease: 777 })
    ));
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_the_keys_on_all_three_members_at_the_same_revision() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.follower().await?;
    let mut watches = Vec::new();
    for store in cluster.running() {
        watches.push(store.watch(b"/e/".to_vec(), 0).await?);
    }
    // Granted and written through a follower: forwarded to the leader.
    let lease = cluster.store(follower)?.lease_grant(1, 0).await?;
    assert_eq!(lease.ttl, 1, "fast tuning: 1.5 * 600 ms rounds up to 1 s");
    let keys = ["/e/1", "/e/2", "/e/3"];
    for key in keys {
        cluster
            .store(follower)?
            .put_with_lease(key.into(), b"v".to_vec(), lease.id)
            .await?;
    }
    cluster
        .store(leader)?
        .put(b"/e/keep".to_vec(), b"v".to_vec())
        .await?;
    let mut revisions = Vec::new();
    for (store, watch) in cluster.running().zip(watches.iter_mut()) {
        // Three puts with the lease, one without, then the expiry's three deletes.
        for _ in 0..4 {
            ensure!(next_event(watch).await?.kind == EventKind::Put);
        }
        let deleted = deletes(watch, 3).await?;
        let names: Vec<_> = deleted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, keys, "member {}", store.node_id());
        revisions.extend(deleted.iter().map(|(_, rev)| *rev));
        assert!(exists(store, "/e/keep", ReadConsistency::Serializable).await?);
        assert!(store.leases().await?.is_empty());
    }
    assert!(revisions.windows(2).all(|w| w[0] == w[1]), "{revisions:?}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_from_a_follower_keeps_keys_past_the_ttl() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let follower = cluster.store(cluster.follower().await?)?;
    let lease = follower.lease_grant(1, 0).await?;
    follower
        .put_with_lease(b"/k/alive".to_vec(), b"v".to_vec(), lease.id)
        .await?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        assert_eq!(follower.lease_keep_alive(lease.id).await?, 1);
        let ttl = follower.lease_time_to_live(lease.id, true).await?;
        assert_eq!(ttl.granted_ttl, 1);
        assert!(ttl.remaining <= Duration::from_secs(1));
        assert_eq!(ttl.keys, vec![b"/k/alive".to_vec()]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for store in cluster.running() {
        assert!(exists(store, "/k/alive", ReadConsistency::Linearizable).await?);
    }
    // Left alone, it expires; a late keep-alive does not bring it back.
    gone(follower, "/k/alive").await?;
    assert!(matches!(
        follower.lease_keep_alive(lease.id).await,
        Err(Error::LeaseNotFound { .. })
    ));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_a_leader_change_and_still_expires_later() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let old = cluster.leader().await?;
    // A TTL well above a loaded machine's re-election time, so the lease cannot expire before
    // the survivors are asked about it.
    let lease = cluster.store(old)?.lease_grant(6, 0).await?;
    let put = cluster
        .store(old)?
        .put_with_lease(b"/f/k".to_vec(), b"v".to_vec(), lease.id)
        .await?;
    // Let the grant reach every member before the leader goes.
    for store in cluster.running() {
        assert!(exists(store, "/f/k", ReadConsistency::Linearizable).await?);
    }
    cluster.stop(old).await?;
    let new = cluster.leader().await?;
    assert_ne!(new, old);
    let survivors: Vec<&Store> = cluster.running().collect();
    let mut watches = Vec::new();
    for store in &survivors {
        // From just after the put: the expiry's DELETE is seen even if it came first.
        watches.push(store.watch(b"/f/".to_vec(), put.revision + 1).await?);
    }
    // The new leader restarted the lease at now + TTL: it is alive, with its key.
    let ttl = survivors[0].lease_time_to_live(lease.id, true).await?;
    assert_eq!(ttl.granted_ttl, 6);
    assert!(ttl.remaining > Duration::ZERO);
    assert_eq!(ttl.keys, vec![b"/f/k".to_vec()]);
    assert!(exists(survivors[1], "/f/k", ReadConsistency::Linearizable).await?);
    let mut revisions = Vec::new();
    for (store, watch) in survivors.iter().zip(watches.iter_mut()) {
        let took = gone(store, "/f/k").await?;
        let deleted = deletes(watch, 1).await?;
        assert_eq!(deleted[0].0, "/f/k");
        revisions.push(deleted[0].1);
        tracing::info!(node = store.node_id(), ?took, "expired after the fail-over");
    }
    assert_eq!(revisions[0], revisions[1]);
    assert!(matches!(
        survivors[1].lease_time_to_live(lease.id, false).await,
        Err(Error::LeaseNotFound { .. })
    ));
    cluster.shutdown().await
}

/// Runs `etcdctl` against `endpoint` with `args`; returns (success, stdout+stderr).
async fn etcdctl(endpoint: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running etcdctl (apt-get install etcd-client)")?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

async fn ok(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let (success, text) = etcdctl(endpoint, args).await?;
    ensure!(success, "etcdctl {args:?} failed: {text}");
    Ok(text)
}

/// The lease id (hex) from `lease <hex> granted with TTL(..)`.
fn granted_id(out: &str) -> anyhow::Result<String> {
    let id = out
        .strip_prefix("lease ")
        .and_then(|rest| rest.split_whitespace().next())
        .with_context(|| format!("unexpected grant output {out:?}"))?;
    Ok(id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_grants_attaches_keeps_alive_lists_and_revokes_leases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open_single(&dir).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let e = format!("http://{}", listener.local_addr()?);
    let cfg = EtcdServerConfig {
        member_names: HashMap::from([(1, "solo".to_string())]),
        client_urls: HashMap::from([(1, vec![e.clone()])]),
        ..Default::default()
    };
    let server = EtcdServer::start(store.clone(), cfg, listener)?;

    let granted = ok(&e, &["lease", "grant", "5"]).await?;
    let id = granted_id(&granted)?;
    assert_eq!(granted, format!("lease {id} granted with TTL(5s)\n"));
    assert_eq!(id.len(), 16, "etcdctl prints ids as %016x");
    let decimal = i64::from_str_radix(&id, 16)?;
    assert_eq!(
        ok(&e, &["put", &format!("--lease={id}"), "/k", "v"]).await?,
        "OK\n"
    );
    let json = ok(&e, &["get", "/k", "-w", "json"]).await?;
    assert!(json.contains(&format!("\"lease\":{decimal}")), "{json}");

    let ttl = ok(&e, &["lease", "timetolive", "--keys", &id]).await?;
    let remaining_ok = (3..=5).any(|s| {
        ttl == format!("lease {id} granted with TTL(5s), remaining({s}s), attached keys([/k])\n")
    });
    assert!(remaining_ok, "{ttl}");
    assert_eq!(
        ok(&e, &["lease", "keep-alive", "--once", &id]).await?,
        format!("lease {id} keepalived with TTL(5)\n")
    );
    assert_eq!(
        ok(&e, &["lease", "list"]).await?,
        format!("found 1 leases\n{id}\n")
    );

    let (success, text) = etcdctl(&e, &["put", "--lease=1234abcd", "/x", "v"]).await?;
    assert!(
        !success && text.contains("etcdserver: requested lease not found"),
        "{text}"
    );

    assert_eq!(
        ok(&e, &["lease", "revoke", &id]).await?,
        format!("lease {id} revoked\n")
    );
    assert_eq!(ok(&e, &["get", "/k"]).await?, "");
    assert_eq!(
        ok(&e, &["lease", "timetolive", &id]).await?,
        format!("lease {id} already expired\n")
    );
    assert_eq!(ok(&e, &["lease", "list"]).await?, "found 0 leases\n");
    let (success, text) = etcdctl(&e, &["lease", "keep-alive", "--once", &id]).await?;
    assert!(
        !success && text.contains("requested lease not found"),
        "{text}"
    );
    let (success, text) = etcdctl(&e, &["lease", "revoke", &id]).await?;
    assert!(
        !success && text.contains("etcdserver: requested lease not found"),
        "{text}"
    );

    // A lease left alone expires and takes its key with it.
    let short = granted_id(&ok(&e, &["lease", "grant", "2"]).await?)?;
    ok(&e, &["put", &format!("--lease={short}"), "/short", "v"]).await?;
    let deadline = Instant::now() + WAIT;
    while !ok(&e, &["get", "/short"]).await?.is_empty() {
        ensure!(Instant::now() < deadline, "/short did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
    store.shutdown().await?;
    Ok(())
}
