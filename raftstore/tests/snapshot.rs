//! Backups (etcd's Maintenance.Snapshot) and restores: a backup streamed over the etcd API from a
//! running member, by Capstan's client and by Debian's `etcdctl snapshot save`, restored into
//! the data directories of a new three-member cluster, which must serve the same data, history,
//! leases and revisions. Everything runs in this process on loopback ports picked by the OS.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use raftstore::{
    prefix_end, restore_backup, save_snapshot, verify_backup, BackupError, ClusterConfig,
    EtcdServer, EtcdServerConfig, KeyRange, RaftTuning, ReadConsistency, Store, StoreConfig,
};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

fn fast() -> RaftTuning {
    RaftTuning {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..RaftTuning::default()
    }
}

/// One member serving the etcd API, with some history: puts, overwrites, deletes, a key on a
/// lease and a compaction.
struct Source {
    _dir: tempfile::TempDir,
    store: Store,
    server: Option<EtcdServer>,
    endpoint: String,
    lease: i64,
}

impl Source {
    async fn start() -> anyhow::Result<Source> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig {
            node_id: 1,
            data_dir: dir.path().to_path_buf(),
        })
        .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let cfg = EtcdServerConfig {
            member_names: HashMap::from([(1, "source".to_string())]),
            ..Default::default()
        };
        let server = Some(EtcdServer::start(store.clone(), cfg, listener)?);
        for i in 0..50 {
            store
                .put(
                    format!("/s/{:02}", i % 20).into_bytes(),
                    i.to_string().into_bytes(),
                )
                .await?;
        }
        store.delete(b"/s/03").await?;
        store.compact(store.revision() - 10).await?;
        let lease = store.lease_grant(3600, 0).await?.id;
        store
            .put_with_lease(b"/s/leased".to_vec(), b"l".to_vec(), lease)
            .await?;
        Ok(Source {
            _dir: dir,
            store,
            server,
            endpoint,
            lease,
        })
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.store.shutdown().await?;
        Ok(())
    }
}

fn all() -> KeyRange {
    KeyRange::new(vec![0], vec![0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_three_member_cluster_at_the_same_revision() -> anyhow::Result<()>
{
    let source = Source::start().await?;
    let lease = source.lease;
    let files = tempfile::tempdir()?;
    let file = files.path().join("backup.db");
    let saved = save_snapshot(&source.endpoint, &file).await?;
    let revision = source.store.revision();
    let compacted = source.store.compact_revision();
    let info = saved.info.context("a Capstan backup has a header")?;
    assert_eq!(
        (saved.revision, info.compact_revision),
        (revision, compacted)
    );
    assert_eq!(saved.size, std::fs::metadata(&file)?.len());
    assert!(!files.path().join("backup.db.part").exists());
    // The state the restored cluster must show.
    let kvs = source
        .store
        .range(&all(), 0, ReadConsistency::Linearizable)
        .await?
        .kvs;
    let at_compaction = source
        .store
        .range(&all(), compacted, ReadConsistency::Linearizable)
        .await?
        .kvs;

    // etcdctl saves the same stream (it checks the size and keeps the checksum at the end).
    let by_etcdctl = files.path().join("etcdctl.db");
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", source.endpoint))
        .args(["snapshot", "save"])
        .arg(&by_etcdctl)
        .output()
        .await
        .context("running etcdctl")?;
    ensure!(out.status.success(), "etcdctl snapshot save: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Snapshot saved at"));
    assert_eq!(
        verify_backup(&std::fs::read(&by_etcdctl)?)?.revision,
        revision
    );

    // Writes after the backup are not in it.
    source.store.put(b"/s/after".to_vec(), vec![]).await?;
    source.stop().await?;

    // Restore three members from the same file, then start them.
    let root = tempfile::tempdir()?;
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let urls = listeners
        .iter()
        .map(|l| Ok(format!("http://{}", l.local_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("n{}={u}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let bytes = std::fs::read(&file)?;
    let mut stores = Vec::new();
    for (i, (listener, url)) in listeners.into_iter().zip(&urls).enumerate() {
        let name = format!("n{}", i + 1);
        let mut cfg = ClusterConfig::new(&name, root.path().join(&name), url, &spec)?;
        cfg.tuning = fast();
        let restored = restore_backup(&bytes, &cfg).await?;
        assert_eq!(restored.revision, revision);
        stores.push(Store::open_cluster_on(cfg, listener).await?);
    }
    let leader = stores[0].wait_for_leader(WAIT).await?;
    let follower = stores
        .iter()
        .find(|s| s.node_id() != leader)
        .context("a follower")?
        .clone();

    for store in &stores {
        assert_eq!(store.revision(), revision, "member {}", store.node_id());
        assert_eq!(store.compact_revision(), compacted);
        let now = store
            .range(&all(), 0, ReadConsistency::Linearizable)
            .await?;
        assert_eq!(now.kvs, kvs, "member {}", store.node_id());
        let past = store
            .range(&all(), compacted, ReadConsistency::Linearizable)
            .await?;
        assert_eq!(past.kvs, at_compaction);
        assert!(store
            .range(&all(), compacted - 1, ReadConsistency::Linearizable)
            .await
            .is_err());
        let leases = store.leases().await?;
        assert!(leases.iter().any(|l| l.id == lease), "{leases:?}");
    }
    // History from the compaction revision on survives, so watches can resume.
    let mut history = follower
        .watch_range(
            KeyRange::new(b"/s/".to_vec(), prefix_end(b"/s/")),
            compacted,
        )
        .await?;
    let first = tokio::time::timeout(WAIT, history.next())
        .await?
        .context("no history")??;
    assert_eq!(first.kv.mod_revision, compacted);

    // The restored cluster takes writes at the next revision, through any member.
    let put = follower.put(b"/s/new".to_vec(), b"n".to_vec()).await?;
    assert_eq!(put.revision, revision + 1);
    for store in &stores {
        let deadline = tokio::time::Instant::now() + WAIT;
        while store.revision() < revision + 1 {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "write not replicated"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            store
                .get_with(b"/s/after", ReadConsistency::Serializable)
                .await?,
            None,
            "a write after the backup leaked into it"
        );
    }
    for store in &stores {
        store.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_and_used_data_dirs_are_refused() -> anyhow::Result<()> {
    let source = Source::start().await?;
    let lease = source.lease;
    let files = tempfile::tempdir()?;
    let file = files.path().join("backup.db");
    save_snapshot(&source.endpoint, &file).await?;
    source.stop().await?;
    let bytes = std::fs::read(&file)?;
    let root = tempfile::tempdir()?;
    let cfg = |dir: &str| {
        ClusterConfig::new(
            "n1",
            root.path().join(dir),
            "http://127.0.0.1:2380",
            "n1=http://127.0.0.1:2380",
        )
    };

    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    match restore_backup(&damaged, &cfg("damaged")?).await {
        Err(BackupError::Checksum { .. }) => {}
        other => bail!("a damaged backup was not refused: {other:?}"),
    }
    match restore_backup(&bytes[..bytes.len() - 100], &cfg("short")?).await {
        Err(BackupError::Checksum { .. }) => {}
        other => bail!("a truncated backup was not refused: {other:?}"),
    }
    assert!(!root.path().join("damaged").exists() && !root.path().join("short").exists());

    std::fs::create_dir_all(root.path().join("used"))?;
    std::fs::write(root.path().join("used/keep"), b"x")?;
    match restore_backup(&bytes, &cfg("used")?).await {
        Err(BackupError::DataDirNotEmpty { .. }) => {}
        other => bail!("a used data dir was not refused: {other:?}"),
    }
    assert_eq!(std::fs::read(root.path().join("used/keep"))?, b"x");

    // An empty existing directory is fine, and a single restored member serves on its own.
    std::fs::create_dir_all(root.path().join("empty"))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut one = ClusterConfig::new("n1", root.path().join("empty"), &url, &format!("n1={url}"))?;
    one.tuning = fast();
    let info = restore_backup(&bytes, &one).await?;
    let store = Store::open_cluster_on(one, listener).await?;
    store.wait_for_leader(WAIT).await?;
    assert_eq!(store.revision(), info.revision);
    assert!(store.leases().await?.iter().any(|l| l.id == lease));
    assert_eq!(
        store.get(b"/s/leased").await?.map(|kv| kv.lease),
        Some(lease)
    );
    store.shutdown().await?;
    Ok(())
}
