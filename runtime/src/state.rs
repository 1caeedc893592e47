//! The persisted per-container record (`<root>/containers/<id>/state.json`) shared by the shim
//! (which writes it as the container moves on) and the agent (which reads it, also after a
//! restart, to re-adopt running containers). Owns the file format, atomic writes, pid liveness
//! checks and the pure mapping from record + liveness to [`ContainerState`]. It must not start,
//! signal or reap processes.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::ContainerState;

/// Reason given when the supervising shim is gone before the container was seen to exit.
pub const REASON_SHIM_DIED: &str = "ShimDied";
/// Reason given when the container could not be started at all.
pub const REASON_START_ERROR: &str = "StartError";
/// Exit code recorded for a container that never started (like runc's 128 "cannot run").
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// Where the container is in its life, as recorded by the shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The agent asked for it; the shim is setting it up.
    Creating,
    /// The container's init process runs.
    Running,
    /// The container ended or failed to start.
    Exited,
}

/// A process identity that survives pid reuse: pid plus its kernel start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// The pid.
    pub pid: i32,
    /// `starttime` from `/proc/<pid>/stat` (clock ticks since boot).
    pub start_ticks: u64,
}

impl ProcId {
    /// Identifies a live process now; `None` if it does not exist.
    pub fn of(pid: i32) -> Option<ProcId> {
        let stat = read_stat(pid)?;
        Some(ProcId {
            pid,
            start_ticks: stat.start_ticks,
        })
    }

    /// True if the same process still exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(stat) => {
                stat.start_ticks == self.start_ticks && stat.state != 'Z' && stat.state != 'X'
            }
            None => false,
        }
    }
}

struct Stat {
    state: char,
    start_ticks: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parens, so fields are
/// counted after the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 (starttime) overall is index 19 after the `pid (comm)` prefix.
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

/// The persisted record of one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShimState {
    /// Container id.
    pub id: String,
    /// UID of the owning pod.
    pub pod_uid: String,
    /// Container name within the pod.
    pub container_name: String,
    /// Restart attempt.
    pub attempt: u32,
    /// Image reference as requested.
    pub image: String,
    /// Lifecycle phase.
    pub phase: Phase,
    /// The shim supervising the container, once it runs.
    pub shim: Option<ProcId>,
    /// The container's init process, once started.
    pub container: Option<ProcId>,
    /// RFC 3339 time the agent asked for the container.
    pub created_at: String,
    /// RFC 3339 time the container started.
    pub started_at: Option<String>,
    /// RFC 3339 time the container ended.
    pub finished_at: Option<String>,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Exit reason once exited.
    pub reason: Option<String>,
    /// Human-readable detail (e.g. why the start failed).
    pub message: Option<String>,
}

impl ShimState {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<ShimState> {
        let bytes = fs::read(path).map_err(Error::io("read state", path))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })
    }

    /// Writes the state file atomically (unique tmp file, rename), so readers never see a
    /// torn record even if the writer dies midway.
    ///
    /// Not fsynced, on purpose: the record describes processes that do not outlive the node's
    /// kernel, so after a power loss there is nothing left for it to describe, and the agent
    /// treats a record it cannot read as gone. Four fsyncs per container life cost more than
    /// the whole start on a busy disk.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.to_owned(),
            source,
        })?;
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let mut file = fs::File::create(&tmp).map_err(Error::io("create state", &tmp))?;
        file.write_all(&bytes)
            .map_err(Error::io("write state", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(Error::io("rename state", path))
    }

    /// Maps the record to a [`ContainerState`] given whether the shim still lives.
    /// A shim that died before recording an exit yields `Unknown { ShimDied }`: the exit code
    /// is not known, so none is invented.
    pub fn container_state(&self, shim_alive: bool) -> ContainerState {
        match self.phase {
            Phase::Exited => ContainerState::Exited {
                exit_code: self.exit_code.unwrap_or(START_ERROR_EXIT_CODE),
                reason: self
                    .reason
                    .clone()
                    .unwrap_or_else(|| exit_reason(self.exit_code.unwrap_or(1), false).to_owned()),
                started_at: self.started_at.clone(),
                finished_at: self.finished_at.clone().unwrap_or_default(),
            },
            Phase::Creating | Phase::Running if !shim_alive && self.shim.is_some() => {
                ContainerState::Unknown {
                    reason: REASON_SHIM_DIED.to_owned(),
                }
            }
            Phase::Creating => ContainerState::Created,
            Phase::Running => match (&self.container, &self.started_at) {
                (Some(c), Some(started_at)) => ContainerState::Running {
                    pid: c.pid,
                    started_at: started_at.clone(),
                },
                _ => ContainerState::Unknown {
                    reason: "RunningWithoutPid".to_owned(),
                },
            },
        }
    }
}

/// Kubernetes-style reason for an exit: `OOMKilled` if the cgroup saw an OOM kill,
/// `Completed` for 0, `Error` otherwise.
pub fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: Phase) -> ShimState {
        ShimState {
            id: "c1".into(),
            pod_uid: "p".into(),
            container_name: "main".into(),
            attempt: 0,
            image: "busybox:latest".into(),
            phase,
            shim: Some(ProcId {
                pid: 10,
                start_ticks: 5,
            }),
            container: Some(ProcId {
                pid: 11,
                start_ticks: 6,
            }),
            created_at: "t0".into(),
            started_at: Some("t1".into()),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
        }
    }

    #[test]
    fn running_with_live_shim_is_running_with_container_pid() {
        assert_eq!(
            record(Phase::Running).container_state(true),
            ContainerState::Running {
                pid: 11,
                started_at: "t1".into()
            }
        );
    }

    #[test]
    fn running_with_dead_shim_is_unknown_shim_died_not_running() {
        assert_eq!(
            record(Phase::Running).container_state(false),
            ContainerState::Unknown {
                reason: REASON_SHIM_DIED.into()
            }
        );
    }

    #[test]
    fn exited_record_keeps_code_and_reason_even_without_shim() {
        let mut r = record(Phase::Exited);
        r.exit_code = Some(3);
        r.reason = Some("Error".into());
        r.finished_at = Some("t2".into());
        assert_eq!(
            r.container_state(false),
            ContainerState::Exited {
                exit_code: 3,
                reason: "Error".into(),
                started_at: Some("t1".into()),
                finished_at: "t2".into()
            }
        );
    }

    #[test]
    fn creating_before_shim_reported_is_created() {
        let mut r = record(Phase::Creating);
        r.shim = None;
        assert_eq!(r.container_state(false), ContainerState::Created);
    }

    #[test]
    fn exit_reasons_follow_kubernetes() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(3, false), "Error");
        assert_eq!(exit_reason(137, true), "OOMKilled");
    }

    #[test]
    fn stat_parsing_handles_parens_in_comm_and_liveness_of_self() {
        let line = "42 (a) b)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        let stat = parse_stat(line);
        assert_eq!(
            stat.as_ref().map(|s| (s.state, s.start_ticks)),
            Some(('S', 777))
        );
        let me = ProcId::of(std::process::id() as i32);
        assert!(me.is_some_and(|p| p.is_alive()));
        assert!(!ProcId {
            pid: std::process::id() as i32,
            start_ticks: 1
        }
        .is_alive());
    }

    #[test]
    fn save_then_load_roundtrips_atomically() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("state.json");
        let r = record(Phase::Running);
        r.save(&path)?;
        assert_eq!(ShimState::load(&path)?, r);
        assert_eq!(
            fs::read_dir(dir.path())?.count(),
            1,
            "no tmp file left behind"
        );
        Ok(())
    }
}
