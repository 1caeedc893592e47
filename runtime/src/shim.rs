//! The per-container shim: a single-threaded process (`<exe> shim run --root R --id ID`) that
//! detaches from the agent, creates and starts the container with libcontainer, copies its
//! stdout/stderr into the CRI log, reaps it, forwards stop requests, records every step in
//! `state.json`, and finally deletes the libcontainer container (cgroup cleanup). It is the only
//! place libcontainer is called, because libcontainer forks and chdirs the calling process and
//! must not run inside the multi-threaded agent. `shim cleanup` deletes a leftover libcontainer
//! container whose shim died. It must not mount or unmount the rootfs; the agent side does.

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, pipe2, setsid, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::ContainerPaths;
use crate::logs::{LineSplitter, LogWriter, Stream, Tag};
use crate::state::{
    exit_reason, Phase, ProcId, ShimState, REASON_START_ERROR, START_ERROR_EXIT_CODE,
};

/// Grace period used when the shim is sent SIGTERM without a stop request (e.g. node shutdown).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How long output is still drained after the container's init exited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// A stop request the agent leaves for the shim before sending it SIGTERM.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StopRequest {
    /// Milliseconds between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// What the command line asked the shim to do.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run {
        root: PathBuf,
        id: String,
    },
    Cleanup {
        root: PathBuf,
        id: String,
    },
    Exec {
        root: PathBuf,
        id: String,
        argv: Vec<String>,
    },
}

fn parse_args(args: &[OsString]) -> std::result::Result<Command, String> {
    let mut iter = args.iter().map(|a| a.to_string_lossy().into_owned());
    let verb = iter.next().ok_or("missing subcommand (run|cleanup|exec)")?;
    let (mut root, mut id) = (None, None);
    let mut argv = Vec::new();
    while let Some(flag) = iter.next() {
        if flag == "--" {
            argv = iter.by_ref().collect();
            break;
        }
        let value = iter
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(value)),
            "--id" => id = Some(value),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let root = root.ok_or("missing --root")?;
    let id = id.ok_or("missing --id")?;
    match verb.as_str() {
        "run" => Ok(Command::Run { root, id }),
        "cleanup" => Ok(Command::Cleanup { root, id }),
        "exec" if argv.is_empty() => Err("exec: missing command after --".into()),
        "exec" => Ok(Command::Exec { root, id, argv }),
        other => Err(format!("unknown subcommand {other}")),
    }
}

/// Command-line arguments (after `shim`) that run the shim for container `id`.
pub fn run_args(root: &Path, id: &str) -> Vec<OsString> {
    vec![
        "run".into(),
        "--root".into(),
        root.into(),
        "--id".into(),
        id.into(),
    ]
}

/// Command-line arguments (after `shim`) that delete a leftover libcontainer container.
pub fn cleanup_args(root: &Path, id: &str) -> Vec<OsString> {
    vec![
        "cleanup".into(),
        "--root".into(),
        root.into(),
        "--id".into(),
        id.into(),
    ]
}

/// Command-line arguments (after `shim`) that run `argv` inside the running container `id`.
pub fn exec_args(root: &Path, id: &str, argv: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "exec".into(),
        "--root".into(),
        root.into(),
        "--id".into(),
        id.into(),
        "--".into(),
    ];
    args.extend(argv.iter().map(OsString::from));
    args
}

/// The exit code of `shim exec` when the process could not be started in the container (as
/// `docker exec`'s 126); the reason is on its stderr.
pub const EXEC_FAILED: i32 = 126;

/// Entry point of `capstan shim <args>`; `args` are the arguments after `shim`. Must be called
/// before any thread exists. Returns the process exit code.
pub fn shim_main(args: Vec<OsString>) -> i32 {
    match parse_args(&args) {
        Ok(Command::Run { root, id }) => run(&root, &id),
        Ok(Command::Exec { root, id, argv }) => exec(&root, &id, argv),
        Ok(Command::Cleanup { root, id }) => match cleanup(&root, &id) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("capstan-shim: cleanup of {id} failed: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("capstan-shim: {e}");
            2
        }
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Forks: the parent records the child as the container's shim in state.json and exits, so
/// the agent's direct child is gone at once (no zombie) and the daemon is reparented to init.
/// The daemon waits until the parent has written the record before touching state itself.
fn run(root: &Path, id: &str) -> i32 {
    let paths = ContainerPaths::new(root, id);
    let (ready_r, ready_w) = match pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("capstan-shim: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: the shim is single-threaded at this point (called before any runtime or thread
    // is created), so the child may safely run arbitrary code after fork.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("capstan-shim: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_r);
            let code = match record_shim(&paths, child) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("capstan-shim: recording shim pid failed: {e}");
                    let _ = kill(child, Signal::SIGKILL);
                    1
                }
            };
            drop(ready_w);
            code
        }
        Ok(ForkResult::Child) => {
            drop(ready_w);
            let mut buf = [0u8; 1];
            // EOF means the parent recorded us (or died; then state has no shim and we stop).
            let _ = File::from(ready_r).read(&mut buf);
            daemon(root, &paths, id)
        }
    }
}

fn record_shim(paths: &ContainerPaths, child: Pid) -> Result<()> {
    let mut state = ShimState::load(&paths.state)?;
    let shim = ProcId::of(child.as_raw()).ok_or_else(|| Error::Shim {
        id: state.id.clone(),
        reason: "shim child vanished".into(),
    })?;
    state.shim = Some(shim);
    state.save(&paths.state)
}

fn daemon(root: &Path, paths: &ContainerPaths, id: &str) -> i32 {
    if let Err(e) = setsid() {
        eprintln!("capstan-shim: setsid: {e}");
    }
    reset_signal_dispositions();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("capstan-shim: set child subreaper: {e}");
        return 1;
    }
    let mut state = match ShimState::load(&paths.state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capstan-shim: {e}");
            return 1;
        }
    };
    let mut log = match LogWriter::open(&paths.log) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("capstan-shim: {e}");
            return 1;
        }
    };
    match supervise(paths, id, &mut state, &mut log) {
        Ok(()) => 0,
        Err(e) => {
            // Whatever failed, the record must not stay "creating"/"running" with a live-looking
            // shim about to exit: say the container could not run, and why.
            eprintln!("capstan-shim: container {id}: {e}");
            let message = format!("capstan: container failed to start: {e}");
            let _ = log.write(Stream::Stderr, Tag::Full, message.as_bytes());
            if state.phase != Phase::Exited {
                state.phase = Phase::Exited;
                state.exit_code = Some(START_ERROR_EXIT_CODE);
                state.reason = Some(REASON_START_ERROR.to_owned());
                state.message = Some(message);
                state.finished_at = Some(now());
                if let Err(e) = state.save(&paths.state) {
                    eprintln!("capstan-shim: saving state: {e}");
                }
            }
            if let Err(e) = cleanup(root, id) {
                eprintln!("capstan-shim: cleanup after failed start: {e}");
            }
            1
        }
    }
}

/// Restores every catchable signal to its default action. Ignored signals survive `execve`,
/// and the shim inherits some (Rust ignores SIGPIPE at startup; the agent's parent may ignore
/// others), which the container's processes would otherwise inherit in turn.
fn reset_signal_dispositions() {
    for sig in (1..32).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()) {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code and the process is single-threaded;
        // failures (e.g. for signals reserved by libc) leave that signal as it was.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Creates and starts the container, then runs the event loop until it exited and its
/// output is drained, and records the exit.
fn supervise(
    paths: &ContainerPaths,
    id: &str,
    state: &mut ShimState,
    log: &mut LogWriter,
) -> Result<()> {
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("pipe"))?;
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(&paths.libcontainer_root)?
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_init(&paths.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()?;
    // The builder dropped our copies of the write ends, so EOF on the pipes means every
    // process holding the container's stdout/stderr is gone.
    container.start()?;
    let pid = container.pid().ok_or_else(|| Error::Shim {
        id: id.to_owned(),
        reason: "started container has no pid".into(),
    })?;
    // A container that already exited has no /proc entry; keep its pid anyway (start time 0
    // never matches, so it reads as not alive).
    state.container = Some(ProcId::of(pid.as_raw()).unwrap_or(ProcId {
        pid: pid.as_raw(),
        start_ticks: 0,
    }));
    state.phase = Phase::Running;
    state.started_at = Some(now());
    state.save(&paths.state)?;
    eprintln!("capstan-shim: container {id} running, pid {pid}");

    let status = event_loop(paths, pid, out_r, err_r, log)?;
    let finished_at = now();
    let exit_code = match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    };
    let oom = exit_code == 128 + Signal::SIGKILL as i32 && oom_killed(&container);
    if let Err(e) = container.delete(true) {
        eprintln!("capstan-shim: deleting container {id}: {e}");
    }
    state.phase = Phase::Exited;
    state.exit_code = Some(exit_code);
    state.reason = Some(exit_reason(exit_code, oom).to_owned());
    state.finished_at = Some(finished_at);
    state.save(&paths.state)?;
    eprintln!("capstan-shim: container {id} exited with {exit_code}");
    Ok(())
}

/// Reads whether the container's memory cgroup recorded an OOM kill (v1 or v2 layout).
fn oom_killed(container: &Container) -> bool {
    let Ok(config) = container.spec() else {
        return false;
    };
    let rel = config
        .cgroup_path
        .strip_prefix("/")
        .unwrap_or(&config.cgroup_path)
        .to_path_buf();
    let candidates = [
        (
            Path::new("/sys/fs/cgroup/memory")
                .join(&rel)
                .join("memory.oom_control"),
            "oom_kill ",
        ),
        (
            Path::new("/sys/fs/cgroup").join(&rel).join("memory.events"),
            "oom_kill ",
        ),
    ];
    candidates.iter().any(|(path, key)| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix(key))
                .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
        })
    })
}

fn read_grace(paths: &ContainerPaths) -> Duration {
    std::fs::read(&paths.stop_request)
        .ok()
        .and_then(|b| serde_json::from_slice::<StopRequest>(&b).ok())
        .map_or(DEFAULT_GRACE, |r| Duration::from_millis(r.grace_ms))
}

struct Output {
    file: Option<File>,
    stream: Stream,
    splitter: LineSplitter,
}

impl Output {
    /// Reads what is available; on EOF or error closes the pipe and flushes the last line.
    fn pump(&mut self, log: &mut LogWriter) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        let lines = match file.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.file = None;
                self.splitter.finish().into_iter().collect()
            }
            Ok(n) => self.splitter.push(&buf[..n]),
        };
        for (tag, line) in lines {
            if let Err(e) = log.write(self.stream, tag, &line) {
                eprintln!("capstan-shim: dropping log line: {e}");
            }
        }
    }
}

/// Single-threaded loop over a signalfd and the two output pipes until the container's init
/// exited and its output is drained (or the drain deadline passed).
fn event_loop(
    paths: &ContainerPaths,
    init: Pid,
    out_r: OwnedFd,
    err_r: OwnedFd,
    log: &mut LogWriter,
) -> Result<WaitStatus> {
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(sig);
    }
    // Blocked only now: libcontainer's children inherit the mask, and the container's init
    // must start with no signals blocked.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(Error::sys("sigprocmask"))?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::sys("signalfd"))?;
    let mut outputs = [
        Output {
            file: Some(File::from(out_r)),
            stream: Stream::Stdout,
            splitter: LineSplitter::default(),
        },
        Output {
            file: Some(File::from(err_r)),
            stream: Stream::Stderr,
            splitter: LineSplitter::default(),
        },
    ];
    let mut exit: Option<(WaitStatus, Instant)> = None;
    let mut kill_at: Option<Instant> = None;

    loop {
        if let Some(status) = reap(init) {
            exit.get_or_insert((status, Instant::now()));
        }
        if let Some((status, at)) = exit {
            let drained = outputs.iter().all(|o| o.file.is_none());
            if drained || at.elapsed() >= DRAIN_AFTER_EXIT {
                for o in &mut outputs {
                    if o.file.take().is_some() {
                        if let Some((tag, line)) = o.splitter.finish() {
                            let _ = log.write(o.stream, tag, &line);
                        }
                    }
                }
                return Ok(status);
            }
        }
        if let Some(at) = kill_at {
            if exit.is_none() && Instant::now() >= at {
                eprintln!("capstan-shim: grace period over, sending SIGKILL to {init}");
                let _ = kill(init, Signal::SIGKILL);
                kill_at = None;
            }
        }

        let timeout = match (exit, kill_at) {
            (Some(_), _) => Duration::from_millis(100),
            (None, Some(at)) => at
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
            (None, None) => Duration::from_secs(1),
        };
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..outputs.len())
            .filter(|i| outputs[*i].file.is_some())
            .collect();
        for i in &open {
            if let Some(f) = outputs[*i].file.as_ref() {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll")(e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.any().unwrap_or(false)).collect();
        drop(fds);
        if ready.first().copied().unwrap_or(false) {
            while let Ok(Some(info)) = sigfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if (signo == Signal::SIGTERM as i32 || signo == Signal::SIGINT as i32)
                    && exit.is_none()
                    && kill_at.is_none()
                {
                    let grace = read_grace(paths);
                    eprintln!("capstan-shim: stop requested, SIGTERM to {init}, grace {grace:?}");
                    let _ = kill(init, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + grace);
                }
            }
        }
        for (slot, i) in open.iter().enumerate() {
            if ready.get(slot + 1).copied().unwrap_or(false) {
                outputs[*i].pump(log);
            }
        }
    }
}

/// Reaps every exited child (we are a subreaper); returns the init's status if it was reaped.
fn reap(init: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(init)
                    && matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..))
                {
                    found = Some(status);
                }
            }
        }
    }
}

/// Runs `argv` in the running container `id` (its namespaces, cgroup, environment and
/// working directory) with this process's stdin, stdout and stderr, waits for it and returns
/// its exit code (128 + signal when killed), or [`EXEC_FAILED`] when it could not start.
fn exec(root: &Path, id: &str, argv: Vec<String>) -> i32 {
    let paths = ContainerPaths::new(root, id);
    let started = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(&paths.libcontainer_root)
        .map(|b| {
            b.as_tenant()
                .with_container_args(argv)
                .with_detach(false)
                .build()
        });
    let pid = match started {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) | Err(e) => {
            eprintln!("capstan-shim: exec in {id} failed: {e}");
            return EXEC_FAILED;
        }
    };
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("capstan-shim: waiting for exec in {id}: {e}");
                return EXEC_FAILED;
            }
        }
    }
}

/// Deletes the libcontainer container `id` (killing what is left, removing its cgroup and
/// state dir). Idempotent: no container is fine.
fn cleanup(root: &Path, id: &str) -> Result<()> {
    let dir = ContainerPaths::new(root, id).libcontainer_root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    let mut container = Container::load(dir)?;
    container.delete(true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_roundtrip_through_parser() {
        let root = Path::new("/var/lib/capstan");
        assert_eq!(
            parse_args(&run_args(root, "c1")),
            Ok(Command::Run {
                root: root.into(),
                id: "c1".into()
            })
        );
        assert_eq!(
            parse_args(&cleanup_args(root, "c1")),
            Ok(Command::Cleanup {
                root: root.into(),
                id: "c1".into()
            })
        );
        assert_eq!(
            parse_args(&exec_args(
                root,
                "c1",
                &["sh".into(), "-c".into(), "--x".into()]
            )),
            Ok(Command::Exec {
                root: root.into(),
                id: "c1".into(),
                argv: vec!["sh".into(), "-c".into(), "--x".into()]
            })
        );
        assert!(parse_args(&exec_args(root, "c1", &[])).is_err());
        assert!(parse_args(&["run".into(), "--root".into()]).is_err());
        assert!(parse_args(&[
            "bogus".into(),
            "--root".into(),
            "/".into(),
            "--id".into(),
            "x".into()
        ])
        .is_err());
    }
}
