//! A highly available control plane for tests: several `capstan server` processes (no agents of
//! their own) that share one store cluster and elect a leader, all in ONE network namespace the
//! test creates, on 127.0.0.1, 127.0.0.2, ... (the whole of 127/8 is local once `lo` is up),
//! plus an optional `capstan agent` that fails over between them. Everything is stopped and
//! cleaned up on drop, also when a test fails.

use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{
    busybox_archive, in_netns, make_host_netns, must_eventually, remove_node_leftovers,
    spawn_until_ready, terminate, wait_until_ready,
};

/// API port of every server (each has its own loopback address).
const API_PORT: u16 = 6443;
/// Store peer port of every server.
const PEER_PORT: u16 = 2380;
/// The control plane's Lease.
const LEASE: [&str; 4] = ["lease", "capstan-controller-manager", "-n", "kube-system"];

/// One server of a [`ControlPlane`].
pub struct HaServer {
    /// Its name (`n1`, ...): store member and leader-election identity.
    pub name: String,
    ip: String,
    dir: PathBuf,
    netns_dir: PathBuf,
    child: Option<Child>,
}

impl HaServer {
    /// The API endpoint.
    pub fn url(&self) -> String {
        format!("http://{}:{API_PORT}", self.ip)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// Several servers sharing a store cluster, and at most one agent.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    netns: String,
    lease_duration: String,
    initial_cluster: String,
    /// The servers, `n1` first.
    pub servers: Vec<HaServer>,
    agent: Option<(Child, PathBuf, PathBuf)>,
    /// Processes this test stopped with SIGSTOP (continued again on drop).
    stopped: Vec<i32>,
}

impl ControlPlane {
    /// Starts `n` servers with the given lease duration (e.g. `"3s"`) and waits until every
    /// one serves the API.
    pub fn start(n: usize, lease_duration: &str) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("capstan-test-ha-")
            .tempdir()
            .unwrap();
        let tag = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let netns = make_host_netns(&tag);
        let servers: Vec<HaServer> = (1..=n)
            .map(|i| {
                let name = format!("n{i}");
                let sdir = dir.path().join(&name);
                std::fs::create_dir_all(&sdir).unwrap();
                HaServer {
                    netns_dir: PathBuf::from(format!("/run/{tag}-{name}/netns")),
                    ip: format!("127.0.0.{i}"),
                    name,
                    dir: sdir,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = servers
            .iter()
            .map(|s| format!("{}=http://{}:{PEER_PORT}", s.name, s.ip))
            .collect::<Vec<_>>()
            .join(",");
        let mut cp = ControlPlane {
            dir,
            netns,
            lease_duration: lease_duration.to_string(),
            initial_cluster,
            servers,
            agent: None,
            stopped: Vec::new(),
        };
        // All at once: a member cannot get ready before a majority of the store runs.
        let starts: Vec<usize> = (0..n).map(|i| cp.spawn(i)).collect();
        for (i, start_len) in starts.into_iter().enumerate() {
            cp.wait_ready(i, start_len);
        }
        cp
    }

    fn spawn(&mut self, i: usize) -> usize {
        let s = &self.servers[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.log_path())
            .unwrap();
        let start_len = log.metadata().unwrap().len() as usize;
        let mut cmd = in_netns(&self.netns);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(s.data_dir())
            .args(["--listen", &format!("{}:{API_PORT}", s.ip)])
            .args(["--name", &s.name, "--node-name", &s.name])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--leader-elect-lease-duration", &self.lease_duration])
            .arg("--netns-dir")
            .arg(&s.netns_dir)
            .args(["--disable-agent", "--enable-debug-service"])
            .args(["--log", "info,actors=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.servers[i].child = Some(cmd.spawn().unwrap());
        start_len
    }

    fn wait_ready(&mut self, i: usize, start_len: usize) {
        let s = &mut self.servers[i];
        let log = s.log_path();
        let child = s.child.as_mut().unwrap();
        wait_until_ready(child, &log, start_len, "capstan server ready");
    }

    /// Starts server `i` again on its data dir (after [`ControlPlane::kill`]).
    pub fn restart(&mut self, i: usize) {
        assert!(!self.servers[i].running(), "server {i} still runs");
        let start_len = self.spawn(i);
        self.wait_ready(i, start_len);
    }

    /// `kill -9` of server `i`, by pid.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Freezes server `i` (SIGSTOP): it neither renews nor acts until [`ControlPlane::resume`].
    pub fn freeze(&mut self, i: usize) {
        let pid = self.servers[i].pid().unwrap();
        kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
        self.stopped.push(pid);
    }

    /// Lets a frozen server `i` run again (SIGCONT).
    pub fn resume(&mut self, i: usize) {
        let pid = self.servers[i].pid().unwrap();
        kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
        self.stopped.retain(|p| *p != pid);
    }

    /// Runs the CLI against server `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = in_netns(&self.netns);
        cmd.env("CAPSTAN_SERVER", self.servers[i].url());
        cmd.args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs the CLI against server `i` and returns stdout, panicking with stderr on failure.
    pub fn must_cli(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert!(
            out.status.success(),
            "capstan {args:?} on {} failed ({}): {}",
            self.servers[i].name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `capstan get ... -o json` on server `i`, parsed; `None` when it fails.
    pub fn json(&self, i: usize, args: &[&str]) -> Option<serde_json::Value> {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.cli(i, &args);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The control plane's Lease as server `i` reads it.
    pub fn lease(&self, i: usize) -> Option<serde_json::Value> {
        let mut args = vec!["get"];
        args.extend(LEASE);
        self.json(i, &args)
    }

    /// The lease holder as server `i` reads it (`None`: no lease or no holder yet).
    pub fn holder(&self, i: usize) -> Option<String> {
        let lease = self.lease(i)?;
        let h = lease["spec"]["holderIdentity"].as_str()?.to_string();
        (!h.is_empty()).then_some(h)
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.servers.iter().position(|s| s.name == name).unwrap()
    }

    /// The names of the actors registered on server `i` (`capstan debug actors`).
    pub fn actors(&self, i: usize) -> Vec<String> {
        let out = self.cli(i, &["debug", "actors"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .collect()
    }

    /// Starts an agent named `node` whose `--server` lists the servers in `order`, and waits
    /// until its Node is Ready (as seen through the first of them).
    pub fn start_agent(&mut self, node: &str, order: &[usize]) {
        assert!(self.agent.is_none(), "one agent per control plane");
        let dir = self.dir.path().join(format!("agent-{node}"));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let tag = self
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let netns_dir = PathBuf::from(format!("/run/{tag}-{node}/netns"));
        let out = self.cli(
            order[0],
            &[
                "image",
                "import",
                busybox_archive().to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "image import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let urls: Vec<String> = order.iter().map(|i| self.servers[*i].url()).collect();
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut cmd = in_netns(&self.netns);
        cmd.arg("agent")
            .args(["--server", &urls.join(",")])
            .args(["--listen", "127.0.0.1:0", "--node-name", node])
            .arg("--data-dir")
            .arg(&data)
            .arg("--netns-dir")
            .arg(&netns_dir)
            .args(["--log", "info,actors=debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let (child, _) = spawn_until_ready(cmd, &log_path, 0, "capstan agent ready");
        self.agent = Some((child, data, netns_dir));
        must_eventually(
            Duration::from_secs(60),
            "the agent's node to be Ready",
            || {
                let text = String::from_utf8_lossy(&self.cli(order[0], &["get", "nodes"]).stdout)
                    .to_string();
                text.lines()
                    .any(|l| l.starts_with(&format!("{node} ")) && l.contains(" Ready"))
                    .then_some(())
            },
        );
    }

    /// The agent's log so far.
    pub fn agent_log(&self) -> String {
        self.agent
            .as_ref()
            .and_then(|(_, data, _)| std::fs::read_to_string(data.parent()?.join("agent.log")).ok())
            .unwrap_or_default()
    }

    /// All server logs, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("===== {} =====\n{}", s.name, s.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Deletes workloads and pods through a live server, so the agent stops its containers.
    fn delete_workloads(&self) {
        let Some(i) = self.servers.iter().position(HaServer::running) else {
            return;
        };
        let items = |kind: &str| -> Vec<(String, String)> {
            let list = self.json(i, &["get", kind, "-A"]).unwrap_or_default();
            list["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|o| {
                    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
                    (s(&o["metadata"]["namespace"]), s(&o["metadata"]["name"]))
                })
                .collect()
        };
        // Owners first, or their controllers would replace the pods.
        for kind in ["deployments", "replicasets", "pods"] {
            for (ns, name) in items(kind) {
                let _ = self.cli(i, &["delete", kind, &name, "-n", &ns, "--wait=false"]);
            }
        }
        if self.agent.is_some() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && !items("pods").is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for pid in std::mem::take(&mut self.stopped) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
        self.delete_workloads();
        if let Some((child, data, netns_dir)) = self.agent.take() {
            terminate(child);
            remove_node_leftovers(&data, &netns_dir);
        }
        for s in &mut self.servers {
            if let Some(child) = s.child.take() {
                terminate(child);
            }
            remove_node_leftovers(&s.data_dir(), &s.netns_dir);
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
    }
}
