//! Capstan's runtime path (agent side + shim + libcontainer) against Debian's `runc` on the
//! same busybox image, alternating round by round in one run, so both see the same machine:
//!
//! - cycle: `true` from create to exit to delete. Capstan: `start_container`, poll
//!   `container_status` every 1 ms until exited, `remove_container`. runc: one
//!   `runc run --bundle B id` (create, start, wait, delete in one process: runc's cheapest way
//!   to the same work, as Capstan's single shim does all four too).
//! - pod start: a new pod network namespace (`net::NetnsManager`, the pod sandbox) plus one
//!   `sleep` container, until its process has exec'd (`/proc/<pid>/comm` is `sleep`). runc:
//!   the same namespace, its config.json written, `runc run -d`.
//! - burst: [`BURST`] such pods started at once from as many threads, until all run.
//!
//! The runc bundle is built from the same image layer (an overlay mounted once) and the same
//! OCI spec Capstan generates (`bundle::build_spec`: namespaces incl. network, caps, mounts,
//! `terminal: false`), with its own cgroup path. Everything lives under one temp root that a
//! guard cleans up, also on panic: containers are stopped by id, only ours are killed.
//! Run as root: `cargo bench -p runtime --bench vs_runc` (`VS_RUNC_ROUNDS`, `VS_RUNC_PODS`;
//! `VS_RUNC_SHIM` runs another shim executable).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime};

use net::NetnsManager;
use runtime::layout::ContainerPaths;
use runtime::state::ShimState;
use runtime::{ContainerSpec, ContainerState, Resources, Runtime, RuntimeConfig};

const SHIM: &str = env!("CARGO_BIN_EXE_capstan-runtime-shim");
const RUNC: &str = "runc";
/// Target from the issue: Capstan's cycle at most this fraction of runc's.
const TARGET: f64 = 0.6;
const POLL: Duration = Duration::from_millis(1);
const BURST: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Everything the bench created; dropping it removes all of it.
struct Bench {
    dir: tempfile::TempDir,
    tag: String,
    rt: Runtime,
    netns: NetnsManager,
    runc_root: PathBuf,
    runc_rootfs: PathBuf,
    image: runtime::Image,
    capstan_ids: Mutex<Vec<String>>,
    pod_uids: Mutex<Vec<String>>,
    runc_ids: Mutex<Vec<String>>,
    netns_names: Mutex<Vec<String>>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("capstan-vs-runc-")
            .tempdir()
            .unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("capstan-vs-runc-")
            .to_lowercase();
        let root = dir.path().join("capstan");
        let rt = Runtime::new(RuntimeConfig {
            root: root.clone(),
            // Overridable to compare shim builds under one agent side.
            shim_exe: std::env::var_os("VS_RUNC_SHIM")
                .map_or_else(|| PathBuf::from(SHIM), PathBuf::from),
        })
        .unwrap();
        let netns = NetnsManager::new(dir.path().join("netns")).unwrap();
        let runc_root = dir.path().join("runc-state");
        std::fs::create_dir_all(&runc_root).unwrap();
        let runc_rootfs = dir.path().join("runc-rootfs");
        let archive = dir.path().join("busybox.tar");
        runtime::busybox::build_image_archive(
            Path::new("/bin/busybox"),
            &archive,
            "busybox:latest",
        )
        .unwrap();
        rt.images().import_archive(&archive, None).unwrap();
        let image = rt.images().resolve("busybox").unwrap();
        let bench = Bench {
            tag,
            rt,
            netns,
            runc_root,
            runc_rootfs,
            image,
            capstan_ids: Mutex::default(),
            pod_uids: Mutex::default(),
            runc_ids: Mutex::default(),
            netns_names: Mutex::default(),
            dir,
        };
        // runc's root filesystem: an overlay of the very layer Capstan unpacked, mounted once.
        let lowers = bench.rt.images().layer_dirs(&bench.image).unwrap();
        let base = bench.dir.path().join("runc-overlay");
        runtime::rootfs::mount_overlay(
            &lowers,
            &base.join("upper"),
            &base.join("work"),
            &bench.runc_rootfs,
        )
        .unwrap();
        bench
    }

    fn spec(
        &self,
        pod: &str,
        name: &str,
        command: &[&str],
        netns: Option<PathBuf>,
    ) -> ContainerSpec {
        let id = format!("{}-{name}", self.tag);
        let pod_uid = format!("bench-{}-{pod}", self.tag);
        self.capstan_ids.lock().unwrap().push(id.clone());
        {
            let mut uids = self.pod_uids.lock().unwrap();
            if !uids.contains(&pod_uid) {
                uids.push(pod_uid.clone());
            }
        }
        ContainerSpec {
            id,
            pod_uid,
            pod_namespace: "bench".into(),
            pod_name: pod.into(),
            container_name: name.into(),
            image: "busybox".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            hostname: "bench".into(),
            netns_path: netns,
            ..Default::default()
        }
    }

    /// Writes a runc bundle for `spec`: Capstan's own OCI spec, rootfs swapped for runc's
    /// overlay, cgroup under `/capstan-bench-<tag>/`.
    fn runc_bundle(&self, spec: &ContainerSpec) -> PathBuf {
        let mut oci = runtime::bundle::build_spec(
            spec,
            &Resources::default(),
            &self.image.config,
            &self.runc_rootfs,
        )
        .unwrap();
        let mut linux = oci.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(format!(
            "/capstan-bench-{}/{}",
            self.tag, spec.id
        ))));
        oci.set_linux(Some(linux));
        let bundle = self.dir.path().join("runc-bundles").join(&spec.id);
        std::fs::create_dir_all(&bundle).unwrap();
        runtime::bundle::write_config(&oci, &bundle).unwrap();
        bundle
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new(RUNC);
        cmd.arg("--root")
            .arg(&self.runc_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn new_netns(&self, name: &str) -> PathBuf {
        let name = format!("{}-{name}", self.tag);
        self.netns_names.lock().unwrap().push(name.clone());
        self.netns.create(&name).unwrap()
    }

    /// One Capstan cycle of `true`; returns its time and the phase split.
    fn capstan_cycle(&self, round: usize) -> (Duration, Phases) {
        let spec = self.spec("cycle", &format!("cycle-{round}"), &["true"], None);
        let wall0 = SystemTime::now();
        let t0 = Instant::now();
        let mut status = self.rt.start_container(&spec).unwrap();
        let returned = t0.elapsed();
        while !status.state.is_exited() {
            std::thread::sleep(POLL);
            status = self.rt.container_status(&spec.id).unwrap().unwrap();
        }
        let observed = t0.elapsed();
        match &status.state {
            ContainerState::Exited { exit_code: 0, .. } => {}
            other => panic!("capstan cycle {round}: {other:?}"),
        }
        let state = ShimState::load(&ContainerPaths::new(self.rt.root(), &spec.id).state).unwrap();
        self.rt.remove_container(&spec.id).unwrap();
        let total = t0.elapsed();
        let since = |stamp: &Option<String>| -> Duration {
            let at = chrono::DateTime::parse_from_rfc3339(stamp.as_deref().unwrap()).unwrap();
            let at = SystemTime::from(at);
            at.duration_since(wall0).unwrap_or_default()
        };
        let created = since(&Some(state.created_at.clone()));
        let started = since(&state.started_at);
        let finished = since(&state.finished_at);
        let phases = Phases(vec![
            ("prepare (resolve, overlay, config)", created),
            (
                "shim spawn + libcontainer create/start",
                started.saturating_sub(created),
            ),
            ("run `true` + reap", finished.saturating_sub(started)),
            (
                "delete + exit record + detection",
                observed.saturating_sub(finished),
            ),
            ("remove (unmount, rm)", total.saturating_sub(observed)),
            ("(start_container returned at)", returned),
        ]);
        (total, phases)
    }

    fn runc_cycle(&self, bundle: &Path) -> Duration {
        let id = format!("{}-runc-cycle", self.tag);
        {
            let mut ids = self.runc_ids.lock().unwrap();
            if !ids.contains(&id) {
                ids.push(id.clone());
            }
        }
        let t0 = Instant::now();
        let status = self
            .runc()
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .status()
            .unwrap();
        let took = t0.elapsed();
        assert!(status.success(), "runc run: {status}");
        took
    }

    /// Pod sandbox + one sleeping container, until its process runs.
    fn capstan_pod(&self, name: &str) -> Duration {
        let t0 = Instant::now();
        let ns = self.new_netns(name);
        let spec = self.spec(name, &format!("{name}-main"), &["sleep", "3600"], Some(ns));
        let status = self.rt.start_container(&spec).unwrap();
        let ContainerState::Running { pid, .. } = status.state else {
            panic!("capstan pod {name}: {:?}", status.state);
        };
        wait_exec(pid, "sleep");
        t0.elapsed()
    }

    fn runc_pod(&self, name: &str, template: &ContainerSpec) -> Duration {
        let id = format!("{}-runc-{name}", self.tag);
        self.runc_ids.lock().unwrap().push(id.clone());
        let t0 = Instant::now();
        let ns = self.new_netns(&format!("runc-{name}"));
        let spec = ContainerSpec {
            id: id.clone(),
            netns_path: Some(ns),
            ..template.clone()
        };
        let bundle = self.runc_bundle(&spec);
        let pid_file = bundle.join("pid");
        let status = self
            .runc()
            .args(["run", "-d", "--pid-file"])
            .arg(&pid_file)
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id)
            .status()
            .unwrap();
        assert!(status.success(), "runc run -d {id}: {status}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        wait_exec(pid, "sleep");
        t0.elapsed()
    }

    fn stop_capstan_pods(&self) {
        let ids: Vec<String> = std::mem::take(&mut *self.capstan_ids.lock().unwrap());
        parallel(&ids, |id| {
            self.rt.stop_container(id, Duration::ZERO).unwrap();
            self.rt.remove_container(id).unwrap();
        });
        for uid in std::mem::take(&mut *self.pod_uids.lock().unwrap()) {
            self.rt.remove_pod_cgroup(&uid).unwrap();
        }
        self.delete_netns();
    }

    fn stop_runc_pods(&self) {
        let ids: Vec<String> = std::mem::take(&mut *self.runc_ids.lock().unwrap());
        parallel(&ids, |id| {
            let _ = self.runc().args(["delete", "--force", id]).status();
        });
        self.delete_netns();
    }

    fn delete_netns(&self) {
        for name in std::mem::take(&mut *self.netns_names.lock().unwrap()) {
            self.netns.delete(&name).unwrap();
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for id in std::mem::take(&mut *self.runc_ids.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = self.runc().args(["delete", "--force", &id]).status();
        }
        for id in std::mem::take(&mut *self.capstan_ids.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = self.rt.stop_container(&id, Duration::ZERO);
            if let Err(e) = self.rt.remove_container(&id) {
                eprintln!("cleanup of {id} failed: {e}");
            }
        }
        for uid in std::mem::take(&mut *self.pod_uids.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = self.rt.remove_pod_cgroup(&uid);
        }
        for name in std::mem::take(&mut *self.netns_names.lock().unwrap_or_else(|p| p.into_inner()))
        {
            let _ = self.netns.delete(&name);
        }
        // runc removes each container's cgroup on delete; the parent is ours.
        let parent = format!("capstan-bench-{}", self.tag);
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let dir = e.path().join(&parent);
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for c in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&parent));
        // Unmount everything left under the root (runc's overlay, netns root), deepest last
        // mounted first, before the temp dir is deleted.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&root))
            .collect();
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(Path::new(m), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `f` over `items` from a few threads.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let chunk = items.len().div_ceil(8).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let f = &f;
            s.spawn(move || part.iter().for_each(f));
        }
    });
}

/// Waits until `pid` has exec'd `comm` (its init step is over and the program runs).
fn wait_exec(pid: i32, comm: &str) {
    let path = format!("/proc/{pid}/comm");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(&path) {
            Ok(c) if c.trim_end() == comm => return,
            Ok(_) => {}
            Err(e) => panic!("pid {pid} gone before exec of {comm}: {e}"),
        }
        assert!(Instant::now() < deadline, "pid {pid} never exec'd {comm}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Named durations of one Capstan cycle.
struct Phases(Vec<(&'static str, Duration)>);

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(samples: &[Duration]) -> Stats {
    let mut v = samples.to_vec();
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> String {
    format!("{:8.2}", d.as_secs_f64() * 1e3)
}

/// Starts `n` pods at once from `n` threads; returns (wall time until all run, per-pod times).
fn burst(n: usize, start: impl Fn(usize) -> Duration + Sync) -> (Duration, Vec<Duration>) {
    let barrier = Barrier::new(n + 1);
    let mut each = Vec::new();
    let t0 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, start) = (&barrier, &start);
                s.spawn(move || {
                    barrier.wait();
                    start(i)
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        for h in handles {
            each.push(h.join().expect("a pod start panicked"));
        }
        t0
    });
    (t0.elapsed(), each)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_usize("VS_RUNC_ROUNDS", 30).max(1);
    let pods = env_usize("VS_RUNC_PODS", BURST).max(1);
    let bench = Bench::new();
    let runc_cycle_bundle = bench.runc_bundle(&ContainerSpec {
        id: format!("{}-runc-cycle", bench.tag),
        pod_uid: "runc".into(),
        container_name: "cycle".into(),
        image: "busybox".into(),
        command: vec!["true".into()],
        hostname: "bench".into(),
        ..Default::default()
    });
    let pod_template = ContainerSpec {
        pod_uid: "runc".into(),
        container_name: "main".into(),
        image: "busybox".into(),
        command: vec!["sleep".into(), "3600".into()],
        hostname: "bench".into(),
        ..Default::default()
    };

    // Warm-up (page cache, layer unpack, first cgroup dirs); not counted.
    bench.capstan_cycle(usize::MAX);
    bench.runc_cycle(&runc_cycle_bundle);

    let (mut cap_cycle, mut runc_cycle) = (Vec::new(), Vec::new());
    let mut phases: Vec<Phases> = Vec::new();
    let (mut cap_pod, mut runc_pod) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (took, split) = bench.capstan_cycle(round);
        cap_cycle.push(took);
        phases.push(split);
        runc_cycle.push(bench.runc_cycle(&runc_cycle_bundle));
        cap_pod.push(bench.capstan_pod(&format!("pod{round}")));
        bench.stop_capstan_pods();
        runc_pod.push(bench.runc_pod(&format!("pod{round}"), &pod_template));
        bench.stop_runc_pods();
    }

    let (cap_burst, cap_each) = burst(pods, |i| bench.capstan_pod(&format!("burst{i}")));
    bench.stop_capstan_pods();
    let (runc_burst, runc_each) = burst(pods, |i| {
        bench.runc_pod(&format!("burst{i}"), &pod_template)
    });
    bench.stop_runc_pods();

    println!("vs_runc: {rounds} alternating rounds, burst of {pods} pods; times in ms");
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "", "capstan", "p90", "runc", "p90", "ratio"
    );
    let row = |name: &str, c: Stats, r: Stats| {
        let ratio = c.median.as_secs_f64() / r.median.as_secs_f64();
        println!(
            "{name:<44} {} {} {} {} {ratio:6.2}x",
            ms(c.median),
            ms(c.p90),
            ms(r.median),
            ms(r.p90)
        );
        ratio
    };
    let cycle_ratio = row(
        "cycle create->exit->delete (`true`)",
        stats(&cap_cycle),
        stats(&runc_cycle),
    );
    row(
        "pod start (netns + container until exec)",
        stats(&cap_pod),
        stats(&runc_pod),
    );
    let one = |d: Duration| Stats { median: d, p90: d };
    row(
        &format!("{pods} pods at once: until all run"),
        one(cap_burst),
        one(runc_burst),
    );
    row(
        &format!("{pods} pods at once: per-pod start"),
        stats(&cap_each),
        stats(&runc_each),
    );
    println!(
        "cycle target: capstan <= {TARGET:.2}x runc; measured {cycle_ratio:.2}x: {}",
        if cycle_ratio <= TARGET {
            "MET"
        } else {
            "NOT MET"
        }
    );
    println!("capstan cycle by phase (median of {rounds}):");
    for i in 0..phases[0].0.len() {
        let samples: Vec<Duration> = phases.iter().map(|p| p.0[i].1).collect();
        let s = stats(&samples);
        println!(
            "  {:<44} {} (p90 {})",
            phases[0].0[i].0,
            ms(s.median),
            ms(s.p90)
        );
    }
}
