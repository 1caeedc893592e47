//! Membership as etcd operators drive it, against Debian's real `etcdctl` (ETCDCTL_API=3):
//! in-process members on 127.0.0.1 (ports picked by the OS), each serving the peer service and
//! the etcd client API. Member ids are derived from peer URLs; names and client URLs are
//! published by the members and replicated.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use raftstore::{
    member_id, ClusterConfig, EtcdServer, EtcdServerConfig, InitialClusterState, NodeId,
    RaftTuning, ReadConsistency, Store,
};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(20);

fn fast() -> RaftTuning {
    RaftTuning {
        heartbeat: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        ..RaftTuning::default()
    }
}

/// Runs `etcdctl` against `endpoints`; returns (success, stdout, stderr).
async fn etcdctl(endpoints: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=15s")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running etcdctl (apt-get install etcd-client)")?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `etcdctl` that must succeed; returns its stdout.
async fn ok(endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    let (success, out, err) = etcdctl(endpoints, args).await?;
    if !success {
        bail!("etcdctl {args:?} against {endpoints} failed: {out}{err}");
    }
    Ok(out)
}

/// Polls `f` until it returns `Some` or [`WAIT`] passes.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        let last = match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::new(),
            Err(e) => format!(": {e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}{last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One in-process member: its store and client API.
struct Member {
    name: String,
    peer_url: String,
    client_url: String,
    store: Store,
    server: Option<EtcdServer>,
}

impl Member {
    /// Starts a member from `cfg` on the given listeners.
    async fn start(
        cfg: ClusterConfig,
        peer: TcpListener,
        client: TcpListener,
    ) -> anyhow::Result<Member> {
        let name = cfg.name.clone();
        let peer_url = cfg.advertise_peer_url.clone();
        let client_url = format!("http://{}", client.local_addr()?);
        let cfg = ClusterConfig {
            tuning: fast(),
            ..cfg.with_client_urls(std::slice::from_ref(&client_url))?
        };
        let store = Store::open_cluster_on(cfg, peer).await?;
        let server = EtcdServer::start(store.clone(), EtcdServerConfig::default(), client)?;
        Ok(Member {
            name,
            peer_url,
            client_url,
            store,
            server: Some(server),
        })
    }

    fn id(&self) -> NodeId {
        self.store.node_id()
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
        self.store.shutdown().await?;
        Ok(())
    }
}

/// Two listeners on 127.0.0.1 and their peer URL.
async fn listeners() -> anyhow::Result<(TcpListener, TcpListener, String)> {
    let peer = TcpListener::bind("127.0.0.1:0").await?;
    let client = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", peer.local_addr()?);
    Ok((peer, client, url))
}

struct Cluster {
    root: tempfile::TempDir,
    members: Vec<Member>,
}

impl Cluster {
    /// Starts three members n1..n3 of a new cluster and waits for a leader.
    async fn start() -> anyhow::Result<Cluster> {
        let root = tempfile::tempdir()?;
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(listeners().await?);
        }
        let spec = sockets
            .iter()
            .enumerate()
            .map(|(i, (_, _, url))| format!("n{}={url}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (peer, client, url)) in sockets.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let cfg = ClusterConfig::new(&name, root.path().join(&name), &url, &spec)?;
            members.push(Member::start(cfg, peer, client).await?);
        }
        let cluster = Cluster { root, members };
        cluster.leader().await?;
        Ok(cluster)
    }

    /// Waits until every member names the same leader, one of them; returns its id.
    async fn leader(&self) -> anyhow::Result<NodeId> {
        eventually("the members agree on a leader", || async {
            let views: Vec<_> = self
                .members
                .iter()
                .map(|m| m.store.members().leader)
                .collect();
            Ok(match views.first() {
                Some(Some(l))
                    if views.iter().all(|v| *v == Some(*l))
                        && self.members.iter().any(|m| m.id() == *l) =>
                {
                    Some(*l)
                }
                _ => None,
            })
        })
        .await
    }

    fn member(&self, id: NodeId) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id() == id)
            .with_context(|| format!("no running member {id:x}"))
    }

    fn endpoints(&self) -> String {
        let urls: Vec<_> = self.members.iter().map(|m| m.client_url.clone()).collect();
        urls.join(",")
    }

    /// Stops and forgets member `id`.
    async fn stop(&mut self, id: NodeId) -> anyhow::Result<()> {
        let i = self
            .members
            .iter()
            .position(|m| m.id() == id)
            .with_context(|| format!("no running member {id:x}"))?;
        self.members.remove(i).stop().await
    }

    async fn shutdown(self) -> anyhow::Result<()> {
        for m in self.members {
            m.stop().await?;
        }
        Ok(())
    }
}

/// `etcdctl member list` once `expected` holds for it: a member that was not part of the
/// change's quorum may see it a moment later.
async fn listed_when(
    endpoints: &str,
    what: &str,
    expected: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    eventually(what, || async {
        let out = ok(endpoints, &["member", "list"]).await?;
        Ok(expected(&out).then_some(out))
    })
    .await
}

/// The `Member <id> ... cluster <id>` line etcdctl prints, split into the two hex ids.
fn ids_of_line(out: &str, verb: &str) -> anyhow::Result<(NodeId, u64)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("Member ") && l.contains(verb))
        .with_context(|| format!("no 'Member ... {verb}' line in {out:?}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let member = NodeId::from_str_radix(words.get(1).context("member id")?, 16)?;
    let cluster = u64::from_str_radix(words.last().context("cluster id")?, 16)?;
    Ok((member, cluster))
}

/// The value of `KEY="..."` in etcdctl's `member add` output.
fn env_value(out: &str, key: &str) -> anyhow::Result<String> {
    let prefix = format!("{key}=\"");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .with_context(|| format!("no {key} in {out:?}"))
}

/// The rows of an etcdctl table (without borders and header), as trimmed cells.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_with_etcdctl_catches_up_is_promoted_and_another_member_is_removed(
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let e = cluster.endpoints();
    for i in 0..20 {
        ok(&e, &["put", &format!("/m/{i:02}"), "v"]).await?;
    }

    // Every member lists every member, with names and published client URLs.
    let listed = eventually("all client URLs are published", || async {
        let out = ok(&e, &["member", "list", "-w", "table"]).await?;
        let rows = table_rows(&out);
        let published = rows.len() == 3 && rows.iter().all(|r| r[4].starts_with("http://"));
        Ok(published.then_some(rows))
    })
    .await?;
    for m in &cluster.members {
        let row = listed
            .iter()
            .find(|r| r[2] == m.name)
            .with_context(|| format!("{} missing from {listed:?}", m.name))?;
        assert_eq!(
            row[..6],
            [
                format!("{:x}", m.id()),
                "started".to_string(),
                m.name.clone(),
                m.peer_url.clone(),
                m.client_url.clone(),
                "false".to_string()
            ]
        );
    }

    // etcdctl member add --learner: the id is the one derived from the peer URL, and the
    // environment etcdctl prints is enough to start the new member.
    let (peer4, client4, url4) = listeners().await?;
    let out = ok(
        &e,
        &[
            "member",
            "add",
            "n4",
            "--learner",
            &format!("--peer-urls={url4}"),
        ],
    )
    .await?;
    let (id4, _) = ids_of_line(&out, "added")?;
    assert_eq!(id4, member_id(&url4)?);
    assert_eq!(env_value(&out, "ETCD_NAME")?, "n4");
    assert_eq!(env_value(&out, "ETCD_INITIAL_CLUSTER_STATE")?, "existing");
    assert_eq!(env_value(&out, "ETCD_INITIAL_ADVERTISE_PEER_URLS")?, url4);
    let initial_cluster = env_value(&out, "ETCD_INITIAL_CLUSTER")?;
    for m in &cluster.members {
        assert!(initial_cluster.contains(&format!("{}={}", m.name, m.peer_url)));
    }
    assert!(
        initial_cluster.contains(&format!("n4={url4}")),
        "{initial_cluster}"
    );
    // Not started yet.
    let unstarted = format!("{id4:x}, unstarted, , {url4}, , true");
    listed_when(&e, "n4 is listed as an unstarted learner", |out| {
        out.contains(&unstarted)
    })
    .await?;

    // Start it as etcd would be started from that output.
    let mut cfg = ClusterConfig::new(
        "n4",
        cluster.root.path().join("n4"),
        &url4,
        &initial_cluster,
    )?;
    cfg.initial_cluster_state = InitialClusterState::Existing;
    let n4 = Member::start(cfg, peer4, client4).await?;
    assert_eq!(n4.id(), id4);
    // It catches up: its local (serializable) state holds every key written before.
    eventually("n4 catches up", || async {
        let range = n4
            .store
            .range_prefix_with(b"/m/", ReadConsistency::Serializable)
            .await?;
        Ok((range.kvs.len() == 20).then_some(()))
    })
    .await?;
    assert_eq!(
        ok(
            &n4.client_url,
            &["get", "/m/07", "--consistency=s", "--print-value-only"]
        )
        .await?,
        "v\n"
    );

    // Promote: refused until the leader has seen it catch up, then done.
    let hex4 = format!("{id4:x}");
    let out = eventually("the learner is promoted", || async {
        let (done, out, err) = etcdctl(&e, &["member", "promote", &hex4]).await?;
        if !done {
            assert!(
                err.contains("can only promote a learner member which is in sync with leader"),
                "{err}"
            );
        }
        Ok(done.then_some(out))
    })
    .await?;
    assert_eq!(ids_of_line(&out, "promoted")?.0, id4);
    // n4 published its name and client URL itself.
    let expected = format!("{hex4}, started, n4, {url4}, {}, false", n4.client_url);
    eventually("n4 is listed as a started voter", || async {
        Ok(ok(&e, &["member", "list"])
            .await?
            .contains(&expected)
            .then_some(()))
    })
    .await?;
    let (promoted_again, _, err) = etcdctl(&e, &["member", "promote", &hex4]).await?;
    assert!(
        !promoted_again && err.contains("can only promote a learner member"),
        "{err}"
    );
    cluster.members.push(n4);

    // Remove a member that is not the leader (through another member); the rest keep working.
    let leader = cluster.leader().await?;
    let gone = cluster
        .members
        .iter()
        .map(Member::id)
        .find(|id| *id != leader && *id != id4)
        .context("a follower")?;
    let via = cluster.member(leader)?.client_url.clone();
    let out = ok(&via, &["member", "remove", &format!("{gone:x}")]).await?;
    assert_eq!(ids_of_line(&out, "removed")?.0, gone);
    // The removed follower may never receive the entry that removes it; it finds out by asking
    // the others once no leader talks to it any more.
    let gone_store = cluster.member(gone)?.store.clone();
    eventually("the removed follower knows it was removed", || async {
        Ok(gone_store.members().removed.then_some(()))
    })
    .await?;
    cluster.stop(gone).await?;
    let e = cluster.endpoints();
    ok(&cluster.member(id4)?.client_url, &["put", "/m/after", "x"]).await?;
    for m in &cluster.members {
        assert_eq!(
            ok(&m.client_url, &["get", "/m/after", "--print-value-only"]).await?,
            "x\n"
        );
    }
    let (again, _, err) = etcdctl(&e, &["member", "remove", &format!("{gone:x}")]).await?;
    assert!(!again && err.contains("member not found"), "{err}");

    // endpoint status --cluster: the endpoints come from the published client URLs.
    let out = ok(&e, &["endpoint", "status", "--cluster", "-w", "table"]).await?;
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 3, "{out}");
    let leaders: Vec<_> = rows.iter().filter(|r| r[4] == "true").collect();
    assert_eq!(leaders.len(), 1, "{out}");
    for m in &cluster.members {
        let row = rows
            .iter()
            .find(|r| r[0] == m.client_url)
            .with_context(|| format!("{} missing: {out}", m.client_url))?;
        assert_eq!(row[1], format!("{:x}", m.id()));
        assert!(row[2].starts_with("3.5.0"), "{out}");
        assert_eq!(row[5], "false", "nobody is a learner: {out}");
        assert_eq!(row[4] == "true", m.id() == leader, "{out}");
    }
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_makes_it_step_down_and_the_others_elect_a_new_one(
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start().await?;
    let old = cluster.leader().await?;
    let old_term = cluster.member(old)?.store.members().term;
    ok(&cluster.endpoints(), &["put", "/l/before", "1"]).await?;
    let via = cluster.member(old)?.client_url.clone();
    let out = ok(&via, &["member", "remove", &format!("{old:x}")]).await?;
    assert_eq!(ids_of_line(&out, "removed")?.0, old);

    // The old leader commits its own removal and steps down; the rest elect a new leader.
    let old_store = cluster.member(old)?.store.clone();
    eventually("the removed leader steps down", || async {
        let s = old_store.members();
        Ok((s.me().is_none() && s.leader != Some(old) && s.removed).then_some(()))
    })
    .await?;
    cluster.stop(old).await?;
    let new = cluster.leader().await?;
    assert_ne!(new, old);
    assert!(cluster.member(new)?.store.members().term > old_term);
    let e = cluster.endpoints();
    ok(&e, &["put", "/l/after", "2"]).await?;
    assert_eq!(
        ok(&e, &["get", "/l/before", "--print-value-only"]).await?,
        "1\n"
    );
    let listed = listed_when(&e, "two members are listed", |out| out.lines().count() == 2).await?;
    assert!(!listed.contains(&format!("{old:x},")), "{listed}");
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_started_with_join_is_added_catches_up_and_becomes_a_voter() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start().await?;
    ok(&cluster.endpoints(), &["put", "/j/k", "before-join"]).await?;
    // Join through a follower: its "not leader" answer carries the leader's URL.
    let leader = cluster.leader().await?;
    let via = cluster
        .members
        .iter()
        .find(|m| m.id() != leader)
        .map(|m| m.peer_url.clone())
        .context("a follower")?;
    let (peer4, client4, url4) = listeners().await?;
    let cfg = ClusterConfig::join("n4", cluster.root.path().join("n4"), &url4, &via)?;
    let n4 = Member::start(cfg, peer4, client4).await?;
    assert_eq!(n4.id(), member_id(&url4)?);
    n4.store.wait_until_voter(WAIT).await?;
    assert_eq!(
        ok(&n4.client_url, &["get", "/j/k", "--print-value-only"]).await?,
        "before-join\n"
    );
    cluster.members.push(n4);
    let e = cluster.endpoints();
    let out = eventually(
        "n4 is listed as a started voter with its client URL",
        || async {
            let out = ok(&e, &["member", "list"]).await?;
            let expected = format!(
                "{:x}, started, n4, {url4}, {}, false",
                member_id(&url4)?,
                cluster.members[3].client_url
            );
            Ok(out.contains(&expected).then_some(out))
        },
    )
    .await?;
    assert_eq!(out.lines().count(), 4, "{out}");
    // A four-voter cluster tolerates one failure: stop a member that is not n4.
    let id4 = member_id(&url4)?;
    let other = cluster
        .members
        .iter()
        .map(Member::id)
        .find(|id| *id != id4)
        .context("another member")?;
    cluster.stop(other).await?;
    cluster.leader().await?;
    ok(&cluster.endpoints(), &["put", "/j/k", "after"]).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_never_starts_stays_a_learner_and_cannot_be_promoted() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let e = cluster.endpoints();
    // Nothing listens there.
    let ghost = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", ghost.local_addr()?);
    drop(ghost);
    let out = ok(
        &e,
        &["member", "add", "ghost", &format!("--peer-urls={url}")],
    )
    .await?;
    let (id, _) = ids_of_line(&out, "added")?;
    // It does not count for quorum: writes go on as before.
    ok(&e, &["put", "/g/k", "v"]).await?;
    let unstarted = format!("{id:x}, unstarted, , {url}, , true");
    listed_when(&e, "the ghost is listed as an unstarted learner", |out| {
        out.contains(&unstarted)
    })
    .await?;
    let (promoted, _, err) = etcdctl(&e, &["member", "promote", &format!("{id:x}")]).await?;
    assert!(!promoted, "a learner that never ran was promoted");
    assert!(
        err.contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    let (added, _, err) = etcdctl(
        &e,
        &[
            "member",
            "add",
            "dup",
            &format!("--peer-urls={}", cluster.members[0].peer_url),
        ],
    )
    .await?;
    assert!(!added && err.contains("Peer URLs already exists"), "{err}");
    ok(&e, &["member", "remove", &format!("{id:x}")]).await?;
    listed_when(&e, "the ghost is gone", |out| out.lines().count() == 3).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_every_write_and_serves_serializable_reads_alone() -> anyhow::Result<()>
{
    let mut cluster = Cluster::start().await?;
    let leader = cluster.leader().await?;
    let follower = cluster
        .members
        .iter()
        .find(|m| m.id() != leader)
        .map(|m| (m.id(), m.client_url.clone()))
        .context("a follower")?;
    let (fid, f) = follower;
    // Put, txn, delete and compact sent to a follower all reach the leader.
    ok(&f, &["put", "/f/a", "1"]).await?;
    ok(&f, &["put", "/f/b", "2"]).await?;
    let (done, out, err) = {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([&format!("--endpoints={f}"), "txn"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut input = child.stdin.take().context("stdin")?;
        tokio::io::AsyncWriteExt::write_all(
            &mut input,
            b"value(\"/f/a\") = \"1\"\n\nput /f/c 3\n\nput /f/c failed\n\n",
        )
        .await?;
        drop(input);
        let out = tokio::time::timeout(WAIT, child.wait_with_output()).await??;
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(done && out.starts_with("SUCCESS"), "{out}{err}");
    assert_eq!(ok(&f, &["del", "/f/b"]).await?, "1\n");
    let revision = cluster.member(leader)?.store.revision();
    assert_eq!(
        ok(&f, &["compact", &revision.to_string()]).await?.trim(),
        format!("compacted revision {revision}")
    );
    let leader_url = cluster.member(leader)?.client_url.clone();
    assert_eq!(
        ok(&leader_url, &["get", "/f/c", "--print-value-only"]).await?,
        "3\n"
    );

    // Without a quorum, the follower still answers serializable reads from its own state,
    // while linearizable ones fail.
    let others: Vec<NodeId> = cluster
        .members
        .iter()
        .map(Member::id)
        .filter(|id| *id != fid)
        .collect();
    for id in others {
        cluster.stop(id).await?;
    }
    assert_eq!(
        ok(
            &f,
            &["get", "/f/a", "--consistency=s", "--print-value-only"]
        )
        .await?,
        "1\n"
    );
    let (linearizable, _, _) = etcdctl(&f, &["get", "/f/a", "--command-timeout=3s"]).await?;
    assert!(
        !linearizable,
        "a linearizable read succeeded without a quorum"
    );
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_removed_before_its_promotion_finds_out_it_was_removed() -> anyhow::Result<()> {
    let cluster = Cluster::start().await?;
    let e = cluster.endpoints();
    ok(&e, &["put", "/l/k", "v"]).await?;
    let (peer, client, url) = listeners().await?;
    let out = ok(
        &e,
        &[
            "member",
            "add",
            "n5",
            "--learner",
            &format!("--peer-urls={url}"),
        ],
    )
    .await?;
    let (id, _) = ids_of_line(&out, "added")?;
    let mut cfg = ClusterConfig::new(
        "n5",
        cluster.root.path().join("n5"),
        &url,
        &env_value(&out, "ETCD_INITIAL_CLUSTER")?,
    )?;
    cfg.initial_cluster_state = InitialClusterState::Existing;
    let n5 = Member::start(cfg, peer, client).await?;
    eventually("the learner catches up", || async {
        Ok(n5
            .store
            .get_with(b"/l/k", ReadConsistency::Serializable)
            .await?
            .map(|_| ()))
    })
    .await?;
    // Removed while still a learner: the leader stops replicating to it and it never campaigns,
    // so it still believes in its old leader; it must find out by asking.
    ok(&e, &["member", "remove", &format!("{id:x}")]).await?;
    eventually("the removed learner knows it was removed", || async {
        Ok(n5.store.members().removed.then_some(()))
    })
    .await?;
    n5.stop().await?;
    ok(&e, &["put", "/l/after", "x"]).await?;
    cluster.shutdown().await
}
