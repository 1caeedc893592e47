//! A three-member `capstan store` cluster on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (Linux routes
//! all of 127/8 to lo), each member a real process with its own temporary data dir, serving the
//! etcd v3 API. Members can be killed with SIGKILL and restarted on the same ports and data;
//! `etcdctl` (Debian's etcd-client, API v3) runs against them. Dropping the cluster kills only
//! its own processes, by pid, and removes the directories.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{capstan_bin, must_eventually};

/// The etcdctl binary (Debian's `etcd-client`).
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// How long a cluster may take to (re-)elect a leader on a loaded CI machine.
pub const CONVERGE: Duration = Duration::from_secs(60);

/// One member: its name, URLs, data dir and process (if running).
pub struct StoreMember {
    /// The member's name (`n1`).
    pub name: String,
    /// Where its peer service listens.
    pub peer_url: String,
    /// Where its etcd client API listens.
    pub client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    /// `--initial-cluster` and `--initial-cluster-state` it is started with.
    initial_cluster: String,
    state: &'static str,
    child: Option<Child>,
}

/// What `etcdctl endpoint status` says about one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The member's own id.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its raft term.
    pub raft_term: u64,
    /// Its current revision.
    pub revision: i64,
}

/// A three-member store cluster of real `capstan store` processes.
pub struct StoreCluster {
    /// The members, in `--initial-cluster` order.
    pub members: Vec<StoreMember>,
    initial_cluster: String,
    // Dropped after the members' processes are killed (see Drop).
    dir: tempfile::TempDir,
}

/// A port that is free on `ip` right now.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl StoreCluster {
    /// Starts three members on 127.0.0.1-3 and waits until all of them name the same leader.
    pub fn start() -> StoreCluster {
        let dir = tempfile::Builder::new()
            .prefix("capstan-store-test-")
            .tempdir()
            .unwrap();
        let members: Vec<StoreMember> = (1..=3)
            .map(|i| {
                let ip = format!("127.0.0.{i}");
                StoreMember {
                    name: format!("n{i}"),
                    peer_url: format!("http://{ip}:{}", free_port(&ip)),
                    client_url: format!("http://{ip}:{}", free_port(&ip)),
                    data_dir: dir.path().join(format!("n{i}")),
                    log: dir.path().join(format!("n{i}.log")),
                    initial_cluster: String::new(),
                    state: "new",
                    child: None,
                }
            })
            .collect();
        let mut members = members;
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial_cluster.clone();
        }
        let mut cluster = StoreCluster {
            members,
            initial_cluster,
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.must_agree_on_leader();
        cluster
    }

    /// Starts a fourth member on 127.0.0.4 the etcd way, after `etcdctl member add` announced
    /// it: `--initial-cluster` lists every member including the new one, with
    /// `--initial-cluster-state existing`. Returns its index; it runs until removed or killed.
    pub fn start_added_member(&mut self, name: &str, peer_url: &str) -> usize {
        let ip = "127.0.0.4";
        let i = self.members.len();
        self.members.push(StoreMember {
            name: name.to_string(),
            peer_url: peer_url.to_string(),
            client_url: format!("http://{ip}:{}", free_port(ip)),
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            initial_cluster: format!("{},{name}={peer_url}", self.initial_cluster),
            state: "existing",
            child: None,
        });
        self.spawn(i);
        i
    }

    /// A free peer URL on 127.0.0.4 for a member to be added.
    pub fn new_peer_url(&self) -> String {
        format!("http://127.0.0.4:{}", free_port("127.0.0.4"))
    }

    /// Whether member `i`'s process has exited (reaping it if so).
    pub fn has_exited(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(child) => {
                let exited = child.try_wait().unwrap().is_some();
                if exited {
                    self.members[i].child = None;
                }
                exited
            }
            None => true,
        }
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .unwrap();
        let child = Command::new(capstan_bin())
            .arg("store")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-peer-url", &m.peer_url])
            .args(["--listen-client-url", &m.client_url])
            .args(["--initial-cluster", &m.initial_cluster])
            .args(["--initial-cluster-state", m.state])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.members[i].child = Some(child);
    }

    /// Client URLs of the running members, comma-separated (for `--endpoints`).
    pub fn endpoints(&self) -> String {
        self.running()
            .map(|i| self.members[i].client_url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Indexes of the members whose process runs.
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| self.members[*i].child.is_some())
    }

    /// `kill -9` member `i` (and reap it).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts member `i` again on its ports and data dir, and waits until it answers.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        must_eventually(
            CONVERGE,
            &format!("{} to answer", self.members[i].name),
            || {
                self.check_running();
                self.status(i)
            },
        );
    }

    /// Runs `etcdctl` (API v3) against `endpoints`.
    pub fn etcdctl(&self, endpoints: &str, args: &[&str]) -> Output {
        Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=10s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs `etcdctl` against all running members and returns stdout; panics (with the
    /// members' logs) if it fails.
    pub fn must_etcdctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl(&self.endpoints(), args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `etcdctl endpoint status` of member `i`; `None` if it does not answer.
    pub fn status(&self, i: usize) -> Option<EndpointStatus> {
        let out = self.etcdctl(
            &self.members[i].client_url,
            &["endpoint", "status", "--write-out=json"],
        );
        if !out.status.success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let s = &json[0]["Status"];
        Some(EndpointStatus {
            member_id: s["header"]["member_id"].as_u64()?,
            leader: s["leader"].as_u64().unwrap_or(0),
            raft_term: s["raft_term"]
                .as_u64()
                .or_else(|| s["raftTerm"].as_u64())
                .unwrap_or(0),
            revision: s["header"]["revision"].as_i64().unwrap_or(0),
        })
    }

    /// Waits until every running member answers and names the same leader, which is one of
    /// them; returns the leader's index.
    pub fn must_agree_on_leader(&mut self) -> usize {
        must_eventually(CONVERGE, "the members to agree on a leader", || {
            self.check_running();
            let statuses: Vec<(usize, EndpointStatus)> = self
                .running()
                .map(|i| self.status(i).map(|s| (i, s)))
                .collect::<Option<_>>()?;
            let leader = statuses.first()?.1.leader;
            if leader == 0 || statuses.iter().any(|(_, s)| s.leader != leader) {
                return None;
            }
            statuses
                .iter()
                .find(|(_, s)| s.member_id == leader)
                .map(|(i, _)| *i)
        })
    }

    /// Panics with the member's log if a member that should run has exited.
    fn check_running(&mut self) {
        for i in 0..self.members.len() {
            let exited = match &mut self.members[i].child {
                Some(child) => child.try_wait().unwrap(),
                None => None,
            };
            if let Some(status) = exited {
                panic!(
                    "member {} exited ({status}):\n{}",
                    self.members[i].name,
                    self.log(i)
                );
            }
        }
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                format!(
                    "--- {} ---\n{}",
                    self.members[i].name,
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The temporary directory holding the members' data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for StoreCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(mut child) = self.members[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
