//! Test harness for end-to-end scenarios: starts real `capstan server` processes on loopback
//! with private data and netns directories, runs the real CLI against them, and cleans up
//! everything it started (pods, shims, network namespaces, processes) also when a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent;
mod control_plane;
mod store;
pub use agent::Agent;
pub use control_plane::{ControlPlane, HaServer};
pub use store::{EndpointStatus, StoreCluster, StoreMember, CONVERGE, ETCDCTL};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `capstan` binary under test: `$CAPSTAN_BIN`, else the workspace's debug build.
pub fn capstan_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAPSTAN_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/capstan");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --bins` before the cluster tests",
        p.display()
    );
    p
}

/// A busybox image archive, built once per test process with `capstan image build-busybox`.
pub fn busybox_archive() -> &'static Path {
    static ARCHIVE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = ARCHIVE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("busybox.tar");
        let out = Command::new(capstan_bin())
            .args(["image", "build-busybox", "-o"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-busybox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (dir, path)
    });
    path
}

/// Polls `f` every 100 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn must_eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `capstan server` process with its own data dir, netns dir and port.
pub struct Server {
    dir: tempfile::TempDir,
    /// The network namespace the server runs in (its "host"), made by the test.
    host_netns: String,
    netns_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    debug: bool,
    listen_ip: String,
    args: Vec<String>,
    /// Node name of this server's agent.
    pub node: String,
}

/// How [`Server::start_with`] sets up a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Serve the debug service.
    pub debug: bool,
    /// A link `uplink` holding this address (/32) in the server's namespace, for a
    /// server that other namespaces reach by that address (see [`Agent::join_routed`]); the
    /// server then listens on all addresses and reports this one as its node's address.
    pub uplink: Option<std::net::Ipv4Addr>,
    /// More `capstan server` flags.
    pub args: Vec<String>,
}

impl Server {
    /// Starts a server (with the debug service when `debug`) and imports the busybox image.
    pub fn start(debug: bool) -> Server {
        Server::start_with(ServerOptions {
            debug,
            uplink: None,
            args: Vec::new(),
        })
    }

    /// Starts a server as `options` say and imports the busybox image.
    pub fn start_with(options: ServerOptions) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("capstan-test-")
            .tempdir()
            .unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let netns_dir = PathBuf::from(format!("/run/{tag}/netns"));
        let host_netns = make_host_netns(&tag);
        let mut args = options.args;
        let listen_ip = match options.uplink {
            Some(ip) => {
                args.extend(["--host-ip".to_string(), ip.to_string()]);
                "0.0.0.0".to_string()
            }
            None => "127.0.0.1".to_string(),
        };
        let mut s = Server {
            dir,
            host_netns,
            netns_dir,
            port: 0,
            child: None,
            debug: options.debug,
            listen_ip,
            args,
            node: "test-node".into(),
        };
        if let Some(ip) = options.uplink {
            // After `s` exists, so that its drop removes the namespace if this fails.
            add_uplink(&s.host_netns, ip);
        }
        let out = s.cli(&[
            "image",
            "import",
            busybox_archive().to_str().unwrap(),
            "--data-dir",
            s.data_dir().to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "image import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.boot();
        s
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The API endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The API endpoint at address `ip` of the server's namespace (servers started with an
    /// [`ServerOptions::uplink`] listen on all addresses).
    pub fn url_at(&self, ip: std::net::Ipv4Addr) -> String {
        format!("http://{ip}:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn boot(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let start_len = log.metadata().unwrap().len() as usize;
        let mut cmd = in_netns(&self.host_netns);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--listen")
            .arg(format!("{}:{}", self.listen_ip, self.port))
            .args(&self.args)
            .arg("--node-name")
            .arg(&self.node)
            .arg("--netns-dir")
            .arg(&self.netns_dir)
            .arg("--log")
            .arg("info,actors=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.debug {
            cmd.arg("--enable-debug-service");
        }
        let (child, port) =
            spawn_until_ready(cmd, &self.log_path(), start_len, "capstan server ready");
        self.child = Some(child);
        self.port = port;
        // The node registers itself right after start.
        must_eventually(Duration::from_secs(30), "the node to be Ready", || {
            let out = self.cli(&["get", "nodes"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines()
                .any(|l| l.starts_with(&self.node) && l.contains(" Ready"))
                .then_some(())
        });
    }

    /// Stops the server with SIGTERM and waits for it (containers keep running).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }

    /// Starts the server again on the same data dir and port.
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = in_netns(&self.host_netns);
        if self.port != 0 {
            cmd.env("CAPSTAN_SERVER", self.url());
        }
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs the CLI and returns stdout, panicking with stderr when it fails.
    pub fn must_cli(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "capstan {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `capstan get pod NAME -o json`, parsed; `None` when the pod does not exist.
    pub fn pod_json(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.cli(&["get", "pod", name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the pod reaches `phase`, and returns its JSON.
    pub fn must_pod_phase(&self, name: &str, phase: &str, timeout: Duration) -> serde_json::Value {
        must_eventually(timeout, &format!("pod {name} to be {phase}"), || {
            self.pod_json(name)
                .filter(|p| p["status"]["phase"] == phase)
        })
    }

    /// The runtime's containers of pod `uid`, read from this server's data dir.
    pub fn containers_of(&self, uid: &str) -> Vec<runtime::ContainerStatus> {
        let rt = self.runtime();
        rt.list_containers()
            .unwrap()
            .into_iter()
            .filter(|c| c.pod_uid == uid)
            .collect()
    }

    fn runtime(&self) -> runtime::Runtime {
        runtime::Runtime::new(runtime::RuntimeConfig {
            root: self.data_dir().join("runtime"),
            shim_exe: capstan_bin(),
        })
        .unwrap()
    }

    /// The network namespace the server runs in.
    pub fn host_netns(&self) -> &str {
        &self.host_netns
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Delete pods through the API first, so this node's agent stops their containers
            // itself; pods of agents that are gone already are left to the leftover sweep.
            let pods = || -> Vec<(String, String, String)> {
                let out = self.cli(&["get", "pods", "-A", "-o", "json"]);
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                let items = list["items"].as_array().cloned().unwrap_or_default();
                items
                    .iter()
                    .map(|p| {
                        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                        (
                            s(&p["metadata"]["namespace"]),
                            s(&p["metadata"]["name"]),
                            s(&p["spec"]["nodeName"]),
                        )
                    })
                    .collect()
            };
            // Workload controllers would replace deleted pods: remove their owners first.
            for kind in ["deployments", "replicasets"] {
                let out = self.cli(&["get", kind, "-A", "-o", "json"]);
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                for o in list["items"].as_array().cloned().unwrap_or_default() {
                    let (ns, name) = (&o["metadata"]["namespace"], &o["metadata"]["name"]);
                    let (ns, name) = (
                        ns.as_str().unwrap_or_default(),
                        name.as_str().unwrap_or_default(),
                    );
                    let _ = self.cli(&["delete", kind, name, "-n", ns, "--wait=false"]);
                }
            }
            for (ns, name, _) in pods() {
                let _ = self.cli(&["delete", "pod", &name, "-n", &ns, "--wait=false"]);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && pods().iter().any(|(_, _, node)| *node == self.node)
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        self.stop();
        remove_node_leftovers(&self.data_dir(), &self.netns_dir);
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.host_netns])
            .status();
    }
}

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// The path of a file in the workspace's `examples/`.
pub fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .to_string_lossy()
        .to_string()
}

/// Spawns `cmd` (stderr already sent to `log`) and waits for `marker` in the log after byte
/// `start_len`; returns the child and the port printed at the end of the marker line.
pub(crate) fn spawn_until_ready(
    mut cmd: Command,
    log: &Path,
    start_len: usize,
    marker: &str,
) -> (Child, u16) {
    let mut child = cmd.spawn().unwrap();
    let port = wait_until_ready(&mut child, log, start_len, marker);
    (child, port)
}

/// Waits for `marker` in `child`'s log after byte `start_len` and returns the port printed at
/// the end of the marker line; panics with the log if the child exits first.
pub(crate) fn wait_until_ready(
    child: &mut Child,
    log: &Path,
    start_len: usize,
    marker: &str,
) -> u16 {
    must_eventually(Duration::from_secs(60), marker, || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "process exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let text = std::fs::read_to_string(log).ok()?;
        let line = text
            .get(start_len..)?
            .lines()
            .find(|l| l.contains(marker))?
            .to_string();
        line.rsplit(':').next()?.trim().parse::<u16>().ok()
    })
}

/// Sends SIGTERM to `child` and waits up to 30 s (then SIGKILL).
pub(crate) fn terminate(mut child: Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops and removes whatever containers and network namespaces a node left (a test that
/// failed half-way), and the node's private netns mount.
pub(crate) fn remove_node_leftovers(data_dir: &Path, netns_dir: &Path) {
    if let Ok(rt) = runtime::Runtime::new(runtime::RuntimeConfig {
        root: data_dir.join("runtime"),
        shim_exe: capstan_bin(),
    }) {
        for c in rt.list_containers().unwrap_or_default() {
            let _ = rt.stop_container(&c.id, Duration::from_secs(2));
            let _ = rt.remove_container(&c.id);
        }
    }
    if let Ok(mgr) = net::NetnsManager::new(netns_dir.to_path_buf()) {
        for ns in mgr.list().unwrap_or_default() {
            let _ = mgr.delete(&ns);
        }
    }
    if let Some(run_dir) = netns_dir.parent() {
        let _ = nix::mount::umount2(netns_dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

/// Creates the network namespace a test node runs in (its "host"), with loopback up. Every
/// server and agent of the tests runs inside one, so pod bridges, veths and routes never touch
/// the machine's own network.
pub(crate) fn make_host_netns(tag: &str) -> String {
    let suffix: String = tag.chars().rev().take(8).collect();
    let name = format!("capstan-t-{suffix}");
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip netns add {name} failed");
    let ok = Command::new("ip")
        .args(["-n", &name, "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot bring lo up in {name}");
    name
}

/// Runs `ip` with `args` and panics when it fails (test network setup only).
pub(crate) fn must_ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A link `uplink` holding `ip`/32 in `netns`, up, and IPv4 forwarding on there (the
/// namespace routes between the agents' namespaces). The link is a veth whose peer stays
/// beside it (`dummy` links need a kernel module test machines may lack).
fn add_uplink(netns: &str, ip: std::net::Ipv4Addr) {
    let address = format!("{ip}/32");
    for args in [
        &[
            "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p",
        ][..],
        &["addr", "add", &address, "dev", "uplink"],
        &["link", "set", "uplink-p", "up"],
        &["link", "set", "uplink", "up"],
    ] {
        let mut all = vec!["-n", netns];
        all.extend(args);
        must_ip(&all);
    }
    must_ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
}

/// A `capstan` command that runs in network namespace `netns` (only the network namespace is
/// entered, so bind mounts the process makes stay visible to the test).
pub(crate) fn in_netns(netns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{netns}"))
        .arg("--")
        .arg(capstan_bin());
    cmd
}
