//! Times the Service proxy in a throwaway network namespace, at 1,000 and 10,000 Services x
//! 5 endpoints: the first (full) sync, one endpoint turning unready, adding and deleting one
//! Service, and a sync with nothing changed. Each figure is the median of several runs of a
//! [`ServiceProxy`] sync (finding the changed Services, planning, diffing and `nft`
//! together), with the Services spread over the proxy's shard tables. Run as root:
//! `cargo bench -p net --bench services_sync`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use net::services::{self, Endpoint, Protocol, ProxyConfig, ServicePort, ServiceSpec};
use net::{run_in_netns, NetnsManager, ServiceProxy};
use nix::mount::{umount2, MntFlags};

const ENDPOINTS: u32 = 5;
/// Repetitions of each incremental figure.
const REPS: usize = 9;

/// Unmounts the namespace and removes its directory on drop, also after a panic.
struct Scratch(PathBuf, PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        while umount2(&self.1, MntFlags::MNT_DETACH).is_ok() {}
        while umount2(&self.0.join("netns"), MntFlags::MNT_DETACH).is_ok() {}
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Service `i`: cluster IP 10.96.x.y, endpoints 10.244.x.y (5 per Service).
fn service(i: u32, unready: bool) -> (ServiceSpec, Vec<Endpoint>) {
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
            ready: !(unready && e == 0),
        })
        .collect();
    (spec, eps)
}

fn services(n: u32) -> Vec<(ServiceSpec, Vec<Endpoint>)> {
    (0..n).map(|i| service(i, false)).collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One timed sync.
fn timed(
    proxy: &mut ServiceProxy,
    cfg: &ProxyConfig,
    input: &[(ServiceSpec, Vec<Endpoint>)],
    full: bool,
) -> Duration {
    let start = Instant::now();
    let stats = proxy.sync(cfg, input).expect("sync");
    let took = start.elapsed();
    assert_eq!(stats.full_sync, full, "unexpected kind of sync");
    took
}

/// Medians for `n` Services: first sync, one endpoint unready, service added, service
/// deleted, nothing changed.
fn measure(cfg: &ProxyConfig, n: u32, first_reps: usize) -> [Duration; 5] {
    let base = services(n);
    let mut firsts = Vec::new();
    let mut proxy = ServiceProxy::new();
    for _ in 0..first_reps {
        services::teardown(cfg).expect("teardown");
        proxy = ServiceProxy::new();
        firsts.push(timed(&mut proxy, cfg, &base, true));
    }
    let mut current = base.clone();
    let mut endpoint = Vec::new();
    for rep in 0..REPS {
        // A different Service each time; put it back (untimed) afterwards.
        let i = (rep as u32 * 7919) % n;
        current[i as usize] = service(i, true);
        endpoint.push(timed(&mut proxy, cfg, &current, false));
        current[i as usize] = service(i, false);
        timed(&mut proxy, cfg, &current, false);
    }
    let (mut added, mut deleted) = (Vec::new(), Vec::new());
    for rep in 0..REPS {
        current.push(service(n + rep as u32, false));
        added.push(timed(&mut proxy, cfg, &current, false));
        current.pop();
        deleted.push(timed(&mut proxy, cfg, &current, false));
    }
    let unchanged = (0..REPS)
        .map(|_| timed(&mut proxy, cfg, &current, false))
        .collect();
    [
        median(firsts),
        median(endpoint),
        median(added),
        median(deleted),
        median(unchanged),
    ]
}

/// Runs this benchmark and prints its table.
pub fn main() {
    let base = PathBuf::from(format!("/run/capstan-svcbench-{:08x}", std::process::id()));
    let netns = NetnsManager::new(base.join("netns")).expect("netns root");
    let ns = netns.create("node").expect("netns");
    let _scratch = Scratch(base, ns.clone());
    let cfg = ProxyConfig {
        table: "capstan-bench".into(),
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        node_ips: vec![],
    };
    let rows = run_in_netns(&ns, move || {
        let rows =
            [(1_000, 5), (10_000, 3)].map(|(n, first_reps)| (n, measure(&cfg, n, first_reps)));
        services::teardown(&cfg).expect("teardown");
        rows
    })
    .expect("enter netns");
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!(
        "Service proxy sync, {ENDPOINTS} endpoints per Service, {} shard tables, medians ({REPS} runs; first sync 5 / 3 runs):",
        services::plan::SHARDS
    );
    println!(
        "  {:>9}  {:>12}  {:>16}  {:>12}  {:>14}  {:>10}",
        "Services", "first sync", "endpoint unready", "service add", "service delete", "no change"
    );
    for (n, [first, endpoint, added, deleted, unchanged]) in rows {
        println!(
            "  {n:>9}  {:>12}  {:>16}  {:>12}  {:>14}  {:>10}",
            ms(first),
            ms(endpoint),
            ms(added),
            ms(deleted),
            ms(unchanged)
        );
    }
}
