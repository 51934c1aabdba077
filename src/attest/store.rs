//! The verified package store: a Hall-owned, content-addressed, read-only directory of package
//! copies. Workers run from `<store>/sha256-<digest>/` only, never from the source directory.
//!
//! Threat model: whoever can write the source package directory may change it at any moment —
//! between verification and execution (TOCTOU), during verification, or by planting files that
//! awp.v1 does not hash (`__pycache__/*.pyc` runs instead of the attested `.py`; a nested
//! `manifest.json` is readable data). The store closes these:
//! - **Verify while copying.** The same read pass that hashes a file writes the same bytes into a
//!   fresh staging directory (see `tree`), so the copy is exactly what was hashed, whatever the
//!   source does meanwhile. Excluded entries are never copied, so a planted pyc cannot run.
//! - **Content-addressed and read-only.** A staging directory becomes `sha256-<digest>` by one
//!   atomic `renameat2(RENAME_NOREPLACE)` only after every check passed; files are 0444 and
//!   directories 0555, except a native worker's entrypoint `code/bootstrap` (0555: the only
//!   file of a package that can be executed; `tree::copy_mode`). A failed verification removes
//!   its staging directory (and stale ones from a crash are removed when the store opens), so
//!   there is never a partial entry.
//! - **Crash and offline tampering.** Copies are not fsynced (that would cost seconds per
//!   package on this disk); instead each entry has a seal recording the boot it was verified
//!   in. An entry sealed in another boot is re-hashed before use and removed if it no longer
//!   matches its name.
//! - **Cheap re-verification.** A source whose metadata fingerprint (every entry's inode,
//!   size, mtime and ctime; see `tree::TreePlan`) is unchanged since it was hashed is not
//!   re-read. Fingerprints taken within `tree::RACY_MARGIN` of a change are never trusted.
//!
//! Out of scope: root on the host can rewrite the store; fs-verity is unavailable on this kernel
//! (reported as not applied, never assumed).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, renameat2};
use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, mkdirat};

use super::time::UtcTime;
use super::tree::{self, CopyTarget, TreeDigest, TreeError, TreeLimits, TreePlan};
use super::watch::TreeWatcher;

/// Even when inotify reports no change, a source's metadata is rescanned after this long
/// (inotify misses writes through a shared mmap; see `watch`).
pub const FULL_RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("package store {path}: {problem}")]
    Root { path: String, problem: String },
    #[error("package store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tree(#[from] TreeError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What the store knows about a source tree it hashed before.
#[derive(Debug, Clone)]
struct CachedTree {
    tree: TreeDigest,
    /// Every directory was watched from before it was listed (see `watch`).
    watched: bool,
    root_id: (u64, u64),
    scanned_at: Instant,
}

/// The seal of an entry (`sha256-<digest>.seal`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Seal {
    digest: String,
    files: u64,
    bytes: u64,
    boot_id: String,
    sealed_at: String,
}

/// The verified package store.
#[derive(Debug)]
pub struct PackageStore {
    root: PathBuf,
    root_fd: OwnedFd,
    limits: TreeLimits,
    threads: usize,
    boot_id: String,
    cache: Mutex<HashMap<PathBuf, CachedTree>>,
    watcher: Mutex<TreeWatcher>,
    /// Entries whose seal or content was checked by this process, with their inode.
    checked: Mutex<HashMap<String, (u64, u64)>>,
}

/// The result of bringing a source tree into the store.
#[derive(Debug)]
pub struct Ingest<'s> {
    pub tree: TreeDigest,
    /// The tree was not re-read (fingerprint unchanged since the last hash).
    pub cached: bool,
    pub state: IngestState<'s>,
}

/// Where the verified copy stands after [`PackageStore::ingest`].
#[derive(Debug)]
pub enum IngestState<'s> {
    /// An entry with this digest already exists (nothing copied).
    Existing(PathBuf),
    /// A complete copy waits in staging: [`Staged::commit`] publishes it; dropping it removes it.
    Staged(Staged<'s>),
    /// The tree does not hash to the claimed digest: nothing was kept.
    Mismatch,
}

/// A complete, hashed copy not yet published.
#[derive(Debug)]
pub struct Staged<'s> {
    store: &'s PackageStore,
    name: String,
    dirs: Vec<String>,
    tree: TreeDigest,
    done: bool,
}

fn entry_name(digest: &str) -> String {
    format!("sha256-{digest}")
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Temporary names carry the creating process id (`.staging-<pid>-<uuid>`,
/// `.seal-<pid>-<uuid>`), so a store shared by several processes only removes the leftovers
/// of processes that are gone.
fn temp_name(kind: &str) -> String {
    format!(
        ".{kind}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn temp_owner(name: &str) -> Option<i32> {
    let rest = name
        .strip_prefix(".staging-")
        .or_else(|| name.strip_prefix(".seal-"))?;
    rest.split('-').next()?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e != Errno::ESRCH,
    }
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Makes every directory under `path` writable by its owner again, then removes it.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn unlock(path: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(path)? {
                unlock(&entry?.path())?;
            }
        }
        Ok(())
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    unlock(path)?;
    std::fs::remove_dir_all(path)
}

impl PackageStore {
    /// Opens (creating it, mode 0755, if absent) the store at `root`. Refuses a root that is a
    /// link, not owned by this user, or writable by group or others (anyone could then plant an
    /// entry). Removes staging directories left by a crash.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        Self::open_with(root, TreeLimits::default(), tree::default_threads())
    }

    /// [`PackageStore::open`] with explicit limits and hashing threads.
    pub fn open_with(root: &Path, limits: TreeLimits, threads: usize) -> Result<Self, StoreError> {
        let problem = |p: String| StoreError::Root {
            path: root.display().to_string(),
            problem: p,
        };
        if std::fs::symlink_metadata(root).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(root)
                .map_err(io_err(root))?;
        }
        let meta = std::fs::symlink_metadata(root).map_err(io_err(root))?;
        if meta.file_type().is_symlink() {
            return Err(problem(
                "is a symbolic link; configure the real directory".into(),
            ));
        }
        if !meta.is_dir() {
            return Err(problem("is not a directory".into()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(problem(format!(
                "is owned by uid {}, not by the Hall (uid {euid}); chown it",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(problem(format!(
                "mode {:04o} lets group or others write it (they could plant verified-looking entries); run `chmod go-w {}`",
                meta.mode() & 0o7777,
                root.display()
            )));
        }
        let root_fd = tree::open_dir_nofollow(root).map_err(|e| StoreError::Io {
            path: root.display().to_string(),
            source: e.into(),
        })?;
        let store = PackageStore {
            root: root.to_owned(),
            root_fd,
            limits,
            threads: threads.max(1),
            boot_id: read_boot_id(),
            cache: Mutex::new(HashMap::new()),
            watcher: Mutex::new(TreeWatcher::new()),
            checked: Mutex::new(HashMap::new()),
        };
        for entry in std::fs::read_dir(root).map_err(io_err(root))? {
            let entry = entry.map_err(io_err(root))?;
            let name = entry.file_name();
            if let Some(pid) = temp_owner(&name.to_string_lossy())
                && !process_alive(pid)
            {
                remove_tree(&entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limits(&self) -> &TreeLimits {
        &self.limits
    }

    /// The path of the entry for `digest` (whether or not it exists).
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.root.join(entry_name(digest))
    }

    fn seal_path(&self, digest: &str) -> PathBuf {
        self.root.join(format!("{}.seal", entry_name(digest)))
    }

    /// Whether a complete, sealed entry for `digest` exists (re-hashing it if it was sealed in
    /// another boot, and removing it if it no longer matches).
    pub fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.valid_entry(digest)?.is_some())
    }

    fn valid_entry(&self, digest: &str) -> Result<Option<PathBuf>, StoreError> {
        if !is_hex64(digest) {
            return Ok(None);
        }
        let path = self.entry_path(digest);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if !meta.is_dir() {
            // Not something this store wrote: remove it.
            remove_tree(&path).map_err(io_err(&path))?;
            return Ok(None);
        }
        let ino = (meta.dev(), meta.ino());
        if self
            .checked
            .lock()
            .map(|c| c.get(digest) == Some(&ino))
            .unwrap_or(false)
        {
            return Ok(Some(path));
        }
        let seal: Option<Seal> = std::fs::read(self.seal_path(digest))
            .ok()
            .and_then(|b| crate::json::from_slice(&b).ok());
        let sealed_now = seal.as_ref().is_some_and(|s| {
            s.digest == digest && !self.boot_id.is_empty() && s.boot_id == self.boot_id
        });
        if !sealed_now {
            // Unsealed (crash between rename and seal) or sealed in another boot: the page cache
            // may never have reached the disk, or someone edited it while the Hall was down.
            let again = tree::hash_tree(&path, &self.limits);
            match again {
                Ok(t) if t.digest == digest => self.write_seal(&t)?,
                _ => {
                    remove_tree(&path).map_err(io_err(&path))?;
                    let _ = std::fs::remove_file(self.seal_path(digest));
                    return Ok(None);
                }
            }
        }
        if let Ok(mut c) = self.checked.lock() {
            c.insert(digest.to_owned(), ino);
        }
        Ok(Some(path))
    }

    fn write_seal(&self, tree: &TreeDigest) -> Result<(), StoreError> {
        let seal = Seal {
            digest: tree.digest.clone(),
            files: tree.files,
            bytes: tree.bytes,
            boot_id: self.boot_id.clone(),
            sealed_at: UtcTime::now().to_string(),
        };
        let tmp = self.root.join(temp_name("seal"));
        let text = serde_json::to_vec(&seal).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io_err(&tmp))?;
        let dest = self.seal_path(&tree.digest);
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&dest)(e)
        })
    }

    /// Brings the package at `source` into the store. With `claimed` (the digest a manifest
    /// signs), a tree that hashes differently is reported as [`IngestState::Mismatch`] and
    /// nothing is kept; an existing entry for the digest is reused without copying.
    ///
    /// The tree's metadata is always rescanned; its contents are re-read only when the
    /// fingerprint changed since the last hash of this source (or was racy).
    pub fn ingest(&self, source: &Path, claimed: Option<&str>) -> Result<Ingest<'_>, StoreError> {
        // 1. Watched and quiet since the last scan: no scan at all (one read of the inotify
        //    descriptor and one stat of the root path).
        let cached = self.cache.lock().ok().and_then(|c| c.get(source).cloned());
        if let Some(c) = &cached
            && c.watched
            && c.scanned_at.elapsed() < FULL_RESCAN_INTERVAL
            && std::fs::symlink_metadata(source)
                .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == c.root_id)
            && self
                .watcher
                .lock()
                .map(|mut w| w.unchanged(source))
                .unwrap_or(false)
            && let Some(hit) = self.answer_from_cache(c, claimed)?
        {
            return Ok(hit);
        }
        // 2. Scan the metadata, watching each directory before listing it.
        let plan = self.scan(source)?;
        if let Some(c) = cached
            && plan.stable
            && c.tree.stable
            && c.tree.fingerprint == plan.fingerprint
        {
            let c = self.remember(source, &c.tree, &plan);
            if let Some(hit) = self.answer_from_cache(&c, claimed)? {
                return Ok(hit);
            }
        }
        if claimed.is_some_and(|d| !is_hex64(d)) {
            // Not a digest: it can never match, so hash without copying.
            let tree = tree::hash_plan(&plan, None, &self.limits, self.threads)?;
            self.remember(source, &tree, &plan);
            return Ok(Ingest {
                tree,
                cached: false,
                state: IngestState::Mismatch,
            });
        }
        if let Some(d) = claimed
            && let Some(path) = self.valid_entry(d)?
        {
            // Hash only: the copy exists already.
            let tree = tree::hash_plan(&plan, None, &self.limits, self.threads)?;
            self.remember(source, &tree, &plan);
            let state = if tree.digest == d {
                IngestState::Existing(path)
            } else {
                IngestState::Mismatch
            };
            return Ok(Ingest {
                tree,
                cached: false,
                state,
            });
        }
        let name = temp_name("staging");
        mkdirat(
            &self.root_fd,
            name.as_str(),
            Mode::from_bits_truncate(0o700),
        )
        .map_err(|e| StoreError::Io {
            path: self.root.join(&name).display().to_string(),
            source: e.into(),
        })?;
        let mut staged = Staged {
            store: self,
            name,
            dirs: plan.dirs.clone(),
            tree: TreeDigest {
                digest: String::new(),
                files: 0,
                bytes: 0,
                excluded: Vec::new(),
                fingerprint: [0; 32],
                stable: false,
            },
            done: false,
        };
        let staging_fd = tree::open_beneath(
            self.root_fd.as_fd(),
            &staged.name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| StoreError::Io {
            path: self.root.join(&staged.name).display().to_string(),
            source: e.into(),
        })?;
        let target = CopyTarget {
            dir: staging_fd.as_fd(),
        };
        let tree = tree::hash_plan(&plan, Some(&target), &self.limits, self.threads)?;
        drop(staging_fd);
        self.remember(source, &tree, &plan);
        if claimed.is_some_and(|d| d != tree.digest) {
            return Ok(Ingest {
                tree,
                cached: false,
                state: IngestState::Mismatch,
            });
        }
        if let Some(path) = self.valid_entry(&tree.digest)? {
            return Ok(Ingest {
                tree,
                cached: false,
                state: IngestState::Existing(path),
            });
        }
        staged.tree = tree.clone();
        Ok(Ingest {
            tree,
            cached: false,
            state: IngestState::Staged(staged),
        })
    }

    /// A cache answer for a known tree: a mismatch, or the existing entry (`None` if the entry
    /// is gone and the tree must be copied again).
    fn answer_from_cache(
        &self,
        c: &CachedTree,
        claimed: Option<&str>,
    ) -> Result<Option<Ingest<'_>>, StoreError> {
        if claimed.is_some_and(|d| d != c.tree.digest) {
            return Ok(Some(Ingest {
                tree: c.tree.clone(),
                cached: true,
                state: IngestState::Mismatch,
            }));
        }
        Ok(self.valid_entry(&c.tree.digest)?.map(|path| Ingest {
            tree: c.tree.clone(),
            cached: true,
            state: IngestState::Existing(path),
        }))
    }

    /// Scans `source`, (re)placing inotify watches on every directory before it is listed.
    fn scan(&self, source: &Path) -> Result<TreePlan, StoreError> {
        let mut wds = std::collections::HashSet::new();
        let mut complete = match self.watcher.lock() {
            Ok(mut w) => {
                w.begin(source);
                w.available()
            }
            Err(_) => false,
        };
        let plan = tree::plan_with(source, &self.limits, &mut |dir| match self
            .watcher
            .lock()
            .ok()
            .and_then(|mut w| w.watch(dir))
        {
            Some(wd) => {
                wds.insert(wd);
            }
            None => complete = false,
        });
        if let Ok(mut w) = self.watcher.lock() {
            if plan.is_ok() {
                w.finish(source, wds, complete);
            } else {
                w.forget(source);
            }
        }
        if plan.is_err() {
            self.forget(source);
        }
        Ok(plan?)
    }

    fn remember(&self, source: &Path, tree: &TreeDigest, plan: &TreePlan) -> CachedTree {
        let watched = self
            .watcher
            .lock()
            .map(|mut w| w.unchanged(source))
            .unwrap_or(false);
        let entry = CachedTree {
            tree: tree.clone(),
            watched,
            root_id: plan.root_id,
            scanned_at: Instant::now(),
        };
        if let Ok(mut c) = self.cache.lock() {
            c.insert(source.to_owned(), entry.clone());
        }
        entry
    }

    /// Forgets what the store knows about `source` (the next ingest re-reads it).
    pub fn forget(&self, source: &Path) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(source);
        }
    }

    /// Turns inotify change detection off (sources on network file systems, whose remote
    /// changes inotify does not see) or back on; without it, re-verification rescans metadata.
    pub fn set_watching(&mut self, on: bool) {
        self.watcher = Mutex::new(if on {
            TreeWatcher::new()
        } else {
            TreeWatcher::disabled()
        });
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// Whether inotify change detection is available to this store.
    pub fn watching(&self) -> bool {
        self.watcher.lock().map(|w| w.available()).unwrap_or(false)
    }
}

impl Staged<'_> {
    pub fn digest(&self) -> &str {
        &self.tree.digest
    }

    /// Makes the copy read-only and publishes it as `sha256-<digest>` (atomically); returns its
    /// path. If another verification published the same digest first, that entry is used.
    pub fn commit(mut self) -> Result<PathBuf, StoreError> {
        let store = self.store;
        let staging = store.root.join(&self.name);
        let fd = tree::open_beneath(
            store.root_fd.as_fd(),
            &self.name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| StoreError::Io {
            path: staging.display().to_string(),
            source: e.into(),
        })?;
        for dir in self.dirs.iter().rev() {
            fchmodat(
                &fd,
                dir.as_str(),
                Mode::from_bits_truncate(0o555),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| StoreError::Io {
                path: staging.join(dir).display().to_string(),
                source: e.into(),
            })?;
        }
        drop(fd);
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o555))
            .map_err(io_err(&staging))?;
        let name = entry_name(&self.tree.digest);
        match renameat2(
            &store.root_fd,
            self.name.as_str(),
            &store.root_fd,
            name.as_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                self.done = true;
                store.write_seal(&self.tree)?;
                let path = store.entry_path(&self.tree.digest);
                if let Ok(meta) = std::fs::symlink_metadata(&path)
                    && let Ok(mut c) = store.checked.lock()
                {
                    c.insert(self.tree.digest.clone(), (meta.dev(), meta.ino()));
                }
                Ok(path)
            }
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => {
                // A concurrent verification of the same bytes won; ours is removed on drop.
                store
                    .valid_entry(&self.tree.digest)?
                    .ok_or_else(|| StoreError::Root {
                        path: store.root.display().to_string(),
                        problem: format!("entry {name} appeared but is not a valid copy"),
                    })
            }
            Err(e) => Err(StoreError::Io {
                path: store.entry_path(&self.tree.digest).display().to_string(),
                source: e.into(),
            }),
        }
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree(&self.store.root.join(&self.name));
        }
    }
}
