//! A three-member cluster of either system on 127.0.0.1, each member a process of its own with
//! a data directory under one [`TempRoot`]: raftstore members are this binary re-executed in
//! `member` mode, etcd members are the etcd server binary. Members can be killed (`kill -9`)
//! and restarted on the same ports and data.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::args::MemberArgs;
use crate::client;
use crate::error::{BenchError, Result};
use crate::procs::{free_port, Proc, TempRoot};

/// Members per cluster.
pub const MEMBERS: usize = 3;
/// How long a fresh or restarted cluster may take to elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The system under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum System {
    /// Capstan's raftstore, run by re-executing this binary.
    Raftstore {
        /// This benchmark's own executable.
        exe: PathBuf,
    },
    /// etcd, run from its server binary.
    Etcd {
        /// The etcd server binary.
        exe: PathBuf,
    },
}

impl System {
    /// A short name for tables and directories.
    pub fn name(&self) -> &'static str {
        match self {
            System::Raftstore { .. } => "raftstore",
            System::Etcd { .. } => "etcd",
        }
    }
}

struct Member {
    name: String,
    peer_url: String,
    client_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

/// A running three-member cluster; dropping it kills its processes and removes its data.
pub struct BenchCluster {
    system: System,
    initial_cluster: String,
    token: String,
    // Field order matters: processes are killed before their directory is removed.
    members: Vec<Member>,
    root: TempRoot,
}

impl BenchCluster {
    /// Starts all members and waits until they agree on a leader.
    pub async fn start(system: System, data_root: &std::path::Path) -> Result<BenchCluster> {
        let root = TempRoot::create(data_root, system.name())?;
        let mut members = Vec::with_capacity(MEMBERS);
        for i in 1..=MEMBERS {
            let name = format!("{}{i}", &system.name()[..1]);
            members.push(Member {
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                client_url: format!("http://127.0.0.1:{}", free_port()?),
                data_dir: root.path().join(&name),
                log: root.path().join(format!("{name}.log")),
                name,
                proc: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = root
            .path()
            .file_name()
            .map_or_else(|| "bench".to_string(), |n| n.to_string_lossy().to_string());
        let mut cluster = BenchCluster {
            system,
            initial_cluster,
            token,
            members,
            root,
        };
        for i in 0..MEMBERS {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Where the members' data and logs are.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let (exe, args) = match &self.system {
            System::Raftstore { exe } => {
                let args = MemberArgs {
                    name: m.name.clone(),
                    data_dir: m.data_dir.clone(),
                    listen_peer_url: m.peer_url.clone(),
                    listen_client_url: m.client_url.clone(),
                    initial_cluster: self.initial_cluster.clone(),
                };
                (exe, args.to_args())
            }
            System::Etcd { exe } => {
                let flags = [
                    ("--name", m.name.clone()),
                    ("--data-dir", m.data_dir.display().to_string()),
                    ("--listen-client-urls", m.client_url.clone()),
                    ("--advertise-client-urls", m.client_url.clone()),
                    ("--listen-peer-urls", m.peer_url.clone()),
                    ("--initial-advertise-peer-urls", m.peer_url.clone()),
                    ("--initial-cluster", self.initial_cluster.clone()),
                    ("--initial-cluster-state", "new".to_string()),
                    ("--initial-cluster-token", self.token.clone()),
                    ("--logger", "zap".to_string()),
                    ("--log-level", "error".to_string()),
                ];
                let args = flags
                    .into_iter()
                    .flat_map(|(f, v)| [f.to_string(), v])
                    .collect();
                (exe, args)
            }
        };
        let proc = Proc::spawn(exe, &args, &m.log)?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    /// Client URL of member `i`.
    pub fn client_url(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    /// Resident memory of each running member, in KiB.
    pub fn rss_kib(&self) -> Result<Vec<u64>> {
        self.members
            .iter()
            .filter_map(|m| m.proc.as_ref())
            .map(Proc::rss_kib)
            .collect()
    }

    /// `kill -9` member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(proc) = self.members[i].proc.take() {
            proc.kill();
        }
    }

    /// Starts member `i` again on its ports and data, and waits for the cluster to be ready.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_ready().await
    }

    /// Index of the member that is leader, asking every running member.
    pub async fn leader(&self) -> Result<Option<usize>> {
        for (i, m) in self.members.iter().enumerate() {
            if m.proc.is_none() {
                continue;
            }
            let Ok(channel) = client::connect(&m.client_url).await else {
                continue;
            };
            if let Ok((me, leader)) = client::status(channel).await {
                if me != 0 && me == leader {
                    return Ok(Some(i));
                }
            }
        }
        Ok(None)
    }

    /// Waits until every running member answers and all name the same leader.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.agreed_leader().await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout(format!(
                    "the {} cluster to elect a leader (logs in {})",
                    self.system.name(),
                    self.root.path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<u64> {
        let mut seen = None;
        for m in self.members.iter().filter(|m| m.proc.is_some()) {
            let channel = client::connect(&m.client_url).await.ok()?;
            let (_, leader) = client::status(channel).await.ok()?;
            if leader == 0 || seen.is_some_and(|l| l != leader) {
                return None;
            }
            seen = Some(leader);
        }
        seen
    }

    fn check_alive(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(proc) = &mut m.proc {
                if let Some(status) = proc.exited() {
                    return Err(BenchError::Unexpected(format!(
                        "{} member {} exited ({status}):\n{}",
                        self.system.name(),
                        m.name,
                        proc.log_tail()
                    )));
                }
            }
        }
        Ok(())
    }
}
