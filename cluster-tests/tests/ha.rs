//! Three `capstan server` processes share one store cluster and elect a leader with a 3 s lease:
//! exactly one holds the lease and runs the scheduler and controllers; every server answers the
//! API. After a `kill -9` of the leader, a standby takes the lease over within the lease
//! duration plus a margin and its controllers act; the agent fails over to a surviving server;
//! the old leader, restarted, stands by. A frozen (SIGSTOP) leader that wakes up after a
//! takeover stops its controllers, and the workload ends with no duplicates from its stale
//! controllers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cluster_tests::{must_eventually, ControlPlane};

const LEASE: Duration = Duration::from_secs(3);

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
        - name: main
          image: busybox:latest
          imagePullPolicy: IfNotPresent
          command: ["sleep", "3600"]
"#
    )
}

fn apply(cp: &ControlPlane, i: usize, manifest: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.yaml");
    std::fs::write(&file, manifest).unwrap();
    cp.must_cli(i, &["apply", "-f", file.to_str().unwrap()]);
}

fn items(cp: &ControlPlane, i: usize, args: &[&str]) -> Vec<serde_json::Value> {
    cp.json(i, args)
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits until every running server agrees on one lease holder whose server runs the
/// scheduler while no other server does; returns the holder's index.
fn one_leader(cp: &ControlPlane, timeout: Duration) -> usize {
    must_eventually(
        timeout,
        "one lease holder running the only scheduler",
        || {
            let running: Vec<usize> = (0..cp.servers.len())
                .filter(|i| cp.servers[*i].running())
                .collect();
            let holders: Vec<Option<String>> = running.iter().map(|i| cp.holder(*i)).collect();
            let holder = holders.first()?.clone()?;
            if holders.iter().any(|h| h.as_deref() != Some(&holder)) {
                return None;
            }
            let leader = cp.index_of(&holder);
            let schedulers: Vec<usize> = running
                .iter()
                .copied()
                .filter(|i| cp.actors(*i).iter().any(|a| a == "scheduler"))
                .collect();
            (schedulers == vec![leader]).then_some(leader)
        },
    )
}

#[test]
fn a_standby_server_takes_the_lease_after_the_leader_is_killed_and_its_controllers_act() {
    let mut cp = ControlPlane::start(3, "3s");
    let leader = one_leader(&cp, Duration::from_secs(60));
    let leader_name = cp.servers[leader].name.clone();
    // Every server serves reads and writes; the lease shows up in `get leases` everywhere.
    for i in 0..3 {
        let table = cp.must_cli(i, &["get", "leases", "-n", "kube-system"]);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("capstan-controller-manager")
                    && l.contains(&format!(" {leader_name} "))),
            "server {i}: {table}"
        );
    }
    let transitions_before = cp.lease(leader).unwrap()["spec"]["leaseTransitions"]
        .as_i64()
        .unwrap_or(0);

    // The agent lists the leader first, so killing it forces the agent to fail over too.
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cp.start_agent("worker", &[leader, others[0], others[1]]);
    apply(&cp, others[0], &deployment("before", 1));
    must_eventually(
        Duration::from_secs(120),
        "deployment before running",
        || {
            let pods = items(&cp, others[1], &["get", "pods", "-l", "app=before"]);
            (pods.len() == 1 && pods[0]["status"]["phase"] == "Running").then_some(())
        },
    );

    let killed_at = Instant::now();
    cp.kill(leader);
    let new_leader = must_eventually(
        LEASE + Duration::from_secs(30),
        "a surviving server to hold the lease",
        || {
            cp.holder(others[0])
                .filter(|h| *h != leader_name)
                .map(|h| cp.index_of(&h))
        },
    );
    let handover = killed_at.elapsed();
    eprintln!("lease hand-over after kill -9 of the leader: {handover:?}");
    assert_ne!(new_leader, leader);
    assert_eq!(one_leader(&cp, Duration::from_secs(30)), new_leader);
    let standby = *others.iter().find(|i| **i != new_leader).unwrap();
    let lease = cp.lease(standby).unwrap();
    assert!(
        lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0) > transitions_before,
        "lease: {lease}"
    );

    // The new leader's controllers act on a Deployment created through the standby's API, and
    // the agent (which talked to the dead leader) runs the pods.
    apply(&cp, standby, &deployment("after", 2));
    must_eventually(
        Duration::from_secs(120),
        "deployment after: a ReplicaSet and 2 running pods",
        || {
            let rs = items(&cp, standby, &["get", "replicasets", "-l", "app=after"]);
            let pods = items(&cp, standby, &["get", "pods", "-l", "app=after"]);
            let running = pods
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            (rs.len() == 1 && pods.len() == 2 && running == 2).then_some(())
        },
    );
    let agent_log = cp.agent_log();
    assert!(
        agent_log.contains("API connection failed over"),
        "agent log:\n{agent_log}"
    );

    // The old leader comes back as a standby and never takes the lease while the new one renews.
    let restarted_log_from = cp.servers[leader].log().len();
    cp.restart(leader);
    std::thread::sleep(LEASE * 3);
    assert_eq!(one_leader(&cp, Duration::from_secs(30)), new_leader);
    let log = cp.servers[leader].log();
    let since_restart = &log[restarted_log_from..];
    assert!(
        !since_restart.contains("leadership acquired"),
        "restarted old leader took the lease:\n{since_restart}"
    );
    assert!(
        since_restart.contains("standing by; another server leads"),
        "old leader log since restart:\n{since_restart}"
    );
}

#[test]
fn a_frozen_leader_that_wakes_up_after_a_takeover_stops_its_controllers_without_duplicating_work() {
    let mut cp = ControlPlane::start(3, "3s");
    let leader = one_leader(&cp, Duration::from_secs(60));
    let leader_name = cp.servers[leader].name.clone();
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();

    cp.freeze(leader);
    let new_leader = must_eventually(
        LEASE + Duration::from_secs(30),
        "a surviving server to hold the lease",
        || {
            cp.holder(others[0])
                .filter(|h| *h != leader_name)
                .map(|h| cp.index_of(&h))
        },
    );
    // Work the frozen leader's controllers will see as watch events when they wake up.
    apply(&cp, others[0], &deployment("frozen", 3));
    must_eventually(
        Duration::from_secs(60),
        "3 pods of deployment frozen",
        || {
            let pods = items(&cp, others[0], &["get", "pods", "-l", "app=frozen"]);
            (pods.len() == 3).then_some(())
        },
    );

    cp.resume(leader);
    must_eventually(
        Duration::from_secs(30),
        "the woken leader to step down",
        || {
            let log = cp.servers[leader].log();
            (log.contains("leadership lost; control plane stopped")
                && !cp.actors(leader).iter().any(|a| a == "scheduler"))
            .then_some(())
        },
    );
    assert_eq!(one_leader(&cp, Duration::from_secs(30)), new_leader);
    for line in cp.servers[leader]
        .log()
        .lines()
        .filter(|l| l.contains("leadership") || l.contains("fence") || l.contains("pod bound"))
    {
        eprintln!("woken leader: {line}");
    }
    // Give any stale write time to land (it must not), then count.
    std::thread::sleep(LEASE);
    let rs = items(&cp, new_leader, &["get", "replicasets", "-l", "app=frozen"]);
    let pods = items(&cp, new_leader, &["get", "pods", "-l", "app=frozen"]);
    assert_eq!(rs.len(), 1, "replicasets: {rs:?}\n{}", cp.logs());
    assert_eq!(pods.len(), 3, "pods: {pods:?}\n{}", cp.logs());
}
