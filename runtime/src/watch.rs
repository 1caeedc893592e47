//! Waiting on a shim without busy polling. A [`RecordWatch`] (inotify on a container's
//! directory) wakes as soon as the shim renames a new state record into place; [`wait_gone`]
//! (a pidfd) wakes as soon as a process exits. Where the kernel refuses either, they fall back
//! to short sleeps, so they only ever shorten a wait. Owns only the waiting: callers re-read
//! the record after each wake-up and decide.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::state::ProcId;

/// Longest sleep between two looks when nothing wakes the waiter earlier: also how soon a
/// waiter notices a shim that died without writing a record.
pub(crate) const RECHECK: Duration = Duration::from_millis(20);
/// Sleep between liveness checks when no pidfd could be opened.
const PID_POLL: Duration = Duration::from_millis(2);

/// Wakes a waiter when a file is renamed into one directory (state records are).
pub(crate) struct RecordWatch {
    inotify: Option<File>,
}

impl RecordWatch {
    /// Watches `dir`; create it before reading the record, so no rename is missed.
    pub(crate) fn new(dir: &Path) -> RecordWatch {
        RecordWatch {
            inotify: inotify_moved_to(dir),
        }
    }

    /// Sleeps until a file is renamed into the directory or `timeout` (at most [`RECHECK`])
    /// passed.
    pub(crate) fn wait(&mut self, timeout: Duration) {
        let timeout = timeout.min(RECHECK);
        match self.inotify.as_mut() {
            Some(file) => {
                wait_readable(file.as_fd(), timeout);
                // Drain the queued events; the descriptor is non-blocking.
                let mut buf = [0u8; 4096];
                while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
            }
            None => std::thread::sleep(timeout),
        }
    }
}

fn inotify_moved_to(dir: &Path) -> Option<File> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: inotify_init1 takes only flags and returns a new descriptor or -1.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a descriptor just returned to us that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `path` is a NUL-terminated string that outlives the call; `fd` is open.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), libc::IN_MOVED_TO) };
    (wd >= 0).then(|| File::from(fd))
}

/// Waits until `process` is gone (exited, or its pid now names another process) or `timeout`
/// passed; true if it is gone.
pub(crate) fn wait_gone(process: ProcId, timeout: Duration) -> bool {
    let since = Instant::now();
    // SAFETY: pidfd_open takes a pid and flags, touches no memory of ours, and returns a new
    // descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid, 0) };
    let pidfd = i32::try_from(raw).ok().filter(|fd| *fd >= 0).map(|fd| {
        // SAFETY: `fd` is a descriptor just returned to us that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    });
    loop {
        // Checked after opening the pidfd, so the pidfd names this very process if alive.
        if !process.is_alive() {
            return true;
        }
        let left = timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            return false;
        }
        match &pidfd {
            // Readable once the process exited.
            Some(fd) => wait_readable(fd.as_fd(), left.min(RECHECK)),
            None => std::thread::sleep(left.min(PID_POLL)),
        }
    }
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    // EINTR or an error only end this wait early; callers re-check and wait again.
    let _ = poll(&mut fds, timeout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_into_the_directory_wakes_the_watch_at_once() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut watch = RecordWatch::new(dir.path());
        assert!(watch.inotify.is_some(), "inotify available");
        let tmp = dir.path().join("state.json.tmp");
        std::fs::write(&tmp, b"{}")?;
        std::fs::rename(&tmp, dir.path().join("state.json"))?;
        let t0 = Instant::now();
        watch.wait(Duration::from_secs(5));
        assert!(t0.elapsed() < RECHECK, "woke on the rename");
        // Events drained: the next wait sleeps its full (capped) timeout.
        let t0 = Instant::now();
        watch.wait(Duration::from_millis(50));
        assert!(t0.elapsed() >= RECHECK);
        Ok(())
    }

    #[test]
    fn wait_gone_returns_when_a_process_exits_and_not_before() -> anyhow::Result<()> {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn()?;
        let pid = i32::try_from(child.id())?;
        let process = ProcId::of(pid).ok_or_else(|| anyhow::anyhow!("child not found"))?;
        assert!(
            !wait_gone(process, Duration::from_millis(30)),
            "still running"
        );
        // Reap from another thread, as init reaps an exited shim.
        let reaper = std::thread::spawn(move || child.wait());
        let t0 = Instant::now();
        assert!(wait_gone(process, Duration::from_secs(5)));
        assert!(t0.elapsed() < Duration::from_secs(1));
        reaper
            .join()
            .map_err(|_| anyhow::anyhow!("reaper panicked"))??;
        Ok(())
    }
}
