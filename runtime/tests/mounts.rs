//! Volumes as the runtime sees them (as root, real containers): host directories and files
//! bind-mounted read-write and read-only, a mount inside another, and nothing left mounted
//! on the host after removal.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use common::Harness;
use runtime::{BindMount, ContainerState};

#[test]
fn bind_mounts_are_writable_or_read_only_as_asked_and_nest() -> anyhow::Result<()> {
    let mut h = Harness::new()?;
    let vol = h.root.join("volumes");
    let (data, config) = (vol.join("data"), vol.join("config"));
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("app.conf"), "mode=test\n")?;
    let hosts = vol.join("hosts");
    std::fs::write(&hosts, "10.1.2.3 db\n")?;

    let mut spec = h.spec(
        "binds",
        &[
            "sh",
            "-c",
            "echo written > /data/out && cat /data/config/app.conf && grep db /etc/hosts \
             && if echo x > /data/config/new; then echo ro-broken; exit 9; fi",
        ],
    );
    spec.mounts = vec![
        BindMount {
            source: data.clone(),
            destination: "/data".into(),
            read_only: false,
        },
        BindMount {
            source: config.clone(),
            destination: "/data/config".into(),
            read_only: true,
        },
        BindMount {
            source: hosts,
            destination: "/etc/hosts".into(),
            read_only: false,
        },
    ];
    h.rt().start_container(&spec)?;
    let status = h.wait_exited(&spec.id, Duration::from_secs(10))?;
    let log = std::fs::read_to_string(&status.log_path)?;
    match &status.state {
        ContainerState::Exited { exit_code, .. } => {
            assert_eq!(*exit_code, 0, "log: {log}")
        }
        other => anyhow::bail!("expected exited, got {other:?}; log: {log}"),
    }
    assert!(log.contains("mode=test"), "log: {log}");
    assert!(log.contains("10.1.2.3 db"), "log: {log}");
    assert_eq!(std::fs::read_to_string(data.join("out"))?, "written\n");
    assert!(!config.join("new").exists());

    h.rt().remove_container(&spec.id)?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    assert!(
        !mounts.contains(vol.to_str().unwrap_or_default()),
        "a volume is still mounted on the host"
    );
    Ok(())
}
