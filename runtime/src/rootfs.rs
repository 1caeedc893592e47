//! A container's root filesystem: an overlayfs mount whose lower dirs are the image's unpacked
//! layers and whose upper/work dirs are private to the container. Owns mounting, unmounting and
//! the "is it still mounted" check; it must not unpack layers or decide when to mount.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// The overlay mount options for `lowers` given bottom layer first (overlayfs wants the top
/// layer first). Paths containing `:` or `,` would corrupt the option string and are refused.
pub fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String> {
    if lowers.is_empty() {
        return Err(Error::InvalidImage {
            what: "image".into(),
            reason: "image has no layers".into(),
        });
    }
    let mut all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    all.extend([upper, work]);
    if let Some(bad) = all
        .iter()
        .find(|p| p.to_string_lossy().contains([':', ',']))
    {
        return Err(Error::InvalidSpec {
            id: String::new(),
            reason: format!(
                "path {} contains ':' or ',' and cannot be an overlay dir",
                bad.display()
            ),
        });
    }
    let lower = lowers
        .iter()
        .rev()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    Ok(format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    ))
}

/// Mounts an overlay of `lowers` (bottom first) with `upper`/`work` at `target`, creating the
/// three directories if needed.
///
/// The mount is `volatile` where the kernel has it (5.10+): overlayfs then skips syncing the
/// upper filesystem, above all the `syncfs` of the whole host filesystem that unmounting an
/// overlay otherwise does (tens to hundreds of ms on a busy disk, per container removal).
/// A container's writable layer is thrown away with the container and never remounted, so
/// losing it on a crash loses nothing a restarted container would have seen.
pub fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let options = overlay_options(lowers, upper, work)?;
    for dir in [upper, work, target] {
        fs::create_dir_all(dir).map_err(Error::io("create rootfs dir", dir))?;
    }
    let overlay = |options: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    match overlay(&format!("{options},volatile")) {
        // Older kernels reject the unknown option.
        Err(nix::errno::Errno::EINVAL) => overlay(&options),
        other => other,
    }
    .map_err(Error::sys(format!("mount overlay at {}", target.display())))
}

/// True if `target` is a mount point in this process's mount namespace.
pub fn is_mounted(target: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = target.to_string_lossy();
    // Field 5 is the mount point (octal-escaped spaces aside, which our paths do not have).
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_ref()))
}

/// Unmounts `target` (lazily, so a straggling process cannot block removal). Idempotent:
/// a path that is not mounted, or does not exist, is fine.
pub fn unmount(target: &Path) -> Result<()> {
    while is_mounted(target) {
        umount2(target, MntFlags::MNT_DETACH)
            .map_err(Error::sys(format!("umount {}", target.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_top_layer_first() -> anyhow::Result<()> {
        let lowers = vec![PathBuf::from("/l/bottom"), PathBuf::from("/l/top")];
        let opts = overlay_options(&lowers, Path::new("/c/upper"), Path::new("/c/work"))?;
        assert_eq!(
            opts,
            "lowerdir=/l/top:/l/bottom,upperdir=/c/upper,workdir=/c/work"
        );
        Ok(())
    }

    #[test]
    fn overlay_options_refuse_separators_and_empty_images() {
        let bad = vec![PathBuf::from("/l/a:b")];
        assert!(overlay_options(&bad, Path::new("/u"), Path::new("/w")).is_err());
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w")).is_err());
    }
}
