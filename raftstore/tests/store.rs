//! End-to-end tests of the public `Store`: a real single-member openraft cluster on sled in a
//! temporary directory.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use raftstore::{
    Compare, CompareOp, CompareTarget, Error, EventKind, Store, StoreConfig, Txn, TxnOp,
    TxnOpResult, WatchEvent, WatchStream, INITIAL_REVISION,
};

async fn open(dir: &tempfile::TempDir) -> anyhow::Result<Store> {
    let cfg = StoreConfig {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
    };
    Ok(tokio::time::timeout(Duration::from_secs(20), Store::open(cfg)).await??)
}

async fn next_event(stream: &mut WatchStream) -> anyhow::Result<WatchEvent> {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(e))) => bail!("watch ended with error: {e}"),
        Ok(None) => bail!("watch ended without error"),
        Err(_) => bail!("timed out waiting for a watch event"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_and_range_prefix_track_revisions_and_versions() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    assert_eq!(store.revision(), INITIAL_REVISION);

    let p1 = store.put(b"/pods/a".to_vec(), b"1".to_vec()).await?;
    assert_eq!(p1.revision, 2);
    assert_eq!(p1.prev, None);
    let p2 = store.put(b"/pods/a".to_vec(), b"2".to_vec()).await?;
    assert_eq!(p2.revision, 3);
    assert_eq!(
        p2.prev.as_ref().map(|kv| kv.value.as_slice()),
        Some(b"1".as_slice())
    );
    store.put(b"/pods/b".to_vec(), b"b".to_vec()).await?;
    store.put(b"/nodes/x".to_vec(), b"x".to_vec()).await?;
    assert_eq!(store.revision(), 5);

    let a = store.get(b"/pods/a").await?.context("a missing")?;
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (b"2".as_slice(), 2, 3, 2)
    );
    assert_eq!(store.get(b"/pods/zzz").await?, None);

    let range = store.range_prefix(b"/pods/").await?;
    let keys: Vec<_> = range.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"/pods/a".to_vec(), b"/pods/b".to_vec()]);
    assert_eq!(range.revision, 5);

    let d = store.delete(b"/pods/a").await?;
    assert_eq!(d.revision, 6);
    assert_eq!(d.prev.map(|kv| kv.version), Some(2));
    assert_eq!(store.get(b"/pods/a").await?, None);
    assert_eq!(store.range_prefix(b"/pods/").await?.kvs.len(), 1);

    // Re-creating a deleted key starts a new life: version 1, new create_revision.
    let p = store.put(b"/pods/a".to_vec(), b"3".to_vec()).await?;
    let a = store.get(b"/pods/a").await?.context("a missing")?;
    assert_eq!((a.create_revision, a.version), (p.revision, 1));

    store.shutdown().await?;
    assert!(matches!(store.get(b"/pods/a").await, Err(Error::Shutdown)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_missing_key_does_not_bump_revision() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    store.put(b"k".to_vec(), b"v".to_vec()).await?;
    let before = store.revision();
    let d = store.delete(b"missing").await?;
    assert_eq!(d.prev, None);
    assert_eq!(d.revision, before);
    assert_eq!(store.revision(), before);
    // The next real write still takes exactly the next revision.
    assert_eq!(
        store.put(b"k".to_vec(), b"w".to_vec()).await?.revision,
        before + 1
    );
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_on_current_mod_revision_succeeds_and_on_stale_one_fails() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    let created = store.put(b"/pods/p".to_vec(), b"v1".to_vec()).await?;

    let cas = |expected: i64, value: &str| Txn {
        compares: vec![Compare {
            key: b"/pods/p".to_vec(),
            target: CompareTarget::ModRevision(expected),
            op: CompareOp::Equal,
        }],
        success: vec![
            TxnOp::Put {
                key: b"/pods/p".to_vec(),
                value: value.as_bytes().to_vec(),
            },
            TxnOp::Put {
                key: b"/pods/p-status".to_vec(),
                value: b"updated".to_vec(),
            },
        ],
        failure: vec![TxnOp::Get {
            key: b"/pods/p".to_vec(),
        }],
    };

    let ok = store.txn(cas(created.revision, "v2")).await?;
    assert!(ok.succeeded);
    // Two puts, one revision.
    assert_eq!(ok.revision, created.revision + 1);
    assert_eq!(store.revision(), created.revision + 1);
    let status = store
        .get(b"/pods/p-status")
        .await?
        .context("status missing")?;
    assert_eq!(status.mod_revision, ok.revision);

    // A writer still holding the old revision loses.
    let stale = store.txn(cas(created.revision, "lost-update")).await?;
    assert!(!stale.succeeded);
    assert_eq!(
        stale.revision, ok.revision,
        "a failed compare with only gets changes nothing"
    );
    match stale.responses.as_slice() {
        [TxnOpResult::Get(Some(kv))] => {
            assert_eq!(kv.value, b"v2");
            assert_eq!(kv.mod_revision, ok.revision);
        }
        other => bail!("unexpected failure responses: {other:?}"),
    }
    assert_eq!(
        store.get(b"/pods/p").await?.context("p missing")?.value,
        b"v2"
    );

    // Create-if-absent: CreateRevision == 0.
    let create = |key: &str| Txn {
        compares: vec![Compare {
            key: key.as_bytes().to_vec(),
            target: CompareTarget::CreateRevision(0),
            op: CompareOp::Equal,
        }],
        success: vec![TxnOp::Put {
            key: key.as_bytes().to_vec(),
            value: b"new".to_vec(),
        }],
        failure: vec![],
    };
    assert!(store.txn(create("/pods/q")).await?.succeeded);
    assert!(!store.txn(create("/pods/q")).await?.succeeded);
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_old_revision_replays_history_then_continues_live_without_gaps(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    let first = store.put(b"/w/0".to_vec(), b"0".to_vec()).await?.revision;
    for i in 1..20 {
        store
            .put(
                format!("/w/{}", i % 5).into_bytes(),
                i.to_string().into_bytes(),
            )
            .await?;
        store
            .put(b"/other/x".to_vec(), i.to_string().into_bytes())
            .await?;
    }
    store.delete(b"/w/3").await?;

    // Writers keep going while the watcher is set up and replays.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .put(
                        format!("/w/live{}", i % 7).into_bytes(),
                        i.to_string().into_bytes(),
                    )
                    .await?;
                if i % 3 == 0 {
                    store.put(b"/other/y".to_vec(), b"y".to_vec()).await?;
                }
            }
            anyhow::Ok(store.revision())
        })
    };
    let mut stream = store.watch(b"/w/".to_vec(), first).await?;

    // 20 puts and one delete in history, then 200 live puts, each on a /w/ key.
    let mut seen = Vec::new();
    while seen.len() < 221 {
        let event = next_event(&mut stream).await?;
        assert!(
            event.kv.key.starts_with(b"/w/"),
            "prefix filter leaked {:?}",
            event.kv.key
        );
        seen.push(event);
    }
    let final_revision = writer.await??;
    assert!(seen.last().map(|e| e.kv.mod_revision) <= Some(final_revision));

    // Strictly increasing, starting at `first`, and exactly the set of /w/ revisions.
    assert_eq!(seen[0].kv.mod_revision, first);
    assert_eq!(seen[0].kind, EventKind::Put);
    for pair in seen.windows(2) {
        assert!(
            pair[0].kv.mod_revision < pair[1].kv.mod_revision,
            "out of order or duplicate: {pair:?}"
        );
    }
    let deletes: Vec<_> = seen
        .iter()
        .filter(|e| e.kind == EventKind::Delete)
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].kv.key, b"/w/3");
    assert_eq!(
        deletes[0].prev_kv.as_ref().map(|kv| kv.value.as_slice()),
        Some(b"18".as_slice())
    );
    let live = seen
        .iter()
        .filter(|e| e.kv.key.starts_with(b"/w/live"))
        .count();
    assert_eq!(live, 200, "every live write must be seen exactly once");
    let replayed = seen
        .iter()
        .filter(|e| !e.kv.key.starts_with(b"/w/live"))
        .count();
    assert_eq!(replayed, 21, "20 puts and one delete in history");
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_zero_sees_only_later_changes_and_ends_on_shutdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    store.put(b"/a/old".to_vec(), b"x".to_vec()).await?;
    let mut stream = store.watch(b"/a/".to_vec(), 0).await?;
    let p = store.put(b"/a/new".to_vec(), b"y".to_vec()).await?;
    let event = next_event(&mut stream).await?;
    assert_eq!(event.kv.key, b"/a/new");
    assert_eq!(event.kv.mod_revision, p.revision);
    store.shutdown().await?;
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
        Some(Err(Error::Shutdown)) => {}
        other => bail!("expected shutdown error, got {other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await?
        .is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_catches_up_from_history_without_blocking_writes_or_others(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = open(&dir).await?;
    let mut slow = store.watch(b"/s/".to_vec(), 0).await?;
    let mut fast = store.watch(b"/s/".to_vec(), 0).await?;
    let batches = raftstore::WATCH_CHANNEL_CAPACITY / 100 + 2;
    let total = batches * 100;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let event = next_event(&mut fast).await?;
            anyhow::ensure!(
                event.kv.key == format!("/s/{n:06}").into_bytes(),
                "fast watcher out of order at {n}"
            );
            n += 1;
        }
        anyhow::Ok(n)
    });
    // Writes complete even though nobody reads the slow watcher.
    for b in 0..batches {
        let txn = Txn {
            compares: vec![],
            success: (b * 100..(b + 1) * 100)
                .map(|i| TxnOp::Put {
                    key: format!("/s/{i:06}").into_bytes(),
                    value: vec![],
                })
                .collect(),
            failure: vec![],
        };
        let result = tokio::time::timeout(Duration::from_secs(10), store.txn(txn)).await??;
        assert!(result.succeeded);
    }
    // The other watcher, which keeps reading, sees everything.
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(30), reader).await???,
        total
    );

    // The slow watcher overflowed its buffer long ago; it still gets every event, in order:
    // what its buffer held, then the rest from history.
    for received in 0..total {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await? {
            Some(Ok(event)) => {
                assert_eq!(event.kv.key, format!("/s/{received:06}").into_bytes());
            }
            other => bail!("slow watcher at {received}: {other:?}"),
        }
    }
    // And it is live again: the next write arrives too.
    let last = store.put(b"/s/last".to_vec(), vec![]).await?;
    let event = next_event(&mut slow).await?;
    assert_eq!(
        (event.kv.key.as_slice(), event.kv.mod_revision),
        (b"/s/last".as_slice(), last.revision)
    );
    store.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_from_the_same_dir_keeps_data_revision_and_history() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (revision, created) = {
        let store = open(&dir).await?;
        let created = store.put(b"/k/a".to_vec(), b"1".to_vec()).await?.revision;
        store.put(b"/k/a".to_vec(), b"2".to_vec()).await?;
        store.put(b"/k/b".to_vec(), b"b".to_vec()).await?;
        store.delete(b"/k/b").await?;
        let revision = store.revision();
        store.shutdown().await?;
        (revision, created)
    };

    let store = open(&dir).await.context("second open")?;
    assert_eq!(store.revision(), revision);
    let a = store.get(b"/k/a").await?.context("a lost on restart")?;
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.version),
        (b"2".as_slice(), created, 2)
    );
    assert_eq!(store.get(b"/k/b").await?, None);
    // Revisions continue from where they were.
    assert_eq!(
        store.put(b"/k/c".to_vec(), vec![]).await?.revision,
        revision + 1
    );
    // History survives too.
    let mut stream = store.watch(b"/k/".to_vec(), created).await?;
    let kinds: Vec<_> = [
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
        next_event(&mut stream).await?,
    ]
    .iter()
    .map(|e| (e.kind, e.kv.mod_revision))
    .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Put, created),
            (EventKind::Put, created + 1),
            (EventKind::Put, created + 2),
            (EventKind::Delete, created + 3),
            (EventKind::Put, revision + 1),
        ]
    );
    store.shutdown().await?;

    // And a third start still works after a restart that wrote.
    drop((stream, store));
    let store = open(&dir).await.context("third open")?;
    assert_eq!(store.revision(), revision + 1);
    store.shutdown().await?;
    Ok(())
}
