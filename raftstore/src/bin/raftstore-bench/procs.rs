//! Processes and directories the benchmark owns: free loopback ports, a temporary directory
//! removed on drop, and child processes killed (by their own pid, never by name) on drop.
//!
//! Nothing here knows about raftstore or etcd; `cluster` decides what to start.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{BenchError, Result};

/// A free TCP port on 127.0.0.1 (bound to :0 and released, so another process can take it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("binding :0"))?;
    let port = listener
        .local_addr()
        .map_err(BenchError::io("reading a bound address"))?
        .port();
    Ok(port)
}

/// A directory removed (with everything in it) when dropped.
#[derive(Debug)]
pub struct TempRoot {
    path: PathBuf,
}

impl TempRoot {
    /// Creates `parent/raftstore-bench-<pid>-<nanos>-<tag>`.
    pub fn create(parent: &Path, tag: &str) -> Result<TempRoot> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!(
            "raftstore-bench-{}-{nanos}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path)
            .map_err(BenchError::io(format!("creating {}", path.display())))?;
        Ok(TempRoot { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// A child process this benchmark started; killed with SIGKILL and reaped when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args`, stdout and stderr appended to `log`.
    pub fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(BenchError::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(BenchError::io("duplicating a log file handle"))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(BenchError::io(format!("starting {}", program.display())))?;
        Ok(Proc {
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Resident memory (VmRSS) in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
        parse_vm_rss(&status)
            .ok_or_else(|| BenchError::Unexpected(format!("{path} has no VmRSS line")))
    }

    /// `kill -9` and reap.
    pub fn kill(mut self) {
        self.kill_and_reap();
    }

    fn kill_and_reap(&mut self) {
        if self.exited().is_none() {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

/// The `VmRSS:` value (KiB) of a `/proc/<pid>/status` text.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(51234));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn temp_root_is_removed_on_drop() -> Result<()> {
        let root = TempRoot::create(&std::env::temp_dir(), "test")?;
        let path = root.path().to_path_buf();
        std::fs::write(path.join("f"), b"x").map_err(BenchError::io("write"))?;
        drop(root);
        assert!(!path.exists());
        Ok(())
    }
}
