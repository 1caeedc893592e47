//! Completeness of the etcd v3 KV, Watch and Compact API against real clients: Debian's
//! `etcdctl` 3.4 (ETCDCTL_API=3) and the `etcd-client` crate, on a single member in this
//! process, on loopback ports picked by the OS.
//!
//! Where `/usr/bin/etcd` is installed, the etcdctl transcript is also run against a real etcd
//! and the two must agree line by line (only member ids and the Raft term may differ).

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchFilterType, WatchOptions, WatchResponse, WatchStream,
};
use raftstore::{CompactionPolicy, EtcdServer, EtcdServerConfig, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

/// What one etcdctl run printed.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    success: bool,
    stdout: String,
    /// The last line of stderr (etcdctl's `Error: ...`), without the client's log lines.
    error: String,
    /// All of stderr.
    stderr: String,
}

/// Runs `etcdctl` against `endpoint` with `args` and `stdin`.
async fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Run> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=15s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running etcdctl (apt-get install etcd-client)")?;
    let mut input = child.stdin.take().context("stdin")?;
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
    }
    drop(input);
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(Run {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        error: stderr.lines().last().unwrap_or_default().to_string(),
        stderr: stderr.into_owned(),
    })
}

/// `etcdctl` that must succeed; returns its stdout.
async fn ok(endpoint: &str, args: &[&str]) -> anyhow::Result<String> {
    let run = etcdctl(endpoint, args, None).await?;
    ensure!(run.success, "etcdctl {args:?} failed: {run:?}");
    Ok(run.stdout)
}

/// One member with the etcd API, torn down by [`Single::stop`] (or, on failure, by drop).
struct Single {
    _dir: tempfile::TempDir,
    store: Store,
    server: Option<EtcdServer>,
    endpoint: String,
}

impl Single {
    async fn start(progress_interval: Option<Duration>) -> anyhow::Result<Single> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(StoreConfig {
            node_id: 1,
            data_dir: dir.path().to_path_buf(),
        })
        .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let cfg = EtcdServerConfig {
            member_names: HashMap::from([(1, "solo".to_string())]),
            client_urls: HashMap::from([(1, vec![endpoint.clone()])]),
            watch_progress_interval: progress_interval,
        };
        let server = EtcdServer::start(store.clone(), cfg, listener)?;
        Ok(Single {
            _dir: dir,
            store,
            server: Some(server),
            endpoint,
        })
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect([self.endpoint.as_str()], None).await?)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.server.take() {
            s.stop().await;
        }
        self.store.shutdown().await?;
        Ok(())
    }
}

/// A real etcd on loopback, if `/usr/bin/etcd` is installed; killed on drop.
struct RealEtcd {
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
    endpoint: String,
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

impl RealEtcd {
    async fn start() -> anyhow::Result<Option<RealEtcd>> {
        let binary = std::path::Path::new("/usr/bin/etcd");
        if !binary.exists() {
            eprintln!("/usr/bin/etcd not installed: comparing with a real etcd is skipped");
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let client = format!("http://127.0.0.1:{}", free_port().await?);
        let peer = format!("http://127.0.0.1:{}", free_port().await?);
        let child = Command::new(binary)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg(format!("--initial-cluster=e1={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting etcd")?;
        let etcd = RealEtcd {
            _dir: dir,
            _child: child,
            endpoint: client,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !etcdctl(&etcd.endpoint, &["endpoint", "health"], None)
            .await?
            .success
        {
            ensure!(tokio::time::Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Some(etcd))
    }
}

/// The etcdctl commands of the KV transcript, with stdin for `txn -i`.
fn transcript() -> Vec<(Vec<&'static str>, Option<&'static str>)> {
    let cmd = |args: &[&'static str]| (args.to_vec(), None);
    vec![
        cmd(&["put", "/p/b", "1"]), // revision 2
        cmd(&["put", "/p/a", "1"]), // 3
        cmd(&["put", "/p/c", "2"]), // 4
        cmd(&["put", "/p/a", "2"]), // 5
        cmd(&["put", "/q", "x"]),   // 6
        cmd(&[
            "get",
            "--prefix",
            "/p/",
            "--limit",
            "2",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ]),
        cmd(&["get", "--prefix", "/p/", "--keys-only"]),
        cmd(&[
            "get",
            "--prefix",
            "/p/",
            "--sort-by=VERSION",
            "--order=DESCEND",
            "--keys-only",
        ]),
        cmd(&[
            "get",
            "--prefix",
            "/p/",
            "--sort-by=CREATE",
            "--order=DESCEND",
        ]),
        cmd(&["get", "--prefix", "/p/", "--sort-by=VALUE"]),
        cmd(&[
            "get",
            "--prefix",
            "/p/",
            "--sort-by=KEY",
            "--order=DESCEND",
            "--limit=2",
        ]),
        cmd(&["get", "--prefix", "/p/", "--rev", "3"]),
        cmd(&["get", "--prefix", "/p/", "--limit", "1", "-w", "fields"]),
        cmd(&["get", "/p/a", "--consistency=s"]),
        cmd(&["get", "--from-key", "/p/b", "--keys-only"]),
        cmd(&["get", "/p/a", "--rev", "99"]),
        cmd(&["del", "--prev-kv", "--prefix", "/p/"]), // 7
        cmd(&["del", "/nothing"]),
        (
            vec!["txn", "-i"],
            Some("value(\"/q\") = \"x\"\n\nput /t/k v1\nget /q\n\nput /t/k failed\n\n"),
        ), // 8
        (
            vec!["txn", "-i"],
            Some("mod(\"/t/k\") < \"3\"\n\nput /t/x y\n\nget /t/k\ndel /t/k\n\n"),
        ), // 9
        (vec!["txn", "-i"], Some("value(\"/t/zz\") = \"v1\"\n\n\n\n")),
        (vec!["txn", "-i"], Some("\nput /d 1\nput /d 2\n\n\n")),
        cmd(&["compact", "4", "--physical"]),
        cmd(&["get", "/p/a", "--rev", "3"]),
        cmd(&["get", "/p/a", "--rev", "4"]),
        cmd(&["compact", "4"]),
        cmd(&["compact", "100"]),
    ]
}

/// Runs the transcript against `endpoint`; lines naming member ids or the Raft term are
/// dropped (they differ between any two clusters).
async fn run_transcript(endpoint: &str) -> anyhow::Result<Vec<(String, Run)>> {
    let mut runs = Vec::new();
    for (args, stdin) in transcript() {
        let mut run = etcdctl(endpoint, &args, stdin).await?;
        run.stdout = run
            .stdout
            .lines()
            .filter(|l| {
                !["ClusterID", "MemberID", "RaftTerm"]
                    .iter()
                    .any(|f| l.contains(f))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        runs.push((args.join(" "), run));
    }
    Ok(runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_range_delete_txn_and_compact_answer_as_a_real_etcd_does() -> anyhow::Result<()> {
    let s = Single::start(None).await?;
    let ours = run_transcript(&s.endpoint).await?;
    let out = |cmd: &str| -> anyhow::Result<&Run> {
        ours.iter()
            .find(|(c, _)| c == cmd)
            .map(|(_, r)| r)
            .with_context(|| format!("{cmd} not in transcript"))
    };
    // What etcd 3.4 prints (recorded from one), so the test means something without it too.
    let expect = [
        (
            "get --prefix /p/ --limit 2 --sort-by=MODIFY --order=DESCEND",
            "/p/a\n2\n/p/c\n2\n",
        ),
        ("get --prefix /p/ --keys-only", "/p/a\n\n/p/b\n\n/p/c\n\n"),
        (
            "get --prefix /p/ --sort-by=VERSION --order=DESCEND --keys-only",
            "/p/a\n\n/p/b\n\n/p/c\n\n",
        ),
        (
            "get --prefix /p/ --sort-by=CREATE --order=DESCEND",
            "/p/c\n2\n/p/a\n2\n/p/b\n1\n",
        ),
        (
            "get --prefix /p/ --sort-by=VALUE",
            "/p/b\n1\n/p/a\n2\n/p/c\n2\n",
        ),
        ("get --prefix /p/ --rev 3", "/p/a\n1\n/p/b\n1\n"),
        ("get /p/a --consistency=s", "/p/a\n2\n"),
        (
            "del --prev-kv --prefix /p/",
            "3\n/p/a\n2\n/p/b\n1\n/p/c\n2\n",
        ),
        ("del /nothing", "0\n"),
        ("compact 4 --physical", "compacted revision 4\n"),
        ("get /p/a --rev 4", "/p/a\n1\n"),
    ];
    for (cmd, stdout) in expect {
        let run = out(cmd)?;
        assert!(run.success, "{cmd}: {run:?}");
        assert_eq!(run.stdout, stdout, "{cmd}");
    }
    let fields = &out("get --prefix /p/ --limit 1 -w fields")?.stdout;
    for line in [
        "\"Revision\" : 6",
        "\"Count\" : 3",
        "\"More\" : true",
        "\"ModRevision\" : 5",
    ] {
        assert!(fields.contains(line), "{line} missing in {fields}");
    }
    let errors = [
        (
            "get /p/a --rev 99",
            "mvcc: required revision is a future revision",
        ),
        (
            "get /p/a --rev 3",
            "mvcc: required revision has been compacted",
        ),
        ("compact 4", "mvcc: required revision has been compacted"),
        (
            "compact 100",
            "mvcc: required revision is a future revision",
        ),
        ("txn -i", "duplicate key given in txn request"),
    ];
    for (cmd, text) in errors {
        let found = ours
            .iter()
            .any(|(c, r)| c == cmd && !r.success && r.error.contains(text));
        assert!(found, "{cmd}: no failure with {text:?} in {ours:#?}");
    }
    let txns: Vec<&Run> = ours
        .iter()
        .filter(|(c, _)| c == "txn -i")
        .map(|(_, r)| r)
        .collect();
    assert!(
        txns[0].stdout.ends_with("SUCCESS\n\nOK\n\n/q\nx\n"),
        "{:?}",
        txns[0]
    );
    assert!(
        txns[1].stdout.ends_with("FAILURE\n\n/t/k\nv1\n\n1\n"),
        "{:?}",
        txns[1]
    );
    assert!(txns[2].stdout.ends_with("FAILURE\n"), "{:?}", txns[2]);
    assert_eq!(s.store.compact_revision(), 4);

    if let Some(etcd) = RealEtcd::start().await? {
        let theirs = run_transcript(&etcd.endpoint).await?;
        for ((cmd, a), (_, b)) in ours.iter().zip(&theirs) {
            assert_eq!(
                (a.success, &a.stdout),
                (b.success, &b.stdout),
                "`etcdctl {cmd}`: Capstan (left) and etcd (right) differ"
            );
            if !a.success {
                assert_eq!(a.error, b.error, "`etcdctl {cmd}`: error texts differ");
            }
        }
    }
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_client_range_options_nested_txn_and_request_checks() -> anyhow::Result<()> {
    let s = Single::start(None).await?;
    let mut c = s.client().await?;
    c.put("/r/a", "1", None).await?; // 2
    c.put("/r/b", "1", None).await?; // 3
    c.put("/r/c", "1", None).await?; // 4
    c.put("/r/a", "2", None).await?; // 5
    let prefix = || GetOptions::new().with_prefix();

    let counted = c.get("/r/", Some(prefix().with_count_only())).await?;
    assert_eq!(
        (counted.count(), counted.kvs().len(), counted.more()),
        (3, 0, false)
    );
    // Revision filters prune the keys but not the count, as in etcd.
    let modded = c
        .get("/r/", Some(prefix().with_min_mod_revision(4)))
        .await?;
    let keys: Vec<&str> = modded
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap_or("?"))
        .collect();
    assert_eq!((keys, modded.count()), (vec!["/r/a", "/r/c"], 3));
    let created = c
        .get(
            "/r/",
            Some(
                prefix()
                    .with_min_create_revision(3)
                    .with_max_create_revision(3),
            ),
        )
        .await?;
    assert_eq!(created.kvs().len(), 1);
    assert_eq!(created.kvs()[0].key(), b"/r/b");
    let old = c
        .get(
            "/r/",
            Some(prefix().with_max_mod_revision(3).with_keys_only()),
        )
        .await?;
    assert_eq!(old.kvs().len(), 1);
    assert!(old.kvs()[0].value().is_empty());
    let limited = c
        .get(
            "/r/",
            Some(
                prefix()
                    .with_limit(2)
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_serializable(),
            ),
        )
        .await?;
    let mods: Vec<i64> = limited.kvs().iter().map(|kv| kv.mod_revision()).collect();
    assert_eq!(
        (mods, limited.more(), limited.count()),
        (vec![5, 4], true, 3)
    );
    let past = c
        .get("/r/a", Some(GetOptions::new().with_revision(4)))
        .await?;
    assert_eq!(past.kvs()[0].value(), b"1");
    assert_eq!(past.header().map(|h| h.revision()), Some(5));

    // A nested transaction: its compare sees the state before the outer put.
    let nested = Txn::new()
        .when([Compare::value("/r/a", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("/r/n", "then", None), TxnOp::get("/r/a", None)])
        .or_else([TxnOp::put("/r/n", "else", None)]);
    let outer = Txn::new().and_then([TxnOp::put("/r/a", "3", None), TxnOp::txn(nested)]);
    let result = c.txn(outer).await?;
    assert!(result.succeeded());
    let responses = result.op_responses();
    let Some(TxnOpResponse::Txn(inner)) = responses.get(1) else {
        bail!("no nested txn response: {responses:?}");
    };
    assert!(inner.succeeded(), "the nested compare saw a = 2");
    let Some(TxnOpResponse::Get(got)) = inner.op_responses().get(1).cloned() else {
        bail!("no nested get response");
    };
    assert_eq!(
        got.kvs()[0].value(),
        b"3",
        "the nested get sees the outer put"
    );
    let n = c.get("/r/n", None).await?;
    assert_eq!(
        (n.kvs()[0].value(), n.kvs()[0].mod_revision()),
        (b"then".as_slice(), 6)
    );

    // etcd's request checks.
    let twice = Txn::new().and_then([TxnOp::put("/r/x", "1", None), TxnOp::put("/r/x", "2", None)]);
    let err = c.txn(twice).await.err().context("duplicate key accepted")?;
    assert!(
        err.to_string()
            .contains("duplicate key given in txn request"),
        "{err}"
    );
    let err = c
        .put("", "v", None)
        .await
        .err()
        .context("empty key accepted")?;
    assert!(err.to_string().contains("key is not provided"), "{err}");
    let err = c
        .get("/r/a", Some(GetOptions::new().with_revision(99)))
        .await
        .err()
        .context("future revision read")?;
    assert!(
        err.to_string()
            .contains("required revision is a future revision"),
        "{err}"
    );
    s.stop().await
}

/// The next response on `stream` that is not for another watch, within [`WAIT`].
async fn next_response(stream: &mut WatchStream) -> anyhow::Result<WatchResponse> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .context("no watch response in time")??
        .context("watch stream ended")
}

fn is_progress(r: &WatchResponse) -> bool {
    r.events().is_empty() && !r.created() && !r.canceled() && r.compact_revision() == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_progress_filters_cancel_and_compacted_starts() -> anyhow::Result<()> {
    let s = Single::start(Some(Duration::from_millis(300))).await?;
    let mut c = s.client().await?;
    c.put("/w/seed", "0", None).await?; // 2

    // An idle progress_notify watch gets progress responses at the current revision.
    let mut idle = c
        .watch(
            "/idle/",
            Some(WatchOptions::new().with_prefix().with_progress_notify()),
        )
        .await?;
    let created = next_response(&mut idle).await?;
    assert!(created.created());
    let id = created.watch_id();
    let progress = next_response(&mut idle).await?;
    assert!(is_progress(&progress), "{progress:?}");
    assert_eq!(progress.watch_id(), id);
    assert_eq!(progress.header().map(|h| h.revision()), Some(2));

    // A watch without progress_notify only reports progress when asked, for the whole stream
    // (watch id -1), once it has sent every event up to the revision it reports.
    let mut w = c
        .watch(
            "/w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_filters([WatchFilterType::NoPut]),
            ),
        )
        .await?;
    let created = next_response(&mut w).await?;
    let wid = created.watch_id();
    c.put("/w/a", "1", None).await?; // 3
    c.put("/w/a", "2", None).await?; // 4
    c.delete("/w/a", None).await?; // 5
    let deleted = next_response(&mut w).await?;
    let events = deleted.events();
    assert_eq!(events.len(), 1, "puts are filtered out: {deleted:?}");
    assert_eq!(events[0].event_type(), EventType::Delete);
    assert_eq!(events[0].kv().map(|kv| kv.mod_revision()), Some(5));
    assert_eq!(
        events[0].prev_kv().map(|kv| kv.value()),
        Some(b"2".as_slice())
    );
    w.request_progress().await?;
    let progress = next_response(&mut w).await?;
    assert!(is_progress(&progress), "{progress:?}");
    assert_eq!(progress.watch_id(), -1);
    assert_eq!(progress.header().map(|h| h.revision()), Some(5));

    // Cancel: a canceled response, then nothing more for that watch.
    w.cancel(wid).await?;
    let canceled = next_response(&mut w).await?;
    assert!(
        canceled.canceled() && canceled.watch_id() == wid,
        "{canceled:?}"
    );
    c.delete("/w/seed", None).await?; // 6
    w.request_progress().await?;
    let after = next_response(&mut w).await?;
    assert!(
        is_progress(&after),
        "an event of a canceled watch came: {after:?}"
    );
    assert_eq!(after.header().map(|h| h.revision()), Some(6));

    // Compaction: a watch from before it is canceled with the compaction revision; a watch
    // from the compaction revision itself replays it.
    c.compact(5, None).await?;
    let mut old = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(4)),
        )
        .await?;
    assert!(next_response(&mut old).await?.created());
    let gone = next_response(&mut old).await?;
    assert!(gone.canceled(), "{gone:?}");
    assert_eq!(gone.compact_revision(), 5);
    let mut at = c
        .watch(
            "/w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(5)),
        )
        .await?;
    assert!(next_response(&mut at).await?.created());
    let replayed = next_response(&mut at).await?;
    let revisions: Vec<i64> = replayed
        .events()
        .iter()
        .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
        .collect();
    assert_eq!(revisions, vec![5, 6]);
    // What etcdctl makes of it, word for word as with etcd.
    let run = etcdctl(&s.endpoint, &["watch", "--rev", "4", "/w/a"], None).await?;
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "{run:?}"
    );
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_refusals_carry_etcds_reasons() -> anyhow::Result<()> {
    let s = Single::start(None).await?;
    let mut c = s.client().await?;
    let mut stream = c
        .watch("/x", Some(WatchOptions::new().with_watch_id(42)))
        .await?;
    let first = next_response(&mut stream).await?;
    assert!(first.created() && !first.canceled() && first.watch_id() == 42);
    stream
        .watch("/y", Some(WatchOptions::new().with_watch_id(42)))
        .await?;
    let dup = next_response(&mut stream).await?;
    assert!(
        dup.created() && dup.canceled() && dup.watch_id() == -1,
        "{dup:?}"
    );
    assert_eq!(
        dup.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    stream
        .watch("/z", Some(WatchOptions::new().with_range("/a")))
        .await?;
    let empty = next_response(&mut stream).await?;
    assert!(empty.canceled() && empty.watch_id() == -1, "{empty:?}");
    assert_eq!(empty.cancel_reason(), "mvcc: watcher range is empty");
    // The first watch is unaffected.
    c.put("/x", "1", None).await?;
    let event = next_response(&mut stream).await?;
    assert_eq!((event.watch_id(), event.events().len()), (42, 1));
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_from_a_revision_sees_10000_writes_exactly_once_in_order(
) -> anyhow::Result<()> {
    const WRITERS: usize = 8;
    const BEFORE: usize = 2_000;
    const TOTAL: usize = 10_000;
    let s = Single::start(None).await?;
    let from = s.store.revision() + 1;
    let write = |range: std::ops::Range<usize>| {
        let store = s.store.clone();
        async move {
            let mut tasks = Vec::new();
            for w in 0..WRITERS {
                let store = store.clone();
                let mine: Vec<usize> = range.clone().filter(|i| i % WRITERS == w).collect();
                tasks.push(tokio::spawn(async move {
                    let mut written = Vec::new();
                    for i in mine {
                        let key = format!("/load/{:02}/{i:05}", i % 17);
                        let value = format!("v{i}");
                        let put = store.put(key.clone().into_bytes(), value.clone().into_bytes());
                        written.push((put.await?.revision, key, value));
                    }
                    anyhow::Ok(written)
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await??);
            }
            anyhow::Ok(all)
        }
    };
    // Part of the writes is history when the watch starts, the rest arrives live.
    let mut written = write(0..BEFORE).await?;
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", s.endpoint))
        .args(["watch", "--prefix", "/load/", "--rev", &from.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(TOTAL * 3);
        while seen.len() < TOTAL * 3 {
            match lines.next_line().await? {
                Some(line) => seen.push(line),
                None => bail!("watch ended after {} lines", seen.len()),
            }
        }
        anyhow::Ok(seen)
    });
    written.extend(write(BEFORE..TOTAL).await?);
    let seen = tokio::time::timeout(Duration::from_secs(180), reader)
        .await
        .context("the watch did not deliver every event in time")???;
    watch.kill().await?;

    written.sort();
    let revisions: Vec<i64> = written.iter().map(|(r, _, _)| *r).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "each put takes its own revision"
    );
    assert_eq!(revisions.first(), Some(&from));
    let expected: Vec<String> = written
        .into_iter()
        .flat_map(|(_, key, value)| ["PUT".to_string(), key, value])
        .collect();
    if let Some(i) = (0..expected.len()).find(|&i| expected[i] != seen[i]) {
        bail!(
            "watch output differs at line {i}: expected {:?}, got {:?}",
            &expected[i..(i + 6).min(expected.len())],
            &seen[i..(i + 6).min(seen.len())]
        );
    }
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_compaction_keeps_the_configured_window_of_history() -> anyhow::Result<()> {
    let s = Single::start(None).await?;
    for i in 0..30 {
        s.store
            .put(b"/ac/k".to_vec(), i.to_string().into_bytes())
            .await?;
    }
    let revision = s.store.revision();

    // Revision mode: keep the last 10 revisions.
    let compactor = s.store.start_auto_compaction(CompactionPolicy::Revision {
        keep: 10,
        interval: Duration::from_millis(50),
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.store.compact_revision() != revision - 10 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "compact revision {} after {WAIT:?}, expected {}",
            s.store.compact_revision(),
            revision - 10
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(compactor);
    let old = etcdctl(
        &s.endpoint,
        &["get", "/ac/k", "--rev", &(revision - 11).to_string()],
        None,
    )
    .await?;
    assert!(
        !old.success && old.error.contains("required revision has been compacted"),
        "{old:?}"
    );
    let kept = ok(
        &s.endpoint,
        &[
            "get",
            "/ac/k",
            "--rev",
            &(revision - 10).to_string(),
            "--print-value-only",
        ],
    )
    .await?;
    // Revision r holds the value written by put number r - 2 (revision 1 is the empty store).
    assert_eq!(kept, format!("{}\n", revision - 12));

    // Periodic mode: once a retention window has passed, history older than the window goes,
    // and never anything younger: the compaction revision is at most the newest revision
    // whose write started a whole window before we look.
    let retention = Duration::from_millis(500);
    let mut writes = vec![(tokio::time::Instant::now(), s.store.revision())];
    let _periodic = s
        .store
        .start_auto_compaction(CompactionPolicy::Periodic { retention });
    let marker = s.store.revision() + 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let started = tokio::time::Instant::now();
        let put = s.store.put(b"/ac/k".to_vec(), b"late".to_vec()).await?;
        writes.push((started, put.revision));
        let compacted = s.store.compact_revision();
        let window_start = tokio::time::Instant::now() - retention;
        let old_enough = writes
            .iter()
            .filter(|(t, _)| *t <= window_start)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        assert!(
            compacted <= old_enough.max(revision - 10),
            "compacted to {compacted}, younger than the window (newest old enough: {old_enough})"
        );
        if compacted >= marker {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "periodic compaction did not reach {marker}: at {compacted}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await
}
