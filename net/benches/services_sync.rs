//! Programs 10,000 Services x 5 endpoints into a table in a throwaway network namespace,
//! then changes one endpoint with all 10,000 present, and prints how long each sync took.
//! Run as root: `cargo bench -p net --bench services_sync`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use net::services::{self, Endpoint, Protocol, ProxyConfig, ServicePort, ServiceSpec};
use net::{run_in_netns, NetnsManager};
use nix::mount::{umount2, MntFlags};

const SERVICES: u32 = 10_000;
const ENDPOINTS: u32 = 5;

/// Unmounts the namespace and removes its directory on drop, also after a panic.
struct Scratch(PathBuf, PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        while umount2(&self.1, MntFlags::MNT_DETACH).is_ok() {}
        while umount2(&self.0.join("netns"), MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn services(changed: bool) -> Vec<(ServiceSpec, Vec<Endpoint>)> {
    (0..SERVICES)
        .map(|i| {
            let spec = ServiceSpec {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i)),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: None,
                }],
                session_affinity_timeout: None,
            };
            let eps = (0..ENDPOINTS)
                .map(|e| Endpoint {
                    ip: Ipv4Addr::from(0x0af4_0000 + i * ENDPOINTS + e),
                    port: 8080,
                    port_name: "http".into(),
                    ready: !(changed && i == 0 && e == 0),
                })
                .collect();
            (spec, eps)
        })
        .collect()
}

fn main() {
    let base = PathBuf::from(format!("/run/capstan-svcbench-{:08x}", std::process::id()));
    let netns = NetnsManager::new(base.join("netns")).expect("netns root");
    let ns = netns.create("node").expect("netns");
    let _scratch = Scratch(base, ns.clone());
    let cfg = ProxyConfig {
        table: "capstan-bench".into(),
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        node_ips: vec![],
    };
    let (full, changed) = (services(false), services(true));
    let report = run_in_netns(&ns, move || {
        let mut lines = Vec::new();
        for (what, input) in [
            ("initial sync", &full),
            ("one endpoint not ready", &changed),
            ("no change", &changed),
        ] {
            let start = Instant::now();
            let stats = services::sync_services(&cfg, input).expect("sync");
            lines.push(format!(
                "{what:<24} {:>8.0} ms  ({} service ports, {} endpoints)",
                start.elapsed().as_secs_f64() * 1e3,
                stats.service_ports,
                stats.endpoints
            ));
        }
        let start = Instant::now();
        services::teardown(&cfg).expect("teardown");
        lines.push(format!(
            "{:<24} {:>8.0} ms",
            "teardown",
            start.elapsed().as_secs_f64() * 1e3
        ));
        lines
    })
    .expect("enter netns");
    println!("{SERVICES} Services x {ENDPOINTS} endpoints:");
    for line in report {
        println!("  {line}");
    }
}
