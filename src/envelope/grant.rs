//! Persistent write directories, opened without following links.
//!
//! A worker's persistent write directory (`<data_dir>/<worker_id>/<entry>`) outlives its run,
//! so whatever a worker leaves there is input to the Hall on the next dispatch.
//!
//! Threat model: a hostile worker that knows this design and may write anywhere inside its own
//! persistent directories (and nowhere else), across any number of runs, including concurrent
//! ones. It can plant symlinks, hard links (where its envelope lets it), FIFOs and renamed
//! directories, and race the Hall between a check and a use. What it must never get: the Hall
//! creating, `chown`ing or granting anything outside its own directories.
//!
//! How that holds:
//! - Every component below `data_dir` is created with `mkdirat` and opened with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)` from its parent's descriptor, so a symlink anywhere is
//!   refused (`ELOOP`/`ENOTDIR`), never followed, and no path is resolved twice.
//! - Every component above the leaf must be the Hall's own directory, writable by nobody else:
//!   a worker can rename, replace or plant nothing there. A worker-owned directory above a leaf
//!   (left by an older record whose entry was a parent of today's) is refused.
//! - The leaf must be a real directory owned by the worker's uid (the Hall's uid when the Hall
//!   is not root). A leaf created now is handed over with `fchown` on the opened descriptor.
//! - The caller grants Landlock access from this very descriptor (`OpenedDir::fd`), so what was
//!   checked is what is granted, and the report names it by device and inode.
//! - Nested entries (`out/` and `out/x/`) are refused before anything is opened: the outer one
//!   would let the worker replace the inner one between runs.
//!
//! Anything unexpected is refused with [`GrantError::Unsafe`] (code `write_dir_unsafe`) and
//! nothing is repaired: a directory in a state the Hall did not leave it in needs a human.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

/// A directory the Hall opened and checked; grants are made from `fd`.
#[derive(Debug)]
pub struct OpenedDir {
    /// `O_RDONLY | O_DIRECTORY`, close-on-exec.
    pub fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    /// The path as the kernel resolved the descriptor (`/proc/self/fd`), or as built.
    pub path: PathBuf,
}

impl OpenedDir {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A persistent directory for one declared `filesystem_writes` entry.
#[derive(Debug)]
pub struct OpenedWrite {
    /// The entry as the record declares it (`out/`).
    pub declared: String,
    pub dir: OpenedDir,
    /// Bytes it held before the run (allocated blocks), when a quota applies.
    pub used_bytes: Option<u64>,
}

/// The most entries [`usage`] visits; a tree with more is treated as over any quota.
pub const MAX_USAGE_ENTRIES: u64 = 1_000_000;

/// Bytes allocated under `dir` (st_blocks × 512 of every entry, directories included), walked
/// from its descriptor without following links; `None` when the tree has more than
/// [`MAX_USAGE_ENTRIES`] entries. A hard-linked file is counted once per name (never less than
/// the truth).
pub fn usage(dir: &OpenedDir) -> Result<Option<u64>, GrantError> {
    use nix::dir::{Dir, Type};
    use nix::fcntl::AtFlags;
    use nix::sys::stat::fstatat;
    let first = nix::unistd::dup(&dir.fd).map_err(io(format!("dup {}", dir.path.display())))?;
    let mut stack =
        vec![Dir::from_fd(first).map_err(io(format!("listing {}", dir.path.display())))?];
    let mut total: u64 = 0;
    let mut entries: u64 = 0;
    while let Some(mut d) = stack.pop() {
        let mut subdirs = Vec::new();
        // Entries are stat'ed (and subdirectories opened) through a second descriptor of the
        // same directory, while the first is being read.
        let at = nix::unistd::dup(&d).map_err(io(format!("dup under {}", dir.path.display())))?;
        for e in d.iter() {
            let e = e.map_err(io(format!("listing under {}", dir.path.display())))?;
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            entries += 1;
            if entries > MAX_USAGE_ENTRIES {
                return Ok(None);
            }
            let st = match fstatat(&at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Removed while we looked (a running worker): nothing to count.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io(format!("stat under {}", dir.path.display()))(e)),
            };
            total = total.saturating_add((st.st_blocks as u64).saturating_mul(512));
            if e.file_type() == Some(Type::Directory) || is_dir(&st) {
                subdirs.push(name.to_owned());
            }
        }
        for name in subdirs {
            match Dir::openat(&at, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                Ok(sub) => stack.push(sub),
                Err(Errno::ENOENT) | Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {}
                Err(e) => return Err(io(format!("listing under {}", dir.path.display()))(e)),
            }
        }
    }
    Ok(Some(total))
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A declared entry is not a plain relative path, or entries nest.
    #[error("{0}")]
    Invalid(String),
    /// Something on disk is not what the Hall left there.
    #[error("{0}")]
    Unsafe(String),
    #[error("{what}: {errno}")]
    Io { what: String, errno: Errno },
    /// The worker's persistent directories are at or over their quota.
    #[error("{0}")]
    Quota(String),
}

impl GrantError {
    /// The stable code for answers and receipts.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::Invalid(_) => "envelope_invalid_request",
            GrantError::Unsafe(_) => "write_dir_unsafe",
            GrantError::Io { .. } => "write_dir_unavailable",
            GrantError::Quota(_) => "write_quota_exceeded",
        }
    }
}

/// Who owns what: the Hall (every directory above a leaf) and the worker (the leaves).
#[derive(Debug, Clone, Copy)]
pub struct Owners {
    pub hall_uid: u32,
    pub worker_uid: u32,
    pub worker_gid: u32,
}

/// The components of a declared relative entry (`a/b/` → `[a, b]`), or why it is refused
/// ([`crate::registry::record::plain_relative_write`] is the rule).
pub fn relative_components(entry: &str) -> Result<Vec<&OsStr>, GrantError> {
    crate::registry::record::plain_relative_write(entry)
        .map(|parts| parts.into_iter().map(OsStr::new).collect())
        .ok_or_else(|| {
            GrantError::Invalid(format!(
                "filesystem_writes entry {entry:?} is not a plain relative path (no leading /, \
                 no empty, . or .. components)"
            ))
        })
}

/// Refuses entries of which one is the other or inside the other (the record's own validation,
/// [`crate::registry::record::overlapping_writes`], applied again where it matters).
pub fn check_not_nested(entries: &[String]) -> Result<(), GrantError> {
    match crate::registry::record::overlapping_writes(entries) {
        Some((i, j)) => Err(GrantError::Invalid(format!(
            "filesystem_writes entries {:?} and {:?} overlap: a worker could replace the inner \
             directory between runs; declare separate directories",
            entries[i], entries[j]
        ))),
        None => Ok(()),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(Errno) -> GrantError {
    let what = what.into();
    move |errno| GrantError::Io { what, errno }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens `name` in `parent` as a directory without following a link; a symlink, a FIFO or
/// anything else that is not a directory is [`GrantError::Unsafe`].
fn open_child(parent: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> Result<OwnedFd, GrantError> {
    match openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => Err(GrantError::Unsafe(format!(
            "{} is not a directory (a symlink or another kind of file): the Hall never follows \
             or replaces it; inspect it and remove it by hand",
            shown.display()
        ))),
        Err(e) => Err(io(format!("opening {}", shown.display()))(e)),
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Creates `name` in `parent` when missing; returns whether it was created now.
fn make_child(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    mode: u32,
    shown: &Path,
) -> Result<bool, GrantError> {
    match mkdirat(parent, name, Mode::from_bits_truncate(mode)) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(io(format!("creating {}", shown.display()))(e)),
    }
}

/// A Hall directory: owned by the Hall, writable by no one else.
fn check_hall_dir(st: &FileStat, owners: Owners, shown: &Path) -> Result<(), GrantError> {
    if !is_dir(st) || st.st_uid != owners.hall_uid || st.st_mode & 0o022 != 0 {
        return Err(GrantError::Unsafe(format!(
            "{} must be a directory owned by the Hall (uid {}) and writable by no one else; \
             found uid {}, mode {:o}. A worker may have been granted it by an older record: \
             inspect it and move it aside by hand",
            shown.display(),
            owners.hall_uid,
            st.st_uid,
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

fn resolved(fd: BorrowedFd<'_>, fallback: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| fallback.to_path_buf())
}

/// Opens (creating what is missing) `<data_dir>/<worker_dir>/<entry>` for each relative entry,
/// as described in the module docs. `data_dir` is the operator's: it is opened as configured,
/// and must be the Hall's and writable by no one else.
pub fn open_persistent(
    data_dir: &Path,
    worker_dir: &str,
    entries: &[String],
    owners: Owners,
) -> Result<Vec<OpenedWrite>, GrantError> {
    check_not_nested(entries)?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let worker_comps = relative_components(worker_dir)?;
    if worker_comps.len() != 1 {
        return Err(GrantError::Invalid(format!(
            "worker id {worker_dir:?} cannot name a directory"
        )));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(data_dir)
        .map_err(|e| GrantError::Io {
            what: format!("creating {}", data_dir.display()),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    let root = nix::fcntl::open(
        data_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(format!("opening {}", data_dir.display())))?;
    let st = fstat(&root).map_err(io(format!("stat {}", data_dir.display())))?;
    check_hall_dir(&st, owners, data_dir)?;

    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let comps = relative_components(entry)?;
        let mut shown = data_dir.join(worker_comps[0]);
        // <data_dir>/<worker>/ and every component above the leaf: the Hall's, 0711 (the
        // worker uid traverses them, nobody lists them).
        make_child(root.as_fd(), worker_comps[0], 0o711, &shown)?;
        let mut dir = open_child(root.as_fd(), worker_comps[0], &shown)?;
        let st = fstat(&dir).map_err(io(format!("stat {}", shown.display())))?;
        check_hall_dir(&st, owners, &shown)?;
        let (leaf, above) = comps.split_last().expect("at least one component");
        for c in above {
            shown.push(c);
            make_child(dir.as_fd(), c, 0o711, &shown)?;
            let next = open_child(dir.as_fd(), c, &shown)?;
            let st = fstat(&next).map_err(io(format!("stat {}", shown.display())))?;
            check_hall_dir(&st, owners, &shown)?;
            dir = next;
        }
        shown.push(leaf);
        let created = make_child(dir.as_fd(), leaf, 0o700, &shown)?;
        let fd = open_child(dir.as_fd(), leaf, &shown)?;
        let mut st = fstat(&fd).map_err(io(format!("stat {}", shown.display())))?;
        let hall_is_root = owners.hall_uid == 0;
        if created && hall_is_root && st.st_uid == 0 {
            // Ours, made a moment ago in a directory only we can write: hand it over through
            // the descriptor, never by path.
            fchown(
                &fd,
                Some(Uid::from_raw(owners.worker_uid)),
                Some(Gid::from_raw(owners.worker_gid)),
            )
            .map_err(io(format!("handing {} to the worker", shown.display())))?;
            st = fstat(&fd).map_err(io(format!("stat {}", shown.display())))?;
        }
        let expected = if hall_is_root {
            owners.worker_uid
        } else {
            owners.hall_uid
        };
        if !is_dir(&st) || st.st_uid != expected {
            return Err(GrantError::Unsafe(format!(
                "{} must be a directory owned by the worker (uid {expected}); found uid {}, \
                 mode {:o}: inspect it and fix or remove it by hand",
                shown.display(),
                st.st_uid,
                st.st_mode & 0o7777
            )));
        }
        let path = resolved(fd.as_fd(), &shown);
        out.push(OpenedWrite {
            declared: entry.clone(),
            dir: OpenedDir {
                fd,
                dev: st.st_dev,
                ino: st.st_ino,
                path,
            },
            used_bytes: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn owners() -> Owners {
        let me = nix::unistd::geteuid().as_raw();
        Owners {
            hall_uid: me,
            worker_uid: if me == 0 { 65534 } else { me },
            worker_gid: if me == 0 {
                65534
            } else {
                nix::unistd::getegid().as_raw()
            },
        }
    }

    fn data() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        d
    }

    #[test]
    fn entries_must_be_plain_relative_and_not_nested() {
        for bad in ["", "/", "/abs/", "a/../b", "./a", "a//b", "..", "a/./b"] {
            assert!(relative_components(bad).is_err(), "{bad:?}");
        }
        assert_eq!(relative_components("a/b/").unwrap(), ["a", "b"]);
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_not_nested(&v(&["out/", "in/", "out2/", "o/ut/"])).is_ok());
        for (a, b) in [
            ("out/", "out/x/"),
            ("out/x", "out"),
            ("out/", "out"),
            ("a//b/", "a/b/c"),
        ] {
            let e = check_not_nested(&v(&[a, b])).unwrap_err();
            assert!(matches!(e, GrantError::Invalid(_)), "{a} {b}: {e}");
        }
    }

    #[test]
    fn a_fresh_leaf_is_created_for_the_worker_and_reopened_later() {
        let d = data();
        let o = owners();
        let got = open_persistent(d.path(), "org.x.w", &["out/".into(), "a/b/".into()], o).unwrap();
        assert_eq!(got.len(), 2);
        let meta = std::fs::metadata(d.path().join("org.x.w/out")).unwrap();
        assert_eq!(meta.uid(), o.worker_uid);
        assert_eq!((meta.dev(), meta.ino()), (got[0].dir.dev, got[0].dir.ino));
        assert_eq!(got[0].dir.path, d.path().join("org.x.w/out"));
        assert_eq!(
            std::fs::metadata(d.path().join("org.x.w/a")).unwrap().uid(),
            o.hall_uid
        );
        // The second time nothing is created and the same directories come back.
        let again = open_persistent(d.path(), "org.x.w", &["out/".into()], o).unwrap();
        assert_eq!(again[0].dir.ino, got[0].dir.ino);
    }

    #[test]
    fn a_symlinked_leaf_or_parent_is_refused_and_its_target_untouched() {
        let d = data();
        let o = owners();
        let target = tempfile::tempdir().unwrap();
        std::fs::set_permissions(target.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let before = std::fs::metadata(target.path()).unwrap();
        std::fs::create_dir(d.path().join("org.x.w")).unwrap();
        std::fs::set_permissions(
            d.path().join("org.x.w"),
            std::fs::Permissions::from_mode(0o711),
        )
        .unwrap();
        std::os::unix::fs::symlink(target.path(), d.path().join("org.x.w/out")).unwrap();
        let e = open_persistent(d.path(), "org.x.w", &["out/".into()], o).unwrap_err();
        assert_eq!(e.code(), "write_dir_unsafe", "{e}");
        std::os::unix::fs::symlink(target.path(), d.path().join("org.x.w/a")).unwrap();
        let e = open_persistent(d.path(), "org.x.w", &["a/b/".into()], o).unwrap_err();
        assert_eq!(e.code(), "write_dir_unsafe", "{e}");
        // A worker directory symlinked in place of the whole worker directory.
        let d2 = data();
        std::os::unix::fs::symlink(target.path(), d2.path().join("org.x.w")).unwrap();
        let e = open_persistent(d2.path(), "org.x.w", &["out/".into()], o).unwrap_err();
        assert_eq!(e.code(), "write_dir_unsafe", "{e}");
        let after = std::fs::metadata(target.path()).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (before.uid(), before.gid(), before.mode())
        );
        assert!(std::fs::read_dir(target.path()).unwrap().next().is_none());
    }

    #[test]
    fn a_fifo_or_file_leaf_is_refused() {
        let d = data();
        let o = owners();
        std::fs::create_dir(d.path().join("org.x.w")).unwrap();
        std::fs::set_permissions(
            d.path().join("org.x.w"),
            std::fs::Permissions::from_mode(0o711),
        )
        .unwrap();
        nix::unistd::mkfifo(
            &d.path().join("org.x.w/out"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::write(d.path().join("org.x.w/file"), b"x").unwrap();
        for e in ["out/", "file/"] {
            let err = open_persistent(d.path(), "org.x.w", &[e.into()], o).unwrap_err();
            assert_eq!(err.code(), "write_dir_unsafe", "{e}: {err}");
        }
    }

    #[test]
    fn usage_counts_what_is_there_without_following_links() {
        let d = data();
        let got = open_persistent(d.path(), "org.x.w", &["out/".into()], owners()).unwrap();
        let before = usage(&got[0].dir).unwrap().unwrap();
        let out = d.path().join("org.x.w/out");
        std::fs::create_dir(out.join("sub")).unwrap();
        std::fs::write(out.join("sub/big"), vec![1u8; 1 << 20]).unwrap();
        // A link to a large tree elsewhere counts as the link only.
        std::os::unix::fs::symlink("/usr", out.join("usr")).unwrap();
        let after = usage(&got[0].dir).unwrap().unwrap();
        assert!(after >= before + (1 << 20), "{before} {after}");
        assert!(after < before + (2 << 20), "{before} {after}");
    }

    #[test]
    fn a_group_writable_data_dir_is_refused() {
        let d = data();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_persistent(d.path(), "org.x.w", &["out/".into()], owners()).unwrap_err();
        assert_eq!(e.code(), "write_dir_unsafe", "{e}");
    }
}
