//! Unpacking one image layer (a tar, gzip- or zstd-compressed or not) into its own directory so that it
//! can serve directly as an overlayfs lower dir. Owns whiteout translation: OCI `.wh.<name>`
//! entries become overlay whiteouts (0/0 character devices) and `.wh..wh..opq` marks the
//! directory opaque (`trusted.overlay.opaque=y`). It must not know about images or containers.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::error::{Error, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// What a layer tar entry means for the unpacked directory.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A normal file, dir, link or device: unpack it as is.
    Regular,
    /// A whiteout hiding `target` (relative path) from lower layers.
    Whiteout(PathBuf),
    /// Marks directory `dir` (relative path, may be empty for the root) opaque.
    Opaque(PathBuf),
    /// An entry path escaping the layer root; it is skipped.
    Unsafe,
}

/// Classifies a tar entry path. Pure.
pub fn classify(path: &Path) -> EntryKind {
    let mut clean = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) => clean.push(c),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return EntryKind::Unsafe,
        }
    }
    let Some(name) = clean.file_name().and_then(|n| n.to_str()) else {
        return EntryKind::Regular;
    };
    let parent = clean.parent().map(Path::to_path_buf).unwrap_or_default();
    if name == OPAQUE_MARKER {
        EntryKind::Opaque(parent)
    } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            EntryKind::Unsafe
        } else {
            EntryKind::Whiteout(parent.join(hidden))
        }
    } else {
        EntryKind::Regular
    }
}

/// Wraps a layer stream in a gzip decoder if it starts with the gzip magic bytes.
pub fn decompressed(reader: impl Read + 'static) -> Result<Box<dyn Read>> {
    let mut buf = BufReader::new(reader);
    let head = buf.fill_buf().map_err(|source| Error::Io {
        op: "read layer",
        path: PathBuf::new(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(GzDecoder::new(buf)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // One zstd frame per layer, as `zstd`/containerd write them.
        let decoder =
            ruzstd::decoding::StreamingDecoder::new(buf).map_err(|e| Error::InvalidImage {
                what: "layer".into(),
                reason: format!("bad zstd frame: {e}"),
            })?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(buf))
    }
}

/// Unpacks an (uncompressed) layer tar into `dest`, which must exist and be empty.
/// Ownership, permissions, xattrs and mtimes are preserved.
pub fn unpack_layer(reader: impl Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(Error::io("read layer tar", dest))?;
    for entry in entries {
        let mut entry = entry.map_err(Error::io("read layer entry", dest))?;
        let path = entry
            .path()
            .map_err(Error::io("layer entry path", dest))?
            .into_owned();
        match classify(&path) {
            EntryKind::Regular => {
                entry
                    .unpack_in(dest)
                    .map_err(Error::io("unpack layer entry", dest.join(&path)))?;
            }
            EntryKind::Whiteout(target) => make_whiteout(&dest.join(target))?,
            EntryKind::Opaque(dir) => make_opaque(&dest.join(dir))?,
            EntryKind::Unsafe => {
                tracing::warn!(path = %path.display(), "skipping layer entry outside the layer root");
            }
        }
    }
    Ok(())
}

fn make_whiteout(target: &Path) -> Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(Error::io("create whiteout parent", parent))?;
    }
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(target).map_err(Error::io("replace with whiteout", target))?
        }
        Ok(_) => fs::remove_file(target).map_err(Error::io("replace with whiteout", target))?,
        Err(_) => {}
    }
    mknod(target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
        .map_err(Error::sys(format!("mknod whiteout {}", target.display())))
}

fn make_opaque(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io("create opaque dir", dir))?;
    xattr::set(dir, OPAQUE_XATTR, b"y").map_err(Error::io("set opaque xattr", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn classify_whiteouts_opaque_and_escapes() {
        assert_eq!(classify(Path::new("./etc/passwd")), EntryKind::Regular);
        assert_eq!(
            classify(Path::new("etc/.wh.shadow")),
            EntryKind::Whiteout("etc/shadow".into())
        );
        assert_eq!(
            classify(Path::new(".wh.tmp")),
            EntryKind::Whiteout("tmp".into())
        );
        assert_eq!(
            classify(Path::new("var/.wh..wh..opq")),
            EntryKind::Opaque("var".into())
        );
        assert_eq!(classify(Path::new("../x")), EntryKind::Unsafe);
        assert_eq!(classify(Path::new("a/.wh..")), EntryKind::Unsafe);
    }

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> anyhow::Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d)?;
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, std::io::empty())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }

    #[test]
    fn unpack_translates_whiteouts_for_overlay() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = tar_with(&[
            ("etc/", None),
            ("etc/hostname", Some(b"box\n")),
            ("etc/.wh.shadow", Some(b"")),
            ("var/.wh..wh..opq", Some(b"")),
        ])?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &data)?;
        let reader = decompressed(std::io::Cursor::new(gz.finish()?))?;
        unpack_layer(reader, dir.path())?;
        assert_eq!(fs::read(dir.path().join("etc/hostname"))?, b"box\n");
        let wh = fs::symlink_metadata(dir.path().join("etc/shadow"))?;
        assert!(wh.file_type().is_char_device(), "whiteout is a char device");
        assert!(!dir.path().join("etc/.wh.shadow").exists());
        assert_eq!(
            xattr::get(dir.path().join("var"), OPAQUE_XATTR)?,
            Some(b"y".to_vec())
        );
        Ok(())
    }

    #[test]
    fn zstd_layers_are_decompressed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let data = tar_with(&[("etc/", None), ("etc/hostname", Some(b"zbox\n"))])?;
        let compressed = ruzstd::encoding::compress_to_vec(
            data.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert!(compressed.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
        unpack_layer(decompressed(std::io::Cursor::new(compressed))?, dir.path())?;
        assert_eq!(fs::read(dir.path().join("etc/hostname"))?, b"zbox\n");
        Ok(())
    }
}
