//! Real network namespaces, as root: every test owns a unique root under
//! `/run/capstan-test-<random>/` that a Drop guard unmounts and removes, also on failure.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use net::mount::is_mount_point;
use net::{link_is_up, run_in_netns, Error, NetnsManager};
use nix::mount::{umount2, MntFlags};

/// A unique test directory; on drop, unmounts every netns file and the root, then removes it.
struct TestRoot {
    base: PathBuf,
    root: PathBuf,
}

impl TestRoot {
    fn new() -> TestRoot {
        let base = PathBuf::from(format!("/run/capstan-test-{:016x}", rand::random::<u64>()));
        let root = base.join("netns");
        TestRoot { base, root }
    }

    fn manager(&self) -> NetnsManager {
        NetnsManager::new(&self.root).expect("netns manager opens its root")
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                while umount2(&entry.path(), MntFlags::MNT_DETACH).is_ok() {}
            }
        }
        while umount2(&self.root, MntFlags::MNT_DETACH).is_ok() {}
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// The namespace inode a path refers to (nsfs mount or `/proc/.../ns/net` link).
fn ns_inode(path: &Path) -> u64 {
    fs::metadata(path).expect("stat namespace").ino()
}

/// Filesystem type of the mount at exactly `path`, from /proc/self/mountinfo.
fn mount_fstype(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines().rev().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        (pre.split(' ').nth(4)? == path.to_str()?)
            .then(|| post.split(' ').next().unwrap_or_default().to_owned())
    })
}

#[test]
fn create_makes_an_nsfs_mount_distinct_from_ours_with_loopback_up() {
    let test = TestRoot::new();
    let netns = test.manager();

    let path = netns.create("pod-a").expect("create netns");

    assert_eq!(path, netns.path("pod-a"));
    assert_eq!(path, test.root.join("pod-a"));
    assert_eq!(mount_fstype(&path).as_deref(), Some("nsfs"));
    assert!(netns.exists("pod-a"));
    assert_ne!(ns_inode(&path), ns_inode(Path::new("/proc/self/ns/net")));

    let (inside_inode, lo_up) = run_in_netns(&path, || {
        (
            ns_inode(Path::new("/proc/thread-self/ns/net")),
            link_is_up("lo"),
        )
    })
    .expect("run in netns");
    assert_eq!(
        inside_inode,
        ns_inode(&path),
        "thread joined the pod's namespace"
    );
    assert!(
        lo_up.expect("query lo"),
        "lo is up inside the pod namespace"
    );
}

#[test]
fn loopback_inside_carries_tcp() {
    let test = TestRoot::new();
    let netns = test.manager();
    let path = netns.create("pod-tcp").expect("create netns");

    let echoed = run_in_netns(&path, || -> std::io::Result<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"ping")?;
        let mut got = [0u8; 4];
        server.read_exact(&mut got)?;
        Ok(got.to_vec())
    })
    .expect("run in netns")
    .expect("tcp over lo inside the namespace");
    assert_eq!(echoed, b"ping");
}

#[test]
fn each_pod_gets_its_own_namespace() {
    let test = TestRoot::new();
    let netns = test.manager();
    let a = netns.create("pod-a").expect("create a");
    let b = netns.create("pod-b").expect("create b");
    assert_ne!(ns_inode(&a), ns_inode(&b));
}

#[test]
fn create_twice_returns_the_same_namespace() {
    let test = TestRoot::new();
    let netns = test.manager();
    let first = netns.create("pod-a").expect("first create");
    let inode = ns_inode(&first);
    let second = netns.create("pod-a").expect("second create");
    assert_eq!(first, second);
    assert_eq!(ns_inode(&second), inode);
    // Still exactly one mount on the path: a second create must not stack another.
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let needle = format!(" {} ", first.display());
    assert_eq!(info.lines().filter(|l| l.contains(&needle)).count(), 1);
}

#[test]
fn delete_removes_mount_and_file_and_is_idempotent() {
    let test = TestRoot::new();
    let netns = test.manager();
    let path = netns.create("pod-a").expect("create");

    netns.delete("pod-a").expect("delete");
    assert!(!netns.exists("pod-a"));
    assert!(!path.exists(), "netns file removed");
    assert_eq!(mount_fstype(&path), None, "no mount left at the path");
    assert!(netns.list().expect("list").is_empty());

    netns.delete("pod-a").expect("second delete is fine");
    netns
        .delete("never-created")
        .expect("deleting a missing netns is fine");
}

#[test]
fn create_after_delete_gives_a_fresh_namespace() {
    let test = TestRoot::new();
    let netns = test.manager();
    let path = netns.create("pod-a").expect("create");
    let old = ns_inode(&path);
    netns.delete("pod-a").expect("delete");
    let path = netns.create("pod-a").expect("create again");
    assert!(netns.exists("pod-a"));
    assert_ne!(ns_inode(&path), old);
}

#[test]
fn create_reuses_a_plain_file_left_by_a_crash() {
    let test = TestRoot::new();
    let netns = test.manager();
    fs::write(netns.path("pod-a"), b"").expect("stray file");
    assert!(!netns.exists("pod-a"), "a plain file is not a namespace");
    let path = netns.create("pod-a").expect("create over stray file");
    assert_eq!(mount_fstype(&path).as_deref(), Some("nsfs"));
}

#[test]
fn list_returns_live_namespaces_sorted_and_skips_stray_files() {
    let test = TestRoot::new();
    let netns = test.manager();
    netns.create("pod-b").expect("create b");
    netns.create("pod-a").expect("create a");
    fs::write(netns.path("stray"), b"").expect("stray file");
    assert_eq!(netns.list().expect("list"), vec!["pod-a", "pod-b"]);
}

#[test]
fn invalid_names_are_refused_and_touch_nothing() {
    let test = TestRoot::new();
    let netns = test.manager();
    let too_long = "p".repeat(65);
    for name in ["", "..", "../escape", "a/b", too_long.as_str()] {
        for result in [netns.create(name).map(drop), netns.delete(name)] {
            match result {
                Err(Error::InvalidName { field, value, .. }) => {
                    assert_eq!(field, "netns name");
                    assert_eq!(value, name);
                }
                other => panic!("{name:?} was accepted: {other:?}"),
            }
        }
        assert!(!netns.exists(name));
    }
    assert_eq!(fs::read_dir(&test.root).expect("read root").count(), 0);
    assert!(!test.base.join("escape").exists());
}

#[test]
fn root_becomes_a_shared_mount_point_and_reopens() {
    let test = TestRoot::new();
    let netns = test.manager();
    assert!(is_mount_point(netns.root()).expect("mountinfo"));
    netns.create("pod-a").expect("create");

    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let root_line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == test.root.to_str())
        .expect("root in mountinfo");
    assert!(
        root_line.contains(" shared:"),
        "root is shared: {root_line}"
    );

    // A second manager (e.g. after a restart) sees the existing namespace, no new mount.
    let again = test.manager();
    assert_eq!(again.list().expect("list"), vec!["pod-a"]);
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let mounts = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == test.root.to_str())
        .count();
    assert_eq!(mounts, 1);
}

#[test]
fn run_in_netns_refuses_a_path_that_is_not_a_namespace() {
    let test = TestRoot::new();
    let netns = test.manager();
    let plain = netns.path("plain");
    fs::write(&plain, b"").expect("plain file");
    match run_in_netns(&plain, || ()) {
        Err(Error::Sys { op, source, .. }) => {
            assert_eq!(op, "enter netns");
            assert_eq!(source, nix::errno::Errno::EINVAL);
        }
        other => panic!("entered a plain file: {other:?}"),
    }
    match run_in_netns(&netns.path("missing"), || ()) {
        Err(Error::Io { op, .. }) => assert_eq!(op, "open netns"),
        other => panic!("entered a missing file: {other:?}"),
    }
}

#[test]
fn run_in_netns_leaves_the_callers_namespace_alone_and_reports_panics() {
    let test = TestRoot::new();
    let netns = test.manager();
    let path = netns.create("pod-a").expect("create");
    let before = ns_inode(Path::new("/proc/thread-self/ns/net"));
    let value = run_in_netns(&path, || 42).expect("run");
    assert_eq!(value, 42);
    assert_eq!(ns_inode(Path::new("/proc/thread-self/ns/net")), before);

    let panicked = run_in_netns(&path, || panic!("boom"));
    assert!(
        matches!(panicked, Err(Error::Thread { .. })),
        "{panicked:?}"
    );
}

#[test]
fn lo_starts_down_in_a_bare_namespace_so_the_up_check_means_something() {
    // Contrast for the create test: a namespace nobody configured has `lo` down.
    let lo_up = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        link_is_up("lo")
    })
    .join()
    .expect("thread");
    assert!(!lo_up.expect("query lo"));
    assert!(matches!(
        std::thread::spawn(|| link_is_up("no-such-link"))
            .join()
            .expect("thread"),
        Err(Error::LinkNotFound { .. })
    ));
}
