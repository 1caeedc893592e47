//! Network namespaces as bind-mounted files under a root directory (like `ip netns`), and
//! running code inside one. It owns the thread discipline: namespaces are only ever
//! unshared or entered on a dedicated, short-lived std thread, never on the caller's thread
//! (which may be a tokio worker). It must not configure links beyond bringing `lo` up.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};
use crate::link::set_link_up;
use crate::mount;
use crate::name::validate_netns_name;

/// This thread's own network namespace, as a path the kernel lets us bind-mount.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Upper bound on stacked mounts `delete` peels off one path (racing creators can stack them).
const MAX_STACKED_MOUNTS: usize = 8;

/// Creates, finds and deletes named network namespaces kept as nsfs bind mounts in one root
/// directory. Blocking; async callers use `spawn_blocking`.
#[derive(Debug)]
pub struct NetnsManager {
    root: PathBuf,
    /// Serialises create/delete so two calls for one name cannot stack mounts.
    lock: Mutex<()>,
}

impl NetnsManager {
    /// Opens the netns root `root` (e.g. `/run/capstan/netns`), creating it if missing and
    /// making it a shared mount point of its own (see [`mount::ensure_shared_mount_point`]).
    pub fn new(root: impl Into<PathBuf>) -> Result<NetnsManager> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|source| io("create netns root", &root, source))?;
        let root = fs::canonicalize(&root)
            .map_err(|source| io("canonicalize netns root", &root, source))?;
        mount::ensure_shared_mount_point(&root)?;
        Ok(NetnsManager {
            root,
            lock: Mutex::new(()),
        })
    }

    /// The (canonical) root directory holding the netns files.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `<root>/<name>` holding a new network namespace with `lo` up and returns its
    /// path. Idempotent: an existing live namespace is returned as is.
    pub fn create(&self, name: &str) -> Result<PathBuf> {
        validate_netns_name(name)?;
        let _serial = self.serialise();
        let path = self.path(name);
        if mount::is_nsfs(&path)? {
            tracing::debug!(message = "netns already exists", netns = name, path = %path.display());
            return Ok(path);
        }
        // A plain file here is a leftover of a crash between create and mount: reuse it.
        OpenOptions::new()
            .read(true)
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o444)
            .open(&path)
            .map_err(|source| io("create netns file", &path, source))?;
        let target = path.clone();
        if let Err(err) = on_fresh_thread(move || new_netns_at(&target)) {
            // The namespace died with the thread unless the bind mount happened; undo both.
            let _ = mount::detach(&path);
            let _ = fs::remove_file(&path);
            return Err(err);
        }
        tracing::info!(message = "netns created", netns = name, path = %path.display());
        Ok(path)
    }

    /// The path `<root>/<name>` would have; does not validate `name` or touch the disk.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// True if `<root>/<name>` is a live netns mount, not merely a file; false for invalid
    /// names and on errors.
    pub fn exists(&self, name: &str) -> bool {
        validate_netns_name(name).is_ok() && mount::is_nsfs(&self.path(name)).unwrap_or(false)
    }

    /// Unmounts and removes `<root>/<name>`. Idempotent: a missing namespace is fine. The
    /// namespace itself lives on while processes are still in it.
    pub fn delete(&self, name: &str) -> Result<()> {
        validate_netns_name(name)?;
        let _serial = self.serialise();
        let path = self.path(name);
        for _ in 0..MAX_STACKED_MOUNTS {
            if !mount::is_nsfs(&path)? {
                break;
            }
            mount::detach(&path)?;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(message = "netns deleted", netns = name, path = %path.display());
                Ok(())
            }
            Err(source) if source.kind() == ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io("remove netns file", &path, source)),
        }
    }

    /// Names of the live netns mounts under the root, sorted. Stray plain files are skipped.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries =
            fs::read_dir(&self.root).map_err(|source| io("list netns root", &self.root, source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| io("list netns root", &self.root, source))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_netns_name(&name).is_ok() && mount::is_nsfs(&entry.path())? {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn serialise(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`, so a poisoned lock holds no broken state.
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path` and returns its
/// result. The caller's thread never changes namespace.
pub fn run_in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let netns = File::open(path).map_err(|source| io("open netns", path, source))?;
    let path = path.to_path_buf();
    on_fresh_thread(move || {
        setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
            op: "enter netns",
            path,
            source,
        })?;
        drop(netns);
        Ok(f())
    })
}

/// Body of the creating thread: a new namespace, `lo` up, then pinned by a bind mount, so a
/// namespace is only ever visible fully set up.
fn new_netns_at(target: &Path) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| Error::Sys {
        op: "unshare network namespace",
        path: target.to_path_buf(),
        source,
    })?;
    set_link_up("lo")?;
    mount::bind_file(Path::new(THREAD_NETNS), target)
}

/// Runs `f` on a new named std thread and joins it; the thread (and any namespace it
/// entered) ends with `f`.
fn on_fresh_thread<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let handle = std::thread::Builder::new()
        .name("capstan-netns".to_owned())
        .spawn(f)
        .map_err(|err| Error::Thread {
            what: format!("failed to spawn: {err}"),
        })?;
    handle.join().map_err(|_| Error::Thread {
        what: "panicked".to_owned(),
    })?
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
