//! Container confinement for real (as root): by default no_new_privs and the default seccomp
//! filter (namespace creation refused), unconfined on request; user and group, a read-only
//! root filesystem, capabilities dropped; a missing seccomp profile refuses to start.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::Harness;
use runtime::{ContainerSpec, ContainerState, Seccomp, Security};

/// Runs `script` in a container with `security` and returns (exit code, log).
fn run(
    h: &mut Harness,
    name: &str,
    security: Security,
    script: &str,
) -> anyhow::Result<(i32, String)> {
    let spec = ContainerSpec {
        security,
        ..h.spec(name, &["sh", "-c", script])
    };
    h.rt().start_container(&spec)?;
    let status = h.wait_exited(&spec.id, Duration::from_secs(10))?;
    let log = std::fs::read_to_string(&status.log_path)?;
    match status.state {
        ContainerState::Exited { exit_code, .. } => Ok((exit_code, log)),
        other => anyhow::bail!("not exited: {other:?}; log: {log}"),
    }
}

#[test]
fn the_default_is_hardened_and_unconfined_is_not() -> anyhow::Result<()> {
    let mut h = Harness::new()?;
    let probe = "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; unshare -U true && echo unshared; true";
    let (code, log) = run(&mut h, "hardened", Security::default(), probe)?;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("Seccomp:\t2"), "no seccomp filter: {log}");
    assert!(
        !log.contains("unshared"),
        "namespace creation allowed: {log}"
    );

    let open = Security {
        seccomp: Seccomp::Unconfined,
        no_new_privileges: false,
        ..Security::default()
    };
    let (code, log) = run(&mut h, "open", open, probe)?;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("NoNewPrivs:\t0"), "{log}");
    assert!(log.contains("Seccomp:\t0"), "{log}");
    assert!(log.contains("unshared"), "{log}");
    Ok(())
}

#[test]
fn user_read_only_root_and_dropped_capabilities_apply() -> anyhow::Result<()> {
    let mut h = Harness::new()?;
    let sec = Security {
        user: Some(1000),
        group: Some(2000),
        supplemental_groups: vec![3000],
        read_only_rootfs: true,
        capabilities_drop: vec!["NET_RAW".into(), "CHOWN".into()],
        ..Security::default()
    };
    let script = "echo ids=$(id -u):$(id -g):$(id -G); grep -E '^Cap(Eff|Bnd)' /proc/self/status; \
                  touch /written 2>/dev/null || echo read-only";
    let (code, log) = run(&mut h, "confined", sec, script)?;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("ids=1000:2000:2000 3000"), "{log}");
    assert!(log.contains("read-only"), "{log}");
    // The bounding and effective sets lost CAP_CHOWN (bit 0) and CAP_NET_RAW (bit 13); the
    // bounding set kept CAP_KILL (bit 5).
    let set = |name: &str| {
        log.lines()
            .find_map(|l| l.split(&format!("{name}:\t")).nth(1))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {log}"))
    };
    let (bnd, eff) = (set("CapBnd"), set("CapEff"));
    assert_eq!(bnd & (1 << 0 | 1 << 13), 0, "{log}");
    assert_eq!(eff & (1 << 0 | 1 << 13), 0, "{log}");
    assert_eq!(eff & !bnd, 0, "{log}");
    assert_ne!(bnd & (1 << 5), 0, "{log}");

    let bad = ContainerSpec {
        security: Security {
            seccomp: Seccomp::Profile(h.root.join("absent.json")),
            ..Security::default()
        },
        ..h.spec("badprofile", &["true"])
    };
    let err = h
        .rt()
        .start_container(&bad)
        .expect_err("a missing profile must refuse to start");
    assert!(err.to_string().contains("seccomp profile"), "{err}");
    let unknown = ContainerSpec {
        security: Security {
            capabilities_add: vec!["NOT_A_CAP".into()],
            ..Security::default()
        },
        ..h.spec("badcap", &["true"])
    };
    let err = h
        .rt()
        .start_container(&unknown)
        .expect_err("an unknown capability");
    assert!(err.to_string().contains("NOT_A_CAP"), "{err}");
    let drop_all = ContainerSpec {
        security: Security {
            capabilities_drop: vec!["ALL".into()],
            ..Security::default()
        },
        ..h.spec("dropall", &["true"])
    };
    let err = h
        .rt()
        .start_container(&drop_all)
        .expect_err("drop ALL is refused plainly");
    assert!(err.to_string().contains("CAP_KILL"), "{err}");
    Ok(())
}
