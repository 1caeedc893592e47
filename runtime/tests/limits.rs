//! cgroup limits on real containers: a memory limit ends an over-allocating container as
//! `OOMKilled`, and a pids limit caps a fork bomb while the container keeps running.

mod common;

use std::time::{Duration, Instant};

use common::{is_running, Harness};
use runtime::{ContainerState, Resources};

/// Reads the first cgroup file named `file` among the container's cgroup dirs.
fn cgroup_value(h: &Harness, id: &str, file: &str) -> Option<String> {
    h.cgroup_dirs(id)
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
        .map(|s| s.trim().to_owned())
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() -> anyhow::Result<()> {
    let mut h = Harness::new()?;
    // The shell keeps the 64 MiB command output in memory; the limit is 16 MiB.
    let spec = h.spec(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ],
    );
    let limits = Resources {
        memory_limit_bytes: Some(16 << 20),
        ..Default::default()
    };
    h.rt().start_container_with(&spec, &limits)?;
    let status = h.wait_exited(&spec.id, Duration::from_secs(30))?;
    match &status.state {
        ContainerState::Exited {
            exit_code, reason, ..
        } => {
            assert_eq!(reason, "OOMKilled", "exit code {exit_code}");
            assert_eq!(*exit_code, 137);
        }
        other => anyhow::bail!("container did not exit: {other:?}"),
    }
    let log = std::fs::read_to_string(&status.log_path)?;
    assert!(!log.contains("survived"), "log: {log}");
    Ok(())
}

#[test]
fn a_pids_limit_caps_a_fork_bomb_and_the_container_keeps_running() -> anyhow::Result<()> {
    let mut h = Harness::new()?;
    // The subshell forks until the limit refuses; then pid 1 becomes a long sleep (exec, no
    // fork), so the container outlives the bomb.
    let spec = h.spec(
        "bomb",
        &[
            "sh",
            "-c",
            "(while true; do sleep 1000 & done); echo bomb-capped; exec sleep 1000",
        ],
    );
    let limits = Resources {
        pids_limit: Some(16),
        cpu_request_millis: Some(100),
        cpu_limit_millis: Some(500),
        ..Default::default()
    };
    h.rt().start_container_with(&spec, &limits)?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = std::fs::read_to_string(h.rt().log_path(&spec.id)).unwrap_or_default();
        if log.contains("bomb-capped") {
            break log;
        }
        anyhow::ensure!(Instant::now() < deadline, "bomb never capped; log: {log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(log.contains("can't fork"), "log: {log}");
    let status = h
        .rt()
        .container_status(&spec.id)?
        .ok_or_else(|| anyhow::anyhow!("container vanished"))?;
    assert!(is_running(&status.state).is_some(), "{:?}", status.state);
    assert_eq!(
        cgroup_value(&h, &spec.id, "pids.max").as_deref(),
        Some("16")
    );
    let current: u64 = cgroup_value(&h, &spec.id, "pids.current")
        .ok_or_else(|| anyhow::anyhow!("no pids.current"))?
        .parse()?;
    assert!((2..=16).contains(&current), "pids.current {current}");
    // The cpu limits reached the cgroup too (v1 names).
    assert_eq!(
        cgroup_value(&h, &spec.id, "cpu.cfs_quota_us").as_deref(),
        Some("50000")
    );
    assert_eq!(
        cgroup_value(&h, &spec.id, "cpu.shares").as_deref(),
        Some("102")
    );

    h.rt().stop_container(&spec.id, Duration::ZERO)?;
    let status = h.wait_exited(&spec.id, Duration::from_secs(20))?;
    assert!(status.state.is_exited(), "{:?}", status.state);
    Ok(())
}
