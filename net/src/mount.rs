//! Mount-level plumbing for netns files: turning the netns root into a shared mount point,
//! bind-mounting and detaching nsfs files, and telling a live netns mount from a plain file.
//! It owns the `/proc/self/mountinfo` parser; it must not create or enter namespaces.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::error::{Error, Result};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Makes `root` a mount point in its own shared peer group, like iproute2 does for
/// `/run/netns`.
///
/// Why: bind-mounting nsfs files needs no special propagation, but where they end up does.
/// If `root` were just a directory on a shared parent (systemd makes `/` shared), every netns
/// mount would be copied into all peers of that parent, each copy pinning the namespace after
/// `delete`. So a fresh mount point first leaves the parent's peer group (`MS_PRIVATE`), then
/// becomes shared in a group of its own (`MS_SHARED`): mount namespaces cloned later (the
/// containers') receive our unmounts as slaves, so `delete` really frees the namespace.
/// An existing mount point is only made shared, keeping any slaves it already has.
pub fn ensure_shared_mount_point(root: &Path) -> Result<()> {
    if !is_mount_point(root)? {
        mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| sys("bind-mount netns root onto itself", root, source))?;
        set_propagation(root, MsFlags::MS_PRIVATE)?;
        tracing::debug!(message = "netns root made a mount point", path = %root.display());
    }
    set_propagation(root, MsFlags::MS_SHARED)
}

fn set_propagation(root: &Path, flag: MsFlags) -> Result<()> {
    mount(
        None::<&str>,
        root,
        None::<&str>,
        flag | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| sys("set propagation of netns root", root, source))
}

/// Bind-mounts `source` (e.g. `/proc/thread-self/ns/net`) onto the existing file `target`.
pub fn bind_file(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| sys("bind-mount netns", target, source))
}

/// Lazily unmounts `target`; a path that is not (or no longer) mounted counts as done.
pub fn detach(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(source) => Err(sys("unmount netns", target, source)),
    }
}

/// True if `path` is a live nsfs mount (a namespace file), false if it is missing or is
/// anything else, such as the plain file left behind by a crash.
pub fn is_nsfs(path: &Path) -> Result<bool> {
    match statfs(path) {
        Ok(stat) => Ok(stat.filesystem_type() == NSFS_MAGIC),
        Err(Errno::ENOENT) => Ok(false),
        Err(source) => Err(sys("statfs", path, source)),
    }
}

/// True if `path` (already canonical) is a mount point in this mount namespace.
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| Error::Io {
        op: "read mountinfo",
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    let found = mount_points(&text).any(|point| point == path);
    Ok(found)
}

/// Mount points listed in a `/proc/<pid>/mountinfo` text, with octal escapes decoded.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
}

/// Decodes the `\ooo` escapes the kernel uses for space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sys(op: &'static str, path: &Path, source: Errno) -> Error {
    Error::Sys {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
22 27 0:21 / /proc rw,relatime - proc proc rw
61 27 0:4 net:[4026532301] /run/capstan/netns/pod\\040a rw shared:5 - nsfs nsfs rw
62 27 0:4 / /odd\\134dir\\011x rw - tmpfs tmpfs rw
";

    #[test]
    fn mount_points_are_the_fifth_field() {
        let points: Vec<PathBuf> = mount_points(SAMPLE).collect();
        assert_eq!(points[0], PathBuf::from("/"));
        assert_eq!(points[1], PathBuf::from("/proc"));
        assert_eq!(points.len(), 4);
    }

    #[test]
    fn mount_points_decode_octal_escapes() {
        let points: Vec<PathBuf> = mount_points(SAMPLE).collect();
        assert_eq!(points[2], PathBuf::from("/run/capstan/netns/pod a"));
        assert_eq!(points[3], PathBuf::from("/odd\\dir\tx"));
    }

    #[test]
    fn a_lone_backslash_is_kept() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\"), "end\\");
    }

    #[test]
    fn proc_is_a_mount_point() -> Result<()> {
        assert!(is_mount_point(Path::new("/proc"))?);
        Ok(())
    }
}
