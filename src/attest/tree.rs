//! The awp.v1 package hash, byte-compatible with PyHall's `canonical_package_hash`, computed
//! without ever following a link — optionally while copying the exact bytes hashed.
//!
//! **Definition (PyHall, pyhall-spec §4).** One record `"{rel}\n{size}\n{sha256hex}\n"` per
//! regular file, in component-wise path order (`a/b.txt` before `a-b.txt`, because `"a"` <
//! `"a-b"`; components compare by code point), concatenated as UTF-8 and hashed with SHA-256.
//! Skipped: directories themselves (empty ones leave no trace), every path with a component
//! named `.git`, `__pycache__`, `.DS_Store`, `manifest.json`, `manifest.sig` or `manifest.tmp`,
//! and every non-directory whose name ends in `.pyc`. An empty package hashes to SHA-256("").
//!
//! **Threat model.** The package directory is written by someone the Hall does not trust (a
//! developer, a build, an agent). They may plant links, devices or FIFOs, craft names, and change
//! files while the Hall reads them. The Hall must hash exactly the bytes it will run and nothing
//! outside the package. So, where PyHall is unsafe, this module refuses with a typed error
//! ([`UnsafeKind`]) instead of hashing:
//! - symbolic links of any kind (PyHall follows file links — hashing content outside the package
//!   that can be swapped later — and silently skips directory links whose contents stay
//!   importable), FIFOs, sockets and devices (PyHall blocks on a FIFO or reads a device);
//! - names that are not UTF-8 (PyHall raises) or contain control characters: with `\n` in a name
//!   the record stream is ambiguous and one file can impersonate several (pyhall-spec §4 V4);
//! - trees beyond [`TreeLimits`] (file count, total bytes, depth, path length).
//!
//! Every entry is opened relative to a directory descriptor with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and `O_NOFOLLOW`, so a link swapped in between
//! the directory scan and the open fails instead of being followed. Sizes and digests come from
//! the bytes actually read, and when a destination is given those same bytes are written to it
//! from the same buffer: the copy is, by construction, what was hashed (see `store`).
//!
//! Deliberate divergences from PyHall, each a refusal or a fix of an accident:
//! - the refusals above;
//! - exclusions apply to components of the path *relative to the package root*; PyHall tests
//!   the absolute path, so a package stored under any directory named `.git` or `__pycache__`
//!   hashed as empty;
//! - the root itself must be a directory, not a link to one.
//!
//! The record encoding and ordering ([`Awp1Hasher`], [`check_name`], [`excluded`],
//! [`component_order`]) are pure; the walk and the reads are the I/O half.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use sha2::{Digest, Sha256};

use crate::common::hex;

/// Names excluded wherever they appear as a path component (PyHall's `_HASH_EXCLUDES`).
pub const EXCLUDED_NAMES: [&str; 6] = [
    ".git",
    "__pycache__",
    ".DS_Store",
    "manifest.json",
    "manifest.sig",
    "manifest.tmp",
];

/// Non-directories whose name ends with this are excluded (case-sensitive, as PyHall).
pub const EXCLUDED_SUFFIX: &str = ".pyc";

/// The awp.v1 digest of a package with no hashed files: SHA-256 of the empty string.
pub const EMPTY_DIGEST: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A file or directory changed less than this long before the scan may be changed again within
/// the same file-system timestamp tick without its ctime moving, so its stat fingerprint
/// cannot prove it unchanged later (git's "racily clean" problem). Linux timestamp ticks are
/// at most 10 ms; the margin is ten times that.
pub const RACY_MARGIN: Duration = Duration::from_millis(100);

/// Files at least this large go through the read | hash | write pipeline (three threads).
const PIPELINE_THRESHOLD: u64 = 8 << 20;
const BUF_SIZE: usize = 1 << 20;

/// What makes an entry unsafe to hash or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeKind {
    #[error("is a symbolic link{}; links are refused because the Hall never hashes or runs anything outside the package (replace it with the file or directory itself)", .target.as_ref().map(|t| format!(" to {t:?}")).unwrap_or_default())]
    Symlink { target: Option<String> },
    #[error("is a {0}, not a regular file or directory; remove it from the package")]
    Special(&'static str),
    #[error("has a name that is not valid UTF-8; rename it (awp.v1 records are UTF-8 text)")]
    NonUtf8Name,
    #[error(
        "has a name containing the control character U+{0:04X}; rename it (a newline in a name lets one file impersonate several records)"
    )]
    ControlCharacter(u32),
    #[error(
        "was replaced while the Hall was reading the package; retry when the package is not being modified"
    )]
    Changed,
}

/// Why a package tree could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("unsafe package entry {path:?}: {kind}")]
    Unsafe { path: String, kind: UnsafeKind },
    #[error("package root {path:?} is not a directory")]
    NotADirectory { path: String },
    #[error("package exceeds the limit of {limit} {what}; split it or raise the limit")]
    Limit { what: &'static str, limit: u64 },
    #[error("cannot read package entry {path:?}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write the verified copy of {path:?}: {source}")]
    Copy {
        path: String,
        source: std::io::Error,
    },
}

impl TreeError {
    /// True for a tree the Hall refuses by policy (as opposed to one it could not read).
    pub fn is_unsafe(&self) -> bool {
        matches!(
            self,
            TreeError::Unsafe { .. } | TreeError::Limit { .. } | TreeError::NotADirectory { .. }
        )
    }
}

/// Bounds on what a package may contain (size and count bombs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Files plus directories (excluded entries not counted; but no more than twice this many
    /// names of any kind are listed, so a directory of a million planted `*.pyc` is refused
    /// rather than sorted).
    pub max_entries: u64,
    /// Sum of the hashed files' sizes.
    pub max_total_bytes: u64,
    /// Directory nesting below the root.
    pub max_depth: usize,
    /// Bytes of one relative path.
    pub max_path_bytes: usize,
}

impl Default for TreeLimits {
    fn default() -> Self {
        TreeLimits {
            max_entries: 100_000,
            max_total_bytes: 4 << 30,
            max_depth: 64,
            max_path_bytes: 4096,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Pure part: names, exclusions, order, records.
// ------------------------------------------------------------------------------------------

/// Validates one directory-entry name: UTF-8 without control characters (Unicode `Cc`:
/// U+0000–U+001F, U+007F–U+009F).
pub fn check_name(name: &[u8]) -> Result<&str, UnsafeKind> {
    let name = std::str::from_utf8(name).map_err(|_| UnsafeKind::NonUtf8Name)?;
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(UnsafeKind::ControlCharacter(c as u32));
    }
    Ok(name)
}

/// Whether an entry named `name` is left out of the hash (and out of the verified copy).
pub fn excluded(name: &str, is_dir: bool) -> bool {
    EXCLUDED_NAMES.contains(&name) || (!is_dir && name.ends_with(EXCLUDED_SUFFIX))
}

/// PyHall's order of relative paths: component by component, each by code point (which is
/// UTF-8 byte order). Equivalent to a depth-first walk visiting each directory's entries
/// sorted by name, which is how [`plan`] produces it.
pub fn component_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// The awp.v1 record of one file.
pub fn record(rel: &str, size: u64, sha256: &[u8; 32]) -> String {
    format!("{rel}\n{size}\n{}\n", hex(sha256))
}

/// Accumulates awp.v1 records in order and produces the package digest.
#[derive(Debug, Clone, Default)]
pub struct Awp1Hasher {
    hasher: Sha256,
    files: u64,
    bytes: u64,
}

impl Awp1Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next file's record (callers supply files in [`component_order`]).
    pub fn add(&mut self, rel: &str, size: u64, sha256: &[u8; 32]) {
        self.hasher.update(record(rel, size, sha256).as_bytes());
        self.files += 1;
        self.bytes += size;
    }

    pub fn files(&self) -> u64 {
        self.files
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The 64-hex digest.
    pub fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

// ------------------------------------------------------------------------------------------
// I/O part: the scan.
// ------------------------------------------------------------------------------------------

/// One regular file found by the scan.
#[derive(Debug, Clone)]
pub(crate) struct PlannedFile {
    pub rel: String,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    size: u64,
}

/// The result of scanning a package directory: what will be hashed, in record order, and a
/// fingerprint of every entry's metadata (used to tell cheaply whether it changed since).
#[derive(Debug)]
pub struct TreePlan {
    root: OwnedFd,
    /// Device and inode of the root directory.
    pub root_id: (u64, u64),
    /// Directories below the root (parents before children).
    pub(crate) dirs: Vec<String>,
    pub(crate) files: Vec<PlannedFile>,
    /// Relative paths of excluded entries (not descended into, never hashed or copied).
    pub excluded: Vec<String>,
    /// SHA-256 over every entry's path and metadata (type, mode, device, inode, size, mtime,
    /// ctime, link count), including excluded entries and the root.
    pub fingerprint: [u8; 32],
    /// False when some entry changed within [`RACY_MARGIN`] of the scan: its fingerprint
    /// cannot vouch for it later.
    pub stable: bool,
}

impl TreePlan {
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The directories below the root (parents before children) and the files, in record order.
    pub(crate) fn entries(&self) -> (&[String], impl Iterator<Item = &str>) {
        (&self.dirs, self.files.iter().map(|f| f.rel.as_str()))
    }

    /// Opens a planned file for reading, resolved beneath the scanned root with no links
    /// followed (the same resolution as the hashing pass).
    pub(crate) fn open_file(&self, rel: &str) -> Result<File, TreeError> {
        let fd = openat2(self.root.as_fd(), rel, open_how(OFlag::O_RDONLY)).map_err(io(rel))?;
        Ok(File::from(fd))
    }
}

/// A hashed package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeDigest {
    /// The awp.v1 digest (64 lowercase hex).
    pub digest: String,
    pub files: u64,
    pub bytes: u64,
    /// Relative paths left out (PyHall's exclusions).
    pub excluded: Vec<String>,
    #[serde(skip)]
    pub fingerprint: [u8; 32],
    /// False if the package changed during or just before hashing (never cached).
    #[serde(skip)]
    pub stable: bool,
}

fn open_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

fn io(path: &str) -> impl FnOnce(Errno) -> TreeError + '_ {
    move |e| TreeError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn special_name(kind: SFlag) -> &'static str {
    if kind == SFlag::S_IFIFO {
        "FIFO"
    } else if kind == SFlag::S_IFSOCK {
        "socket"
    } else if kind == SFlag::S_IFCHR {
        "character device"
    } else if kind == SFlag::S_IFBLK {
        "block device"
    } else {
        "file of unknown type"
    }
}

fn display_name(prefix: &str, name: &[u8]) -> String {
    let shown = String::from_utf8_lossy(name).escape_debug().to_string();
    if prefix.is_empty() {
        shown
    } else {
        format!("{prefix}/{shown}")
    }
}

struct Scan<'a> {
    limits: &'a TreeLimits,
    on_dir: &'a mut dyn FnMut(BorrowedFd<'_>),
    racy_after: (i64, i64),
    fingerprint: Sha256,
    stable: bool,
    entries: u64,
    /// Every name listed, excluded or not.
    listed: u64,
    bytes: u64,
    dirs: Vec<String>,
    files: Vec<PlannedFile>,
    excluded: Vec<String>,
}

impl Scan<'_> {
    fn note(&mut self, rel: &str, st: &FileStat) {
        let h = &mut self.fingerprint;
        h.update((rel.len() as u64).to_le_bytes());
        h.update(rel.as_bytes());
        for v in [
            u64::from(st.st_mode),
            st.st_dev,
            st.st_ino,
            st.st_size as u64,
            st.st_mtime as u64,
            st.st_mtime_nsec as u64,
            st.st_ctime as u64,
            st.st_ctime_nsec as u64,
            st.st_nlink,
        ] {
            h.update(v.to_le_bytes());
        }
        let recent = |t: (i64, i64)| t >= self.racy_after;
        if recent((st.st_ctime, st.st_ctime_nsec)) || recent((st.st_mtime, st.st_mtime_nsec)) {
            self.stable = false;
        }
    }

    fn visit(&mut self, dir: BorrowedFd<'_>, prefix: &str, depth: usize) -> Result<(), TreeError> {
        let shown = if prefix.is_empty() { "." } else { prefix };
        // Before listing: a watcher sees every change from here on (see `watch`).
        (self.on_dir)(dir);
        let listing = dir.try_clone_to_owned().map_err(|e| TreeError::Io {
            path: shown.to_owned(),
            source: e,
        })?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        {
            let mut d = nix::dir::Dir::from_fd(listing).map_err(io(shown))?;
            for entry in d.iter() {
                let entry = entry.map_err(io(shown))?;
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    self.listed += 1;
                    if self.listed > self.limits.max_entries.saturating_mul(2) {
                        return Err(TreeError::Limit {
                            what: "names listed (excluded ones included) — twice the entry limit",
                            limit: self.limits.max_entries.saturating_mul(2),
                        });
                    }
                    names.push(name.to_vec());
                }
            }
        }
        names.sort_unstable();
        for raw in names {
            let name = check_name(&raw).map_err(|kind| TreeError::Unsafe {
                path: display_name(prefix, &raw),
                kind,
            })?;
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            if rel.len() > self.limits.max_path_bytes {
                return Err(TreeError::Limit {
                    what: "bytes in a relative path",
                    limit: self.limits.max_path_bytes as u64,
                });
            }
            let st =
                fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io(&rel))?;
            self.note(&rel, &st);
            let kind = kind_of(&st);
            if excluded(name, kind == SFlag::S_IFDIR) {
                self.excluded.push(rel);
                continue;
            }
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(TreeError::Limit {
                    what: "files and directories",
                    limit: self.limits.max_entries,
                });
            }
            if kind == SFlag::S_IFDIR {
                if depth + 1 > self.limits.max_depth {
                    return Err(TreeError::Limit {
                        what: "levels of directory nesting",
                        limit: self.limits.max_depth as u64,
                    });
                }
                let child = openat2(dir, name, open_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))
                    .map_err(|e| open_error(e, &rel))?;
                let now = fstat(&child).map_err(io(&rel))?;
                if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                    return Err(TreeError::Unsafe {
                        path: rel,
                        kind: UnsafeKind::Changed,
                    });
                }
                self.dirs.push(rel.clone());
                self.visit(child.as_fd(), &rel, depth + 1)?;
            } else if kind == SFlag::S_IFREG {
                self.bytes = self.bytes.saturating_add(st.st_size as u64);
                if self.bytes > self.limits.max_total_bytes {
                    return Err(TreeError::Limit {
                        what: "bytes of package content",
                        limit: self.limits.max_total_bytes,
                    });
                }
                self.files.push(PlannedFile {
                    rel,
                    dev: st.st_dev,
                    ino: st.st_ino,
                    ctime: (st.st_ctime, st.st_ctime_nsec),
                    size: st.st_size as u64,
                });
            } else if kind == SFlag::S_IFLNK {
                let target = nix::fcntl::readlinkat(dir, name)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned());
                return Err(TreeError::Unsafe {
                    path: rel,
                    kind: UnsafeKind::Symlink { target },
                });
            } else {
                return Err(TreeError::Unsafe {
                    path: rel,
                    kind: UnsafeKind::Special(special_name(kind)),
                });
            }
        }
        Ok(())
    }
}

/// `openat2` failures: a link met during resolution (`ELOOP`, or `EXDEV` for an escape) is an
/// unsafe entry, anything else an I/O error.
fn open_error(e: Errno, rel: &str) -> TreeError {
    match e {
        Errno::ELOOP | Errno::EXDEV => TreeError::Unsafe {
            path: rel.to_owned(),
            kind: UnsafeKind::Symlink { target: None },
        },
        e => TreeError::Io {
            path: rel.to_owned(),
            source: e.into(),
        },
    }
}

fn racy_after(now: SystemTime) -> (i64, i64) {
    let t = now
        .checked_sub(RACY_MARGIN)
        .unwrap_or(UNIX_EPOCH)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        i64::from(t.subsec_nanos()),
    )
}

/// Scans `root` (no file contents read): validates every name and type, applies the
/// exclusions and limits, and lists the files in record order.
pub fn plan(root: &Path, limits: &TreeLimits) -> Result<TreePlan, TreeError> {
    plan_with(root, limits, &mut |_| {})
}

/// [`plan`], calling `on_dir` with each directory (the root first) just before it is listed.
pub(crate) fn plan_with(
    root: &Path,
    limits: &TreeLimits,
    on_dir: &mut dyn FnMut(BorrowedFd<'_>),
) -> Result<TreePlan, TreeError> {
    let shown = root.display().to_string();
    let lst = nix::sys::stat::lstat(root).map_err(io(&shown))?;
    let kind = kind_of(&lst);
    if kind == SFlag::S_IFLNK {
        let target = std::fs::read_link(root)
            .ok()
            .map(|t| t.display().to_string());
        return Err(TreeError::Unsafe {
            path: shown,
            kind: UnsafeKind::Symlink { target },
        });
    }
    if kind != SFlag::S_IFDIR {
        return Err(TreeError::NotADirectory { path: shown });
    }
    // The root path is the operator's choice (its ancestors may be links); the root itself
    // must not be one, and everything below is resolved beneath its descriptor.
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io(&shown))?;
    let st = fstat(&fd).map_err(io(&shown))?;
    if (st.st_dev, st.st_ino) != (lst.st_dev, lst.st_ino) {
        return Err(TreeError::Unsafe {
            path: shown,
            kind: UnsafeKind::Changed,
        });
    }
    let mut scan = Scan {
        limits,
        on_dir,
        racy_after: racy_after(SystemTime::now()),
        fingerprint: Sha256::new(),
        stable: true,
        entries: 0,
        listed: 0,
        bytes: 0,
        dirs: Vec::new(),
        files: Vec::new(),
        excluded: Vec::new(),
    };
    scan.note("", &st);
    scan.visit(fd.as_fd(), "", 0)?;
    Ok(TreePlan {
        root: fd,
        root_id: (st.st_dev, st.st_ino),
        dirs: scan.dirs,
        files: scan.files,
        excluded: scan.excluded,
        fingerprint: scan.fingerprint.finalize().into(),
        stable: scan.stable,
    })
}

// ------------------------------------------------------------------------------------------
// I/O part: hashing (and copying) the planned files.
// ------------------------------------------------------------------------------------------

struct FileResult {
    size: u64,
    sha256: [u8; 32],
    changed: bool,
}

/// The one path in a package the store copy makes executable: a native worker's entrypoint
/// (`code/bootstrap`, an ELF executable; see `hall::runner`). Every other file of a store copy is
/// 0444, so nothing else a package carries can be `execve`d, even by a worker that finds it.
pub const NATIVE_BOOTSTRAP: &str = "code/bootstrap";

/// A PyHall package's entrypoint, run by the interpreter (never executed directly).
pub const PYTHON_BOOTSTRAP: &str = "code/bootstrap.py";

/// A package's declaration of how it is run (`{"worker_protocol": 2}`), part of the signed tree;
/// absent: protocol 1. See `hall::runner::package_protocol`.
pub const WORKER_DECLARATION: &str = "wcp-worker.json";

/// The mode a store copy of `rel` is created with: 0555 for [`NATIVE_BOOTSTRAP`], else 0444.
pub fn copy_mode(rel: &str) -> u32 {
    if rel == NATIVE_BOOTSTRAP {
        0o555
    } else {
        0o444
    }
}

/// Where the verified copy goes: a fresh directory the caller owns (no links inside).
pub(crate) struct CopyTarget<'a> {
    pub dir: BorrowedFd<'a>,
}

fn create_copy(target: &CopyTarget<'_>, rel: &str) -> Result<File, TreeError> {
    // Created read-only (0444, or 0555 for the native entrypoint) in one step: the creating
    // open still gets a writable fd.
    let how = OpenHow::new()
        .flags(
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        )
        .mode(Mode::from_bits_truncate(copy_mode(rel)))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(target.dir, rel, how)
        .map(File::from)
        .map_err(|e| TreeError::Copy {
            path: rel.to_owned(),
            source: e.into(),
        })
}

fn read_err(rel: &str) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: rel.to_owned(),
        source,
    }
}

fn copy_err(rel: &str) -> impl FnOnce(std::io::Error) -> TreeError + '_ {
    move |source| TreeError::Copy {
        path: rel.to_owned(),
        source,
    }
}

/// Takes `n` bytes from the shared budget, failing once the package is over its size limit
/// (files may grow while being read).
fn spend(budget: &AtomicU64, n: usize, limit: u64) -> Result<(), TreeError> {
    let n = n as u64;
    let before = budget.fetch_add(n, AtomicOrdering::Relaxed);
    if before.saturating_add(n) > limit {
        return Err(TreeError::Limit {
            what: "bytes of package content",
            limit,
        });
    }
    Ok(())
}

/// Reads until the buffer is full or the file ends. A read shorter than asked is the end of a
/// regular file on local file systems; should one ever come short early, the file hashes (and
/// copies) truncated, which fails verification — closed, never open.
fn fill(src: &mut File, buf: &mut [u8]) -> std::io::Result<(usize, bool)> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => return Ok((n, true)),
            Ok(k) => {
                n += k;
                if n < buf.len() {
                    return Ok((n, true));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((n, false))
}

/// Large files: one thread reads, this one hashes, another writes the same buffers after they
/// were hashed, so only SHA-256 is on the critical path. Returns (size, digest).
fn pipeline(
    src: &mut File,
    mut out: Option<File>,
    rel: &str,
    budget: &AtomicU64,
    limit: u64,
) -> Result<(u64, [u8; 32]), TreeError> {
    use std::sync::mpsc::sync_channel;
    const BUFFERS: usize = 8;
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    let (full_tx, full_rx) = sync_channel::<Result<(Vec<u8>, usize), std::io::Error>>(BUFFERS);
    let (hashed_tx, hashed_rx) = sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(vec![0u8; BUF_SIZE]);
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            for mut buf in free_rx.iter() {
                match fill(src, &mut buf) {
                    Ok((n, end)) => {
                        if n > 0 && full_tx.send(Ok((buf, n))).is_err() {
                            return;
                        }
                        if end {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let writer = s.spawn(move || -> std::io::Result<()> {
            for (buf, n) in hashed_rx.iter() {
                if let Some(f) = out.as_mut() {
                    f.write_all(&buf[..n])?;
                }
                // The reader may have finished: a closed free list is fine.
                let _ = free_tx.send(buf);
            }
            Ok(())
        });
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut result = Ok(());
        for item in full_rx.iter() {
            match item {
                Ok((buf, n)) => {
                    if let Err(e) = spend(budget, n, limit) {
                        result = Err(e);
                        break;
                    }
                    hasher.update(&buf[..n]);
                    size += n as u64;
                    if hashed_tx.send((buf, n)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(read_err(rel)(e));
                    break;
                }
            }
        }
        drop(full_rx);
        drop(hashed_tx);
        let joined_reader = reader.join();
        let written = writer.join();
        result?;
        if joined_reader.is_err() {
            return Err(read_err(rel)(std::io::Error::other(
                "reader thread panicked",
            )));
        }
        match written {
            Ok(Ok(())) => Ok((size, hasher.finalize().into())),
            Ok(Err(e)) => Err(copy_err(rel)(e)),
            Err(_) => Err(copy_err(rel)(std::io::Error::other(
                "writer thread panicked",
            ))),
        }
    })
}

fn hash_one(
    root: BorrowedFd<'_>,
    file: &PlannedFile,
    target: Option<&CopyTarget<'_>>,
    buf: &mut [u8],
    budget: &AtomicU64,
    limit: u64,
) -> Result<FileResult, TreeError> {
    let rel = file.rel.as_str();
    let fd = openat2(
        root,
        rel,
        open_how(OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK),
    )
    .map_err(|e| open_error(e, rel))?;
    let st = fstat(&fd).map_err(io(rel))?;
    if kind_of(&st) != SFlag::S_IFREG {
        return Err(TreeError::Unsafe {
            path: rel.to_owned(),
            kind: UnsafeKind::Changed,
        });
    }
    let changed =
        (st.st_dev, st.st_ino, (st.st_ctime, st.st_ctime_nsec)) != (file.dev, file.ino, file.ctime);
    let mut src = File::from(fd);
    let mut out = target.map(|t| create_copy(t, rel)).transpose()?;
    let (size, sha256) = if st.st_size as u64 >= PIPELINE_THRESHOLD {
        pipeline(&mut src, out, rel, budget, limit)?
    } else {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let (n, end) = fill(&mut src, buf).map_err(read_err(rel))?;
            spend(budget, n, limit)?;
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Some(f) = out.as_mut() {
                f.write_all(&buf[..n]).map_err(copy_err(rel))?;
            }
            if end {
                break;
            }
        }
        (size, hasher.finalize().into())
    };
    Ok(FileResult {
        size,
        sha256,
        changed,
    })
}

/// How many threads hash files (at most 4; SHA-256 is one core per file).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Hashes the planned files (and, with a target, writes the exact bytes hashed into it,
/// creating the planned directories first). Files are spread over `threads` threads, largest
/// first; records are assembled in plan order, so the digest does not depend on scheduling.
pub(crate) fn hash_plan(
    plan: &TreePlan,
    target: Option<&CopyTarget<'_>>,
    limits: &TreeLimits,
    threads: usize,
) -> Result<TreeDigest, TreeError> {
    if let Some(t) = target {
        for dir in &plan.dirs {
            mkdirat(t.dir, dir.as_str(), Mode::from_bits_truncate(0o700)).map_err(|e| {
                TreeError::Copy {
                    path: dir.clone(),
                    source: e.into(),
                }
            })?;
        }
    }
    let n = plan.files.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(plan.files[i].size));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let budget = AtomicU64::new(0);
    let results: Vec<Mutex<Option<Result<FileResult, TreeError>>>> =
        (0..n).map(|_| Mutex::new(None)).collect();
    let threads = threads.clamp(1, n.max(1));
    let root = plan.root.as_fd();
    let work = || {
        let mut buf = vec![0u8; BUF_SIZE];
        while !stop.load(AtomicOrdering::Relaxed) {
            let k = next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(&i) = order.get(k) else { break };
            let r = hash_one(
                root,
                &plan.files[i],
                target,
                &mut buf,
                &budget,
                limits.max_total_bytes,
            );
            if r.is_err() {
                stop.store(true, AtomicOrdering::Relaxed);
            }
            if let Ok(mut slot) = results[i].lock() {
                *slot = Some(r);
            }
        }
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    let mut hasher = Awp1Hasher::new();
    let mut stable = plan.stable;
    let mut first_error = None;
    for (file, slot) in plan.files.iter().zip(results) {
        match slot.into_inner().ok().flatten() {
            Some(Ok(r)) => {
                stable &= !r.changed;
                hasher.add(&file.rel, r.size, &r.sha256);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => {}
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if hasher.files() != n as u64 {
        // Only reachable if a worker thread panicked.
        return Err(TreeError::Io {
            path: ".".into(),
            source: std::io::Error::other("a hashing thread stopped unexpectedly"),
        });
    }
    Ok(TreeDigest {
        files: hasher.files(),
        bytes: hasher.bytes(),
        digest: hasher.finish(),
        excluded: plan.excluded.clone(),
        fingerprint: plan.fingerprint,
        stable,
    })
}

/// The awp.v1 digest of the package at `root` (no copy).
pub fn hash_tree(root: &Path, limits: &TreeLimits) -> Result<TreeDigest, TreeError> {
    let plan = plan(root, limits)?;
    hash_plan(&plan, None, limits, default_threads())
}

/// Opens `path` as a directory without following a final link (for callers outside the scan).
pub(crate) fn open_dir_nofollow(path: &Path) -> Result<OwnedFd, Errno> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `rel` below `dir` without following any link.
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, rel: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
    openat2(dir, rel, open_how(flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_order_puts_slash_before_dash() {
        let mut paths = vec!["a-b.txt", "a/b.txt", ".hidden", "B.txt", "a.txt", "a/b/c"];
        paths.sort_by(|a, b| component_order(a, b));
        assert_eq!(
            paths,
            vec![".hidden", "B.txt", "a/b/c", "a/b.txt", "a-b.txt", "a.txt"]
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(b"ok name.py"), Ok("ok name.py"));
        assert_eq!(check_name("é😀".as_bytes()), Ok("é😀"));
        assert_eq!(check_name(b"a\nb"), Err(UnsafeKind::ControlCharacter(0x0a)));
        assert_eq!(
            check_name(b"a\x7f"),
            Err(UnsafeKind::ControlCharacter(0x7f))
        );
        assert_eq!(
            check_name("a\u{85}".as_bytes()),
            Err(UnsafeKind::ControlCharacter(0x85))
        );
        assert_eq!(check_name(b"\xff"), Err(UnsafeKind::NonUtf8Name));
    }

    #[test]
    fn exclusions_match_pyhall() {
        for name in EXCLUDED_NAMES {
            assert!(excluded(name, true) && excluded(name, false));
        }
        assert!(excluded("x.pyc", false));
        assert!(
            !excluded("x.pyc", true),
            "a directory named *.pyc is descended"
        );
        assert!(!excluded("x.PYC", false), "case-sensitive, as PyHall");
        assert!(!excluded("manifest.json.bak", false));
    }

    #[test]
    fn empty_record_stream_is_sha256_of_nothing() {
        assert_eq!(Awp1Hasher::new().finish(), EMPTY_DIGEST);
        let mut h = Awp1Hasher::new();
        h.add("a", 0, &Sha256::digest(b"").into());
        assert_eq!(
            h.finish(),
            hex(&Sha256::digest(
                format!("a\n0\n{EMPTY_DIGEST}\n").as_bytes()
            ))
        );
    }
}
