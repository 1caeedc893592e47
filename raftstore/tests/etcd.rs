//! The etcd v3 client API against Debian's real `etcdctl` (ETCDCTL_API=3): a single member and
//! a three-member cluster in this process, on loopback ports picked by the OS.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use raftstore::{ClusterConfig, EtcdServer, EtcdServerConfig, RaftTuning, Store, StoreConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(15);

/// Runs `etcdctl` against `endpoints` with `args` (and `stdin`); returns (success, stdout+stderr).
async fn etcdctl(
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
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
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// `etcdctl` that must succeed; returns its stdout.
async fn ok(endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    let (success, text) = etcdctl(endpoints, args, None).await?;
    if !success {
        bail!("etcdctl {args:?} failed: {text}");
    }
    Ok(text)
}

struct Single {
    _dir: tempfile::TempDir,
    store: Store,
    server: Option<EtcdServer>,
    endpoint: String,
}

impl Single {
    async fn start() -> anyhow::Result<Single> {
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
            ..Default::default()
        };
        let server = EtcdServer::start(store.clone(), cfg, listener)?;
        Ok(Single {
            _dir: dir,
            store,
            server: Some(server),
            endpoint,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_kv_txn_watch_compact_and_status_on_one_member() -> anyhow::Result<()> {
    let s = Single::start().await?;
    let e = s.endpoint.clone();
    assert_eq!(ok(&e, &["put", "/p/a", "1"]).await?.trim(), "OK"); // rev 2
    ok(&e, &["put", "/p/b", "2"]).await?; // rev 3
    ok(&e, &["put", "/p/c", "3"]).await?; // rev 4
    ok(&e, &["put", "/q", "x"]).await?; // rev 5
    ok(&e, &["put", "/p/a", "1b"]).await?; // rev 6

    assert_eq!(ok(&e, &["get", "/p/a"]).await?, "/p/a\n1b\n");
    assert_eq!(
        ok(&e, &["get", "--prefix", "/p/"]).await?,
        "/p/a\n1b\n/p/b\n2\n/p/c\n3\n"
    );
    assert_eq!(
        ok(
            &e,
            &["get", "--prefix", "/p/", "--limit", "2", "--keys-only"]
        )
        .await?,
        "/p/a\n\n/p/b\n\n"
    );
    assert_eq!(
        ok(
            &e,
            &[
                "get",
                "--prefix",
                "/p/",
                "--sort-by",
                "MODIFY",
                "--order",
                "DESCEND",
                "--limit",
                "1"
            ]
        )
        .await?,
        "/p/a\n1b\n"
    );
    assert_eq!(
        ok(&e, &["get", "--from-key", "/q", "--print-value-only"]).await?,
        "x\n"
    );
    let counted = ok(
        &e,
        &["get", "--prefix", "/p/", "--limit", "1", "-w", "fields"],
    )
    .await?;
    assert!(
        counted.contains("\"Count\" : 3") && counted.contains("\"More\" : true"),
        "{counted}"
    );
    // An inverted range is empty, not an error.
    assert_eq!(ok(&e, &["get", "/q", "/p"]).await?, "");
    // Past revisions: /p/a was "1" at revision 3; /p/c did not exist yet.
    assert_eq!(
        ok(&e, &["get", "--rev", "3", "--prefix", "/p/"]).await?,
        "/p/a\n1\n/p/b\n2\n"
    );
    let (future, text) = etcdctl(&e, &["get", "--rev", "99", "/p/a"], None).await?;
    assert!(!future && text.contains("future revision"), "{text}");

    // Delete: a range, with previous values.
    assert_eq!(ok(&e, &["del", "--prev-kv", "/p/b"]).await?, "1\n/p/b\n2\n"); // rev 7
    assert_eq!(ok(&e, &["del", "/nothing"]).await?, "0\n");

    // Txn from stdin: the compare fails once and holds once.
    let script = "value(\"/p/a\") = \"1b\"\n\nput /t ok\n\nput /t failed\n\n";
    let (done, text) = etcdctl(&e, &["txn"], Some(script)).await?; // rev 8
    assert!(done && text.starts_with("SUCCESS"), "{text}");
    let script = "mod(\"/p/a\") < \"3\"\n\nput /t ok2\n\nget /t\n\n";
    let (done, text) = etcdctl(&e, &["txn"], Some(script)).await?;
    assert!(
        done && text.starts_with("FAILURE") && text.contains("/t\nok"),
        "{text}"
    );

    // Watch from a past revision replays history, then follows live writes.
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints={e}"),
            "watch",
            "--rev",
            "6",
            "--prefix",
            "/p/",
            "--prev-kv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(watch.stdout.take().context("stdout")?).lines();
    let mut seen = Vec::new();
    let mut wrote = false;
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            seen.push(line);
            if !wrote && seen.len() >= 8 {
                wrote = true;
                ok(&e, &["put", "/p/live", "L"]).await?;
            }
            if seen.iter().any(|l| l == "L") {
                return anyhow::Ok(());
            }
        }
        bail!("watch ended early: {seen:?}")
    })
    .await
    .with_context(|| format!("watch output so far: {seen:?}"))??;
    watch.kill().await?;
    // rev 6: PUT /p/a 1b (prev 1); rev 7: DELETE /p/b (prev 2); then the live put.
    assert_eq!(
        seen[..8],
        ["PUT", "/p/a", "1", "/p/a", "1b", "DELETE", "/p/b", "2"].map(String::from)
    );
    assert_eq!(
        seen[seen.len() - 3..],
        ["PUT", "/p/live", "L"].map(String::from)
    );

    // Compaction: reads and watches below it fail the way etcd's do.
    assert_eq!(
        ok(&e, &["compact", "5"]).await?.trim(),
        "compacted revision 5"
    );
    let (old, text) = etcdctl(&e, &["get", "--rev", "4", "/p/a"], None).await?;
    assert!(
        !old && text.contains("required revision has been compacted"),
        "{text}"
    );
    assert_eq!(
        ok(&e, &["get", "--rev", "5", "/p/c", "--print-value-only"]).await?,
        "3\n"
    );
    let (_, text) = etcdctl(&e, &["watch", "--rev", "3", "/p/a"], None).await?;
    assert!(
        text.contains("required revision has been compacted"),
        "{text}"
    );
    let (again, text) = etcdctl(&e, &["compact", "4"], None).await?;
    assert!(!again && text.contains("compacted"), "{text}");

    // Membership and status.
    let members = ok(&e, &["member", "list"]).await?;
    assert!(
        members.contains(", started, solo, ") && members.contains(&e),
        "{members}"
    );
    // etcdctl 3.4 dials `endpoint status` with the whole URL as HTTP/2 authority, which hyper
    // rightly rejects; a bare host:port works (as it does against etcd).
    let bare = e.trim_start_matches("http://");
    let status = ok(bare, &["endpoint", "status", "-w", "json"]).await?;
    assert!(status.contains("\"version\":\"3.5.0-capstan\""), "{status}");
    assert!(status.contains("\"leader\":1"), "{status}");
    let revision = s.store.revision();
    assert!(
        status.contains(&format!("\"revision\":{revision}")),
        "{status}"
    );
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_against_a_three_member_cluster() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let mut peers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        peers.push(TcpListener::bind("127.0.0.1:0").await?);
        clients.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let peer_urls = peers
        .iter()
        .map(|l| Ok(format!("http://{}", l.local_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client_urls = clients
        .iter()
        .map(|l| Ok(format!("http://{}", l.local_addr()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = peer_urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("n{}={u}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    // Names and client URLs are published by the members themselves.
    let cfg = EtcdServerConfig::default();
    let mut stores = Vec::new();
    for (i, (peer, url)) in peers.into_iter().zip(&peer_urls).enumerate() {
        let name = format!("n{}", i + 1);
        let mut c = ClusterConfig::new(&name, root.path().join(&name), url, &spec)?
            .with_client_urls(&client_urls[i..=i])?;
        c.tuning = RaftTuning {
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            ..RaftTuning::default()
        };
        stores.push(Store::open_cluster_on(c, peer).await?);
    }
    let mut servers = Vec::new();
    for (store, listener) in stores.iter().zip(clients) {
        servers.push(EtcdServer::start(store.clone(), cfg.clone(), listener)?);
    }
    let leader = stores[0].wait_for_leader(WAIT).await?;
    // Member ids are derived from peer URLs.
    let ids: Vec<u64> = stores.iter().map(Store::node_id).collect();
    let follower = ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .context("a follower")?;
    let at = |id: u64| client_urls[ids.iter().position(|i| *i == id).unwrap_or(0)].clone();

    // A write through a follower is forwarded; a read on another member sees it.
    ok(&at(follower), &["put", "/c/k", "v1"]).await?;
    ok(&at(leader), &["put", "/c/k", "v2"]).await?;
    for id in ids.iter().copied() {
        assert_eq!(
            ok(&at(id), &["get", "/c/k", "--print-value-only"]).await?,
            "v2\n"
        );
    }
    assert_eq!(
        ok(
            &at(follower),
            &["get", "/c/k", "--rev", "2", "--print-value-only"]
        )
        .await?,
        "v1\n"
    );
    let all = client_urls.join(",");
    let members = ok(&all, &["member", "list"]).await?;
    for i in 1..=3 {
        assert!(
            members.contains(&format!(", started, n{i}, {}", peer_urls[i - 1])),
            "{members}"
        );
    }
    let status = ok(&all.replace("http://", ""), &["endpoint", "status"]).await?;
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(
        status.lines().filter(|l| l.contains(", true, ")).count(),
        1,
        "exactly one leader: {status}"
    );
    for s in servers {
        s.stop().await;
    }
    for s in &stores {
        s.shutdown().await?;
    }
    Ok(())
}
