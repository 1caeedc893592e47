//! Running a command inside a running container: `capstan shim exec` (a fresh,
//! single-threaded process, as libcontainer needs) joins the container's namespaces and
//! cgroup through libcontainer's tenant builder and exits with the command's exit code.
//! [`Runtime::spawn_exec`] hands back that process with piped output (for streaming to a
//! client); [`Runtime::exec`] collects the output with a size cap and a timeout (for probes
//! and hooks).

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::shim::{exec_args, EXEC_FAILED};
use crate::types::ContainerState;

/// What a finished [`Runtime::exec`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code (128 + signal when it was killed).
    pub exit_code: i32,
    /// Its standard output (at most the cap asked for).
    pub stdout: Vec<u8>,
    /// Its standard error (at most the cap asked for).
    pub stderr: Vec<u8>,
}

impl Runtime {
    /// Starts `argv` in the running container `id`; stdin is closed, stdout and stderr are
    /// piped. The child's exit code is the command's, or [`EXEC_FAILED`] with the reason on
    /// stderr when it could not start inside the container.
    pub fn spawn_exec(&self, id: &str, argv: &[String]) -> Result<Child> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(Error::InvalidSpec {
                id: id.to_owned(),
                reason: "exec needs a command".into(),
            });
        }
        match self.container_status(id)? {
            Some(s) if matches!(s.state, ContainerState::Running { .. }) => {}
            Some(_) => {
                return Err(Error::Shim {
                    id: id.to_owned(),
                    reason: "container is not running".into(),
                })
            }
            None => return Err(Error::ContainerNotFound { id: id.to_owned() }),
        }
        Command::new(self.shim_exe())
            .arg("shim")
            .args(exec_args(self.root(), id, argv))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("spawn shim exec", self.shim_exe()))
    }

    /// Runs `argv` in container `id` until it exits or `timeout` passes (then the exec
    /// process is killed and the call fails), keeping at most `cap` bytes of each stream.
    pub fn exec(
        &self,
        id: &str,
        argv: &[String],
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput> {
        let mut child = self.spawn_exec(id, argv)?;
        let readers = [
            child.stdout.take().map(|s| read_capped(s, cap)),
            child.stderr.take().map(|s| read_capped(s, cap)),
        ];
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    // Only the exec process we started is ended, by its pid.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Shim {
                        id: id.to_owned(),
                        reason: format!("exec timed out after {timeout:?}"),
                    });
                }
                Err(e) => return Err(Error::io("wait for shim exec", self.shim_exe())(e)),
            }
        };
        let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
        let exit_code = status.code().unwrap_or(EXEC_FAILED);
        if exit_code == EXEC_FAILED {
            let reason = String::from_utf8_lossy(&stderr).trim().to_owned();
            if reason.starts_with("capstan-shim:") {
                return Err(Error::Shim {
                    id: id.to_owned(),
                    reason,
                });
            }
        }
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// Reads `stream` to its end on a thread, keeping the first `cap` bytes.
fn read_capped(
    mut stream: impl Read + Send + 'static,
    cap: usize,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (mut kept, mut buf) = (Vec::new(), [0u8; 8192]);
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        kept
    })
}
