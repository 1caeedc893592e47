//! A three-member `capstan store` cluster of real processes on 127.0.0.1, 127.0.0.2 and
//! 127.0.0.3, driven with Debian's `etcdctl` and with the `etcd-client` crate: the KV API,
//! transactions, watches from a revision, member list and endpoint status; then crash safety:
//! `kill -9` of the leader elects a new one and writes continue without losing an acknowledged
//! write, and a killed follower catches up after its restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tests::{must_eventually, StoreCluster, CONVERGE, ETCDCTL};
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `etcdctl watch` with `args` on `endpoint`, read until `lines` lines arrived (or 30 s).
fn etcdctl_watch_lines(endpoint: &str, args: &[&str], lines: usize) -> Vec<String> {
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("watch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < lines {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => got.push(line),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    got
}

#[test]
fn etcdctl_drives_kv_txn_watch_member_list_and_endpoint_status() {
    let cluster = StoreCluster::start();
    let (n1, n2, n3) = (
        cluster.members[0].client_url.clone(),
        cluster.members[1].client_url.clone(),
        cluster.members[2].client_url.clone(),
    );
    assert_eq!(cluster.must_etcdctl(&["put", "/t/a", "1"]).trim(), "OK");
    let first: serde_json::Value =
        serde_json::from_str(&cluster.must_etcdctl(&["get", "/t/a", "--write-out=json"])).unwrap();
    let first_revision = first["kvs"][0]["mod_revision"].as_i64().unwrap();
    // Every member answers linearizable reads, whoever leads.
    for endpoint in [&n1, &n2, &n3] {
        let out = cluster.etcdctl(endpoint, &["get", "/t/a"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "/t/a\n1\n");
    }

    // A transaction: compare on the value, put on success.
    let mut txn = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(["txn", "--interactive=false"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    txn.stdin
        .take()
        .unwrap()
        .write_all(b"value(\"/t/a\") = \"1\"\n\nput /t/b 2\n\nput /t/b wrong\n\n")
        .unwrap();
    let out = txn.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCESS\n\nOK\n");
    let out = cluster.etcdctl(&n3, &["get", "/t/b", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");

    assert_eq!(cluster.must_etcdctl(&["del", "/t/a"]).trim(), "1");
    let out = cluster.etcdctl(&n2, &["get", "/t/a"]);
    assert!(out.status.success() && out.stdout.is_empty());

    // Watching from the first put's revision replays the history in order, on any member.
    let lines = etcdctl_watch_lines(
        &n2,
        &["--prefix", "/t/", &format!("--rev={first_revision}")],
        8,
    );
    assert_eq!(
        lines,
        ["PUT", "/t/a", "1", "PUT", "/t/b", "2", "DELETE", "/t/a"],
        "watch from revision {first_revision}"
    );

    let list: serde_json::Value =
        serde_json::from_str(&cluster.must_etcdctl(&["member", "list", "--write-out=json"]))
            .unwrap();
    let mut peers: Vec<String> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peerURLs"][0].as_str().unwrap().to_string())
        .collect();
    peers.sort();
    let mut expected: Vec<String> = cluster.members.iter().map(|m| m.peer_url.clone()).collect();
    expected.sort();
    assert_eq!(peers, expected, "member list: {list}");

    // endpoint status: all three answer, agree on the leader, which is one of them.
    let statuses: Vec<_> = (0..3).map(|i| cluster.status(i).unwrap()).collect();
    let leader = statuses[0].leader;
    assert!(statuses.iter().all(|s| s.leader == leader), "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| s.member_id == leader).count(), 1);
    let out = cluster.etcdctl(&cluster.endpoints(), &["endpoint", "status"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
}

#[test]
fn the_etcd_client_crate_runs_kv_txn_watch_and_cluster_calls() {
    let cluster = StoreCluster::start();
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    runtime().block_on(async {
        let mut client = Client::connect(&endpoints, None).await.unwrap();
        let put = client.put("/c/a", "1", None).await.unwrap();
        let first_revision = put.header().unwrap().revision();
        let got = client.get("/c/a", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"1");

        let swap = Txn::new()
            .when([Compare::value("/c/a", CompareOp::Equal, "1")])
            .and_then([TxnOp::put("/c/b", "2", None)])
            .or_else([TxnOp::put("/c/b", "wrong", None)]);
        assert!(client.txn(swap).await.unwrap().succeeded());
        let stale = Txn::new()
            .when([Compare::mod_revision(
                "/c/a",
                CompareOp::Equal,
                first_revision - 1,
            )])
            .and_then([TxnOp::put("/c/b", "wrong", None)]);
        assert!(!client.txn(stale).await.unwrap().succeeded());
        assert_eq!(client.delete("/c/a", None).await.unwrap().deleted(), 1);

        // Watch from the first revision: the whole history, in order, with revisions.
        let mut stream = client
            .watch(
                "/c/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(first_revision),
                ),
            )
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let response = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("watch events in time")
                .unwrap()
                .expect("watch stream open");
            for e in response.events() {
                let kv = e.kv().unwrap();
                seen.push((
                    e.event_type(),
                    kv.key_str().unwrap().to_string(),
                    kv.mod_revision(),
                ));
            }
        }
        assert_eq!(
            seen,
            [
                (EventType::Put, "/c/a".to_string(), first_revision),
                (EventType::Put, "/c/b".to_string(), first_revision + 1),
                (EventType::Delete, "/c/a".to_string(), first_revision + 2),
            ]
        );

        let members = client.member_list().await.unwrap();
        assert_eq!(members.members().len(), 3);
        let status = client.status().await.unwrap();
        assert_ne!(status.leader(), 0);
    });
}

/// Writes `/w/<n>` keys one after another, trying the members in turn, and records every
/// acknowledged key, until `stop` is set.
async fn write_until_stopped(
    endpoints: Vec<String>,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(Client::connect([e], None).await.unwrap());
    }
    let mut n = 0u64;
    let mut target = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let key = format!("/w/{n:06}");
        let slot = target % clients.len();
        let client = &mut clients[slot];
        let put =
            tokio::time::timeout(Duration::from_secs(5), client.put(key.clone(), "v", None)).await;
        match put {
            Ok(Ok(_)) => {
                acked.lock().unwrap().push(key);
                n += 1;
            }
            // Unacknowledged: the write may or may not have happened; try the next member
            // with a new key.
            _ => {
                n += 1;
                target += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until member `i` serves (serializable, from its own state) every key in `keys`.
fn must_hold_every_key(cluster: &StoreCluster, i: usize, keys: &[String]) {
    let url = cluster.members[i].client_url.clone();
    let rt = runtime();
    must_eventually(
        CONVERGE,
        &format!("member {i} to hold all {} acknowledged keys", keys.len()),
        || {
            rt.block_on(async {
                let mut client = Client::connect([&url], None).await.ok()?;
                let got = client
                    .get(
                        "/w/",
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_keys_only()
                                .with_serializable(),
                        ),
                    )
                    .await
                    .ok()?;
                let held: std::collections::HashSet<&[u8]> =
                    got.kvs().iter().map(|kv| kv.key()).collect();
                keys.iter()
                    .all(|k| held.contains(k.as_bytes()))
                    .then_some(())
            })
        },
    );
}

#[test]
fn killing_the_leader_elects_a_new_one_and_loses_no_acknowledged_write() {
    let mut cluster = StoreCluster::start();
    let old_leader = cluster.must_agree_on_leader();
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.client_url.clone())
        .collect();
    let rt = runtime();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn(write_until_stopped(endpoints, acked.clone(), stop.clone()));
    let count = || acked.lock().unwrap().len();
    must_eventually(CONVERGE, "writes before the kill", || {
        (count() >= 20).then_some(())
    });

    cluster.kill(old_leader);
    let at_kill = count();
    let new_leader = cluster.must_agree_on_leader();
    assert_ne!(new_leader, old_leader);
    must_eventually(CONVERGE, "writes to continue after the kill", || {
        (count() >= at_kill + 30).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).unwrap();

    cluster.restart(old_leader);
    cluster.must_agree_on_leader();
    let keys = acked.lock().unwrap().clone();
    for i in 0..3 {
        must_hold_every_key(&cluster, i, &keys);
    }
}

#[test]
fn a_killed_follower_catches_up_after_restart() {
    let mut cluster = StoreCluster::start();
    let leader = cluster.must_agree_on_leader();
    let follower = (leader + 1) % 3;
    let rt = runtime();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != follower)
        .map(|i| cluster.members[i].client_url.clone())
        .collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn(write_until_stopped(survivors, acked.clone(), stop.clone()));
    let count = || acked.lock().unwrap().len();
    must_eventually(CONVERGE, "writes before the kill", || {
        (count() >= 20).then_some(())
    });

    cluster.kill(follower);
    let at_kill = count();
    must_eventually(CONVERGE, "writes while the follower is down", || {
        (count() >= at_kill + 200).then_some(())
    });
    cluster.restart(follower);
    // Keep writing while it catches up, then check it holds everything acknowledged.
    let at_restart = count();
    must_eventually(CONVERGE, "writes after the restart", || {
        (count() >= at_restart + 20).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).unwrap();
    let keys = acked.lock().unwrap().clone();
    must_hold_every_key(&cluster, follower, &keys);
    cluster.must_agree_on_leader();
}

/// The members' ids by name, from `etcdctl member list`.
fn member_ids(cluster: &StoreCluster) -> Vec<(String, u64)> {
    member_list(cluster)
        .into_iter()
        .map(|(name, id, _)| (name, id))
        .collect()
}

/// `etcdctl member list` as (name, id, is learner).
fn member_list(cluster: &StoreCluster) -> Vec<(String, u64, bool)> {
    let list: serde_json::Value =
        serde_json::from_str(&cluster.must_etcdctl(&["member", "list", "--write-out=json"]))
            .unwrap();
    list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["ID"].as_u64().unwrap(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

#[test]
fn an_expired_lease_removes_its_keys_on_every_member() {
    let cluster = StoreCluster::start();
    let granted = cluster.must_etcdctl(&["lease", "grant", "2"]);
    // "lease 694d77aa9e3b3e0b granted with TTL(2s)"
    let lease = granted.split_whitespace().nth(1).unwrap().to_string();
    cluster.must_etcdctl(&["put", "--lease", &lease, "/l/k", "v"]);
    cluster.must_etcdctl(&["put", "/l/kept", "v"]);
    for m in &cluster.members {
        let out = cluster.etcdctl(&m.client_url, &["get", "/l/k", "--print-value-only"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "v\n",
            "{} before expiry",
            m.name
        );
    }
    for m in &cluster.members {
        must_eventually(
            CONVERGE,
            &format!("the leased key to expire on {}", m.name),
            || {
                let out = cluster.etcdctl(
                    &m.client_url,
                    &["get", "/l/", "--prefix", "--keys-only", "--consistency=s"],
                );
                let keys = String::from_utf8_lossy(&out.stdout).to_string();
                (out.status.success() && !keys.contains("/l/k\n")).then_some(keys)
            },
        );
        let out = cluster.etcdctl(&m.client_url, &["get", "/l/kept", "--print-value-only"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "v\n",
            "unleased key on {}",
            m.name
        );
    }
}

#[test]
fn etcdctl_adds_a_member_that_catches_up_and_removes_it_again() {
    let mut cluster = StoreCluster::start();
    cluster.must_etcdctl(&["put", "/m/before", "1"]);
    let peer_url = cluster.new_peer_url();
    let added = cluster.must_etcdctl(&["member", "add", "n4", &format!("--peer-urls={peer_url}")]);
    assert!(added.contains("added to cluster"), "{added}");
    let n4 = cluster.start_added_member("n4", &peer_url);
    cluster.must_etcdctl(&["put", "/m/after", "2"]);
    // The new member serves both writes from its own state once it caught up.
    let url = cluster.members[n4].client_url.clone();
    must_eventually(CONVERGE, "n4 to catch up", || {
        let out = cluster.etcdctl(&url, &["get", "/m/", "--prefix", "--consistency=s"]);
        (String::from_utf8_lossy(&out.stdout) == "/m/after\n2\n/m/before\n1\n").then_some(())
    });
    // Added as a learner, promoted to voter by the leader once caught up.
    must_eventually(CONVERGE, "member list to show n4 as a voter", || {
        member_list(&cluster)
            .iter()
            .any(|(name, _, learner)| name == "n4" && !learner)
            .then_some(())
    });
    assert_eq!(member_ids(&cluster).len(), 4);

    let id = member_ids(&cluster)
        .into_iter()
        .find(|(n, _)| n == "n4")
        .map(|(_, id)| id)
        .unwrap();
    let removed = cluster.etcdctl(
        &cluster.members[0].client_url,
        &["member", "remove", &format!("{id:x}")],
    );
    assert!(
        removed.status.success(),
        "member remove: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    must_eventually(CONVERGE, "member list without n4", || {
        (member_ids(&cluster).len() == 3).then_some(())
    });
    // A removed member stops by itself.
    let deadline = std::time::Instant::now() + CONVERGE;
    while !cluster.has_exited(n4) {
        assert!(
            std::time::Instant::now() < deadline,
            "n4 did not stop after its removal:\n{}",
            cluster.log(n4)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.must_etcdctl(&["put", "/m/later", "3"]);
}
