//! The package layer: a reproducible tar of a package tree, and its strict unpacking.
//!
//! Threat model (unpacking): the tar comes from a registry and is checked against the digest
//! the package manifest names before it is opened, but its content is only vouched for by the
//! signature, which is checked after unpacking (`verify_package` re-hashes the unpacked tree).
//! Until then the tar is hostile: it may name `..`, absolute paths, empty or `.` components,
//! control characters, the names awp.v1 excludes (a planted `manifest.sig`, `*.pyc`), the same
//! path twice, a file below a file, symbolic and hard links, device nodes, FIFOs, sparse or
//! other special entries, and sizes or counts meant to fill the disk. Every entry is refused
//! unless it is a plain file or directory with a clean relative name whose parent directory came
//! before it; counts, total bytes, depth and path length are bounded by [`TreeLimits`]; files
//! are created with `O_EXCL | O_NOFOLLOW` in a fresh directory the caller owns, so nothing is
//! written outside it or over anything. A refused tar leaves its partial directory to the
//! caller, which removes it (the staging directory of a pull).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::attest::tree::{self, Awp1Hasher, TreeError, TreeLimits};

/// Why a layer could not be built or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("the package layer is refused: entry {path:?} {problem}")]
    Refused { path: String, problem: String },
    #[error("the package layer exceeds the limit of {limit} {what}")]
    Limit { what: &'static str, limit: u64 },
    #[error("the package layer is not a readable tar: {0}")]
    Corrupt(String),
    #[error("cannot write the unpacked package at {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A built layer: the tar bytes and the awp.v1 digest of exactly what went into it.
#[derive(Debug)]
pub struct Packed {
    pub tar: Vec<u8>,
    pub tree_digest: String,
    pub files: u64,
    pub bytes: u64,
}

/// What [`pack_into`] wrote.
#[derive(Debug, Clone)]
pub struct PackInfo {
    /// The awp.v1 digest of the files as they were read into the tar.
    pub tree_digest: String,
    pub files: u64,
    pub bytes: u64,
    /// `sha256:<hex>` and size of the tar itself.
    pub layer_digest: String,
    pub layer_size: u64,
}

/// Counts and hashes what passes through, in either direction.
struct Hashing<T> {
    inner: T,
    sha: Sha256,
    n: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            n: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// The fixed metadata of every entry: mtime 0, uid/gid 0, no user or group names, mode 0755
/// for directories and 0644 for files (the store sets its own modes; see `tree::copy_mode`).
fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    // ustar user and group names stay empty (new_ustar leaves them zeroed).
    h
}

/// Builds the reproducible tar of a package tree into `out`, streaming (one buffer, whatever
/// the package's size): the entries awp.v1 hashes (plus the directories that hold them), in
/// awp.v1 record order, with normalised metadata, so the same tree always gives the same bytes.
/// Refuses what awp.v1 refuses (links, special files, bad names, limits) through the same scan.
/// The returned tree digest is computed from the bytes written, so a tree changed during packing
/// cannot be pushed under its old signature unnoticed; a file whose size changes while it is
/// read is refused.
pub fn pack_into(
    root: &Path,
    limits: &TreeLimits,
    out: impl Write,
) -> Result<PackInfo, LayerError> {
    let plan = tree::plan(root, limits)?;
    let mut builder = tar::Builder::new(Hashing::new(out));
    builder.mode(tar::HeaderMode::Deterministic);
    let (dirs, files) = plan.entries();
    let mut entries: Vec<(&str, bool)> = dirs.iter().map(|d| (d.as_str(), true)).collect();
    entries.extend(files.map(|f| (f, false)));
    entries.sort_by(|a, b| tree::component_order(a.0, b.0));
    let mut hasher = Awp1Hasher::new();
    for (rel, is_dir) in entries {
        let corrupt = |e: std::io::Error| LayerError::Corrupt(format!("{rel}: {e}"));
        if is_dir {
            let mut h = header(tar::EntryType::Directory, 0);
            builder
                .append_data(&mut h, format!("{rel}/"), std::io::empty())
                .map_err(corrupt)?;
            continue;
        }
        let file = plan.open_file(rel)?;
        let io_err = |e: std::io::Error| TreeError::Io {
            path: rel.to_owned(),
            source: e,
        };
        let size = file.metadata().map_err(io_err)?.len();
        if hasher.bytes().saturating_add(size) > limits.max_total_bytes {
            return Err(TreeError::Limit {
                what: "bytes",
                limit: limits.max_total_bytes,
            }
            .into());
        }
        let mut reader = Hashing::new(std::io::BufReader::new(file).take(size));
        let mut h = header(tar::EntryType::Regular, size);
        builder
            .append_data(&mut h, rel, &mut reader)
            .map_err(corrupt)?;
        if reader.n != size {
            return Err(TreeError::Unsafe {
                path: rel.to_owned(),
                kind: tree::UnsafeKind::Changed,
            }
            .into());
        }
        let sha: [u8; 32] = reader.sha.finalize().into();
        hasher.add(rel, size, &sha);
    }
    let (files, bytes) = (hasher.files(), hasher.bytes());
    let mut out = builder
        .into_inner()
        .map_err(|e| LayerError::Corrupt(e.to_string()))?;
    out.flush()
        .map_err(|e| LayerError::Corrupt(e.to_string()))?;
    Ok(PackInfo {
        tree_digest: hasher.finish(),
        files,
        bytes,
        layer_digest: format!("sha256:{}", crate::common::hex(&out.sha.finalize())),
        layer_size: out.n,
    })
}

/// [`pack_into`] a buffer.
pub fn pack(root: &Path, limits: &TreeLimits) -> Result<Packed, LayerError> {
    let mut tar = Vec::new();
    let info = pack_into(root, limits, &mut tar)?;
    Ok(Packed {
        tar,
        tree_digest: info.tree_digest,
        files: info.files,
        bytes: info.bytes,
    })
}

fn refused(path: &str, problem: impl Into<String>) -> LayerError {
    LayerError::Refused {
        path: path.chars().take(200).collect(),
        problem: problem.into(),
    }
}

/// Checks one entry's name: relative, UTF-8 without control characters, no empty, `.` or `..`
/// components, no component awp.v1 excludes, within the depth and length limits. Returns the
/// name without a directory's trailing slash.
pub fn check_entry_name(
    raw: &[u8],
    is_dir: bool,
    limits: &TreeLimits,
) -> Result<String, LayerError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let name = tree::check_name(raw).map_err(|k| refused(&shown, k.to_string()))?;
    let name = if is_dir {
        name.strip_suffix('/').unwrap_or(name)
    } else {
        name
    };
    if name.is_empty() || name.starts_with('/') {
        return Err(refused(
            &shown,
            "is not a relative path below the package root",
        ));
    }
    if name.len() > limits.max_path_bytes {
        return Err(LayerError::Limit {
            what: "path bytes",
            limit: limits.max_path_bytes as u64,
        });
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > limits.max_depth + 1 {
        return Err(LayerError::Limit {
            what: "directory levels",
            limit: limits.max_depth as u64,
        });
    }
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(refused(
                &shown,
                "has an empty, `.` or `..` component (path traversal)",
            ));
        }
        let last = i + 1 == parts.len();
        if tree::excluded(part, is_dir || !last) {
            return Err(refused(
                &shown,
                "is a name awp.v1 excludes from the package hash; a signed package never carries it",
            ));
        }
    }
    Ok(name.to_owned())
}

/// What an unpacked layer held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks a package layer into `dest`, an empty directory the caller created and owns.
/// See the module's threat model for what is refused.
pub fn unpack(tar: impl Read, dest: &Path, limits: &TreeLimits) -> Result<Unpacked, LayerError> {
    let mut archive = tar::Archive::new(tar);
    let mut seen_dirs: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let (mut entries_n, mut files, mut bytes) = (0u64, 0u64, 0u64);
    let corrupt = |e: std::io::Error| LayerError::Corrupt(e.to_string());
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let is_dir = match kind {
            tar::EntryType::Regular => false,
            tar::EntryType::Directory => true,
            tar::EntryType::Symlink => return Err(refused(&shown, "is a symbolic link")),
            tar::EntryType::Link => return Err(refused(&shown, "is a hard link")),
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(&shown, "is a device node"));
            }
            tar::EntryType::Fifo => return Err(refused(&shown, "is a FIFO")),
            other => {
                return Err(refused(
                    &shown,
                    format!(
                        "has the unsupported tar entry type {:?}",
                        other.as_byte() as char
                    ),
                ));
            }
        };
        entries_n += 1;
        if entries_n > limits.max_entries {
            return Err(LayerError::Limit {
                what: "entries",
                limit: limits.max_entries,
            });
        }
        let name = check_entry_name(&raw, is_dir, limits)?;
        if !seen.insert(name.clone()) {
            return Err(refused(&shown, "appears twice"));
        }
        if let Some((parent, _)) = name.rsplit_once('/')
            && !seen_dirs.contains(parent)
        {
            return Err(refused(
                &shown,
                "comes before its parent directory (or its parent is not a directory)",
            ));
        }
        let target = dest.join(&name);
        let write_err = |source: std::io::Error| LayerError::Write {
            path: target.display().to_string(),
            source,
        };
        if is_dir {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&target)
                .map_err(write_err)?;
            seen_dirs.insert(name);
            continue;
        }
        let size = entry.header().size().map_err(corrupt)?;
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_total_bytes {
            return Err(LayerError::Limit {
                what: "bytes",
                limit: limits.max_total_bytes,
            });
        }
        files += 1;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&target)
            .map_err(write_err)?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out).map_err(corrupt)?;
        if copied != size {
            return Err(LayerError::Corrupt(format!(
                "{shown}: {copied} of {size} bytes present"
            )));
        }
        out.flush().map_err(write_err)?;
    }
    Ok(Unpacked { files, bytes })
}

/// Unpacks from a file (the downloaded blob).
pub fn unpack_file(path: &Path, dest: &Path, limits: &TreeLimits) -> Result<Unpacked, LayerError> {
    let file = File::open(path).map_err(|source| LayerError::Write {
        path: path.display().to_string(),
        source,
    })?;
    unpack(std::io::BufReader::new(file), dest, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name bytes, type, content, link target.
    type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8], Option<&'a str>);

    fn raw_tar(entries: &[RawEntry<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Write the raw name bytes (no normalisation by the tar crate).
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn try_unpack(tar: &[u8]) -> Result<Unpacked, LayerError> {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("pkg");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(tar, &dest, &TreeLimits::default());
        // Nothing ever lands outside the destination.
        let outside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("pkg")]);
        r
    }

    use tar::EntryType as T;

    #[test]
    fn packing_is_reproducible_and_unpacks_to_the_same_tree() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(a.path().join("code/sub")).unwrap();
        std::fs::write(a.path().join("code/bootstrap.py"), b"print(1)\n").unwrap();
        std::fs::write(a.path().join("code/sub/z.txt"), b"z").unwrap();
        std::fs::write(a.path().join("README"), b"r").unwrap();
        std::fs::write(a.path().join("manifest.sig"), b"{}").unwrap();
        let one = pack(a.path(), &TreeLimits::default()).unwrap();
        // Touch metadata: mtime and mode changes do not change the layer.
        std::fs::write(a.path().join("README"), b"r").unwrap();
        let two = pack(a.path(), &TreeLimits::default()).unwrap();
        assert_eq!(one.tar, two.tar);
        assert_eq!(
            one.tree_digest,
            tree::hash_tree(a.path(), &TreeLimits::default())
                .unwrap()
                .digest
        );
        let b = tempfile::tempdir().unwrap();
        let u = unpack(one.tar.as_slice(), b.path(), &TreeLimits::default()).unwrap();
        assert_eq!(u.files, 3);
        assert_eq!(
            tree::hash_tree(b.path(), &TreeLimits::default())
                .unwrap()
                .digest,
            one.tree_digest
        );
        assert!(!b.path().join("manifest.sig").exists());
    }

    #[test]
    fn a_symlink_in_the_tree_is_not_packed() {
        let a = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", a.path().join("x")).unwrap();
        assert!(matches!(
            pack(a.path(), &TreeLimits::default()),
            Err(LayerError::Tree(TreeError::Unsafe { .. }))
        ));
    }

    #[test]
    fn hostile_entries_are_refused() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("dotdot", raw_tar(&[(b"../evil", T::Regular, b"x", None)])),
            (
                "nested dotdot",
                raw_tar(&[(b"a/../../evil", T::Regular, b"x", None)]),
            ),
            (
                "absolute",
                raw_tar(&[(b"/etc/evil", T::Regular, b"x", None)]),
            ),
            (
                "symlink",
                raw_tar(&[(b"l", T::Symlink, b"", Some("/etc/passwd"))]),
            ),
            (
                "hard link",
                raw_tar(&[
                    (b"f", T::Regular, b"x", None),
                    (b"h", T::Link, b"", Some("/etc/shadow")),
                ]),
            ),
            ("char device", raw_tar(&[(b"null", T::Char, b"", None)])),
            ("block device", raw_tar(&[(b"sda", T::Block, b"", None)])),
            ("fifo", raw_tar(&[(b"p", T::Fifo, b"", None)])),
            (
                "duplicate",
                raw_tar(&[
                    (b"f", T::Regular, b"x", None),
                    (b"f", T::Regular, b"y", None),
                ]),
            ),
            (
                "file below a file",
                raw_tar(&[
                    (b"f", T::Regular, b"x", None),
                    (b"f/g", T::Regular, b"y", None),
                ]),
            ),
            (
                "missing parent",
                raw_tar(&[(b"d/f", T::Regular, b"x", None)]),
            ),
            (
                "excluded manifest",
                raw_tar(&[(b"manifest.sig", T::Regular, b"{}", None)]),
            ),
            (
                "excluded pyc",
                raw_tar(&[(b"x.pyc", T::Regular, b"", None)]),
            ),
            ("control char", raw_tar(&[(b"a\nb", T::Regular, b"", None)])),
            ("non-utf8", raw_tar(&[(b"\xff", T::Regular, b"", None)])),
            ("dot", raw_tar(&[(b"./f", T::Regular, b"", None)])),
        ];
        for (what, tar) in cases {
            let r = try_unpack(&tar);
            assert!(
                matches!(r, Err(LayerError::Refused { .. })),
                "{what}: {r:?}"
            );
        }
    }

    #[test]
    fn sizes_and_counts_are_bounded() {
        let big = vec![0u8; 4096];
        let tar = raw_tar(&[(b"big", T::Regular, &big, None)]);
        let dir = tempfile::tempdir().unwrap();
        let limits = TreeLimits {
            max_total_bytes: 1024,
            ..TreeLimits::default()
        };
        assert!(matches!(
            unpack(tar.as_slice(), dir.path(), &limits),
            Err(LayerError::Limit { what: "bytes", .. })
        ));
        let many = raw_tar(&[
            (b"a", T::Regular, b"", None),
            (b"b", T::Regular, b"", None),
            (b"c", T::Regular, b"", None),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let limits = TreeLimits {
            max_entries: 2,
            ..TreeLimits::default()
        };
        assert!(matches!(
            unpack(many.as_slice(), dir.path(), &limits),
            Err(LayerError::Limit {
                what: "entries",
                ..
            })
        ));
    }

    #[test]
    fn a_truncated_tar_is_refused() {
        let tar = raw_tar(&[(b"f", T::Regular, &[7u8; 2000], None)]);
        let r = try_unpack(&tar[..1024]);
        assert!(matches!(r, Err(LayerError::Corrupt(_))), "{r:?}");
    }
}
