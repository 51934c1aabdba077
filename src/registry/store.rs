//! The enrolled directory: one `<worker_id>.json` record per file, written atomically.
//!
//! # Loading fails closed
//! [`RegistryDir::open`] reads every `*.json` entry of the directory (not recursively) in file
//! name order. PyHall prints a warning and skips a record it cannot load, which turns a typo into
//! a silently missing worker or, worse, a silently missing control. The Hall instead refuses the
//! whole directory and lists every bad file with its problems ([`RegistryDirError::BadFiles`]), so
//! a Hall never starts on a registry that is not exactly what the operator wrote.
//!
//! A file is bad when it cannot be read, is larger than [`MAX_RECORD_BYTES`], is not UTF-8, is not
//! a valid record ([`RegistryRecord::from_json_str`]), or is not named after its record's
//! `worker_id` (`org.acme.summarizer.1.json`). The naming rule keeps worker ids unique (one file
//! per id, enforced by the file system) and makes [`enroll`] replace, never duplicate, a worker
//! whose record an operator copied in by hand.
//!
//! Entries whose name starts with `.` are ignored: they are never records (a `worker_id` cannot
//! start with `.`), and they are where [`enroll`]'s temporary files and orchestrators' bookkeeping
//! (Kubernetes ConfigMap mounts use `..data`) live. Entries not ending in `.json` are ignored, so
//! a README can sit beside the records. Symbolic links are followed.
//!
//! A missing directory is an error ([`RegistryDirError::Missing`]), not an empty registry: an
//! empty registry denies everything, and a mistyped path should say so rather than look like a
//! Hall with no workers. The message says how to create it (`wcp-hall enroll` creates the
//! directory on first use).
//!
//! # Writing is atomic
//! [`enroll`] validates first and writes nothing when the record is invalid. It then writes a
//! temporary file in the same directory, fsyncs it, renames it over `<worker_id>.json` and fsyncs
//! the directory, so a reader (or a crash) sees either the old record or the new one, never a
//! torn file. Concurrent enrolments of the same worker are last-writer-wins; each reports what it
//! saw at the time it checked.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::record::{InvalidRecord, RegistryRecord};
use super::{ControlsScope, Registry};

/// The largest record file [`RegistryDir::open`] reads, in bytes. Real records are a few KiB; the
/// cap keeps a stray large file from being read into memory.
pub const MAX_RECORD_BYTES: u64 = 1024 * 1024;

/// The extension of record files.
pub const RECORD_SUFFIX: &str = ".json";

/// One record as loaded from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedRecord {
    /// The file name within the directory (`<worker_id>.json`).
    pub file_name: String,
    pub record: RegistryRecord,
}

/// A loaded registry directory, records in file name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDir {
    path: PathBuf,
    records: Vec<LoadedRecord>,
}

/// Why a registry directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryDirError {
    #[error(
        "registry directory {} does not exist; enroll a worker with `wcp-hall enroll` (which creates it) or create it (mode 0750)",
        .path.display()
    )]
    Missing { path: PathBuf },
    #[error("registry path {} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read registry directory {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "registry directory {} has {} unusable record file(s); the Hall does not start on a partial registry:{}",
        .path.display(),
        .files.len(),
        .files.iter().map(|f| format!("\n{f}")).collect::<String>()
    )]
    BadFiles { path: PathBuf, files: Vec<BadFile> },
}

/// One record file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", .file.display())]
pub struct BadFile {
    /// The full path of the file.
    pub file: PathBuf,
    pub problem: FileProblem,
}

/// What is wrong with a record file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot read: {0}")]
    Io(#[source] io::Error),
    #[error("not a regular file")]
    NotAFile,
    #[error(
        "file is larger than {MAX_RECORD_BYTES} bytes; a registry record is a small JSON object"
    )]
    TooLarge,
    #[error("file name is not valid UTF-8")]
    NameNotUtf8,
    #[error("file is not valid UTF-8 text")]
    NotUtf8,
    #[error("{0}")]
    Invalid(InvalidRecord),
    #[error(
        "file name does not match the record: a record for worker_id {worker_id:?} must be stored as {expected:?}"
    )]
    NameMismatch { worker_id: String, expected: String },
}

impl RegistryDir {
    /// Loads every record of the directory, failing if any record file is bad (see the module
    /// documentation).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RegistryDirError> {
        let path = path.as_ref().to_path_buf();
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RegistryDirError::Missing { path });
            }
            Err(source) => return Err(RegistryDirError::Io { path, source }),
            Ok(m) if !m.is_dir() => return Err(RegistryDirError::NotADirectory { path }),
            Ok(_) => {}
        }
        let mut names = Vec::new();
        let mut bad = Vec::new();
        let entries = fs::read_dir(&path).map_err(|source| RegistryDirError::Io {
            path: path.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| RegistryDirError::Io {
                path: path.clone(),
                source,
            })?;
            let raw = entry.file_name();
            match raw.to_str() {
                Some(name) if name.starts_with('.') || !name.ends_with(RECORD_SUFFIX) => {}
                Some(name) => names.push(name.to_owned()),
                None => {
                    let lossy = raw.to_string_lossy();
                    if !lossy.starts_with('.') && lossy.ends_with(RECORD_SUFFIX) {
                        bad.push(BadFile {
                            file: entry.path(),
                            problem: FileProblem::NameNotUtf8,
                        });
                    }
                }
            }
        }
        names.sort();
        let mut records = Vec::with_capacity(names.len());
        for name in names {
            let file = path.join(&name);
            match load_file(&file, &name) {
                Ok(record) => records.push(LoadedRecord {
                    file_name: name,
                    record,
                }),
                Err(problem) => bad.push(BadFile { file, problem }),
            }
        }
        if bad.is_empty() {
            Ok(RegistryDir { path, records })
        } else {
            bad.sort_by(|a, b| a.file.cmp(&b.file));
            Err(RegistryDirError::BadFiles { path, files: bad })
        }
    }

    /// The directory this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records, in file name order.
    pub fn records(&self) -> &[LoadedRecord] {
        &self.records
    }

    /// A routing snapshot of these records (file name order is kept).
    pub fn snapshot(&self, scope: ControlsScope) -> Registry {
        Registry::new(
            self.records.iter().map(|l| l.record.clone()).collect(),
            scope,
        )
    }
}

fn load_file(file: &Path, name: &str) -> Result<RegistryRecord, FileProblem> {
    // `metadata` follows symbolic links: a link to a regular file is a record.
    let meta = fs::metadata(file).map_err(FileProblem::Io)?;
    if !meta.is_file() {
        return Err(FileProblem::NotAFile);
    }
    let mut bytes = Vec::new();
    fs::File::open(file)
        .and_then(|f| f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes))
        .map_err(FileProblem::Io)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(FileProblem::TooLarge);
    }
    let text = String::from_utf8(bytes).map_err(|_| FileProblem::NotUtf8)?;
    let record = RegistryRecord::from_json_str(&text).map_err(FileProblem::Invalid)?;
    let expected = record_file_name(&record.worker_id).unwrap_or_default();
    if name != expected {
        return Err(FileProblem::NameMismatch {
            worker_id: record.worker_id,
            expected,
        });
    }
    Ok(record)
}

/// The file name a worker's record is stored under: `<worker_id>.json`.
///
/// Returns `None` for an id that could escape the directory or hide the file (empty, `/`, `\`,
/// NUL, a leading `.`). A validated `worker_id` never does; this is a second, independent guard
/// right where the path is built.
pub fn record_file_name(worker_id: &str) -> Option<String> {
    let unsafe_id =
        worker_id.is_empty() || worker_id.starts_with('.') || worker_id.contains(['/', '\\', '\0']);
    (!unsafe_id).then(|| format!("{worker_id}{RECORD_SUFFIX}"))
}

/// Whether [`enroll`] added a new worker or replaced an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollAction {
    Created,
    Replaced,
}

/// What [`enroll`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnrollOutcome {
    pub worker_id: String,
    /// The record file written.
    pub path: PathBuf,
    pub action: EnrollAction,
}

/// Why a record was not enrolled. Nothing was written in any of these cases (a failed write
/// leaves at most its own temporary file, which is removed when dropped).
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("record not enrolled, nothing was written: {0}")]
    Invalid(#[from] InvalidRecord),
    #[error("worker_id {0:?} cannot be used as a file name")]
    UnsafeFileName(String),
    #[error("registry path {} exists but is not a directory", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Parses, validates and atomically writes one record (JSON text) to `<dir>/<worker_id>.json`,
/// creating `dir` (mode 0750, before umask) if it does not exist. Re-enrolling a worker_id
/// replaces its record.
pub fn enroll(dir: &Path, record_json: &str) -> Result<EnrollOutcome, EnrollError> {
    let record = RegistryRecord::from_json_str(record_json)?;
    enroll_record(dir, &record)
}

/// [`enroll`] for a record already in memory; it is validated again before anything is written.
pub fn enroll_record(dir: &Path, record: &RegistryRecord) -> Result<EnrollOutcome, EnrollError> {
    record.validate()?;
    let file_name = record_file_name(&record.worker_id)
        .ok_or_else(|| EnrollError::UnsafeFileName(record.worker_id.clone()))?;
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EnrollError::Io {
            action,
            path,
            source,
        }
    };
    let mut text = serde_json::to_string_pretty(record)
        .map_err(|e| io_err("serialise the record for", dir)(io::Error::other(e)))?;
    text.push('\n');

    ensure_dir(dir)?;
    let target = dir.join(&file_name);
    let existed = fs::symlink_metadata(&target)
        .map(|_| true)
        .or_else(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Ok(false)
            } else {
                Err(e)
            }
        })
        .map_err(io_err("inspect", &target))?;

    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("create a temporary file in", dir))?;
    tmp.write_all(text.as_bytes())
        .map_err(io_err("write", tmp.path()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        // tempfile creates 0600. A record is as readable as its directory: world-readable
        // (0644) in a world-readable directory, else 0640 and, when root enrolls, the
        // directory's group, so `sudo wcp-hall enroll` leaves a record the Hall's user can read.
        // Records hold no secrets.
        let dir_meta = fs::metadata(dir).map_err(io_err("inspect", dir))?;
        let mode = if dir_meta.mode() & 0o005 == 0o005 {
            0o644
        } else {
            0o640
        };
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::fchown(tmp.as_file(), None, Some(dir_meta.gid()))
                .map_err(io_err("set the group of", tmp.path()))?;
        }
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .map_err(io_err("set permissions on", tmp.path()))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err("fsync", tmp.path()))?;
    tmp.persist(&target)
        .map_err(|e| io_err("rename the temporary file onto", &target)(e.error))?;
    sync_dir(dir).map_err(io_err("fsync directory", dir))?;

    Ok(EnrollOutcome {
        worker_id: record.worker_id.clone(),
        path: target,
        action: if existed {
            EnrollAction::Replaced
        } else {
            EnrollAction::Created
        },
    })
}

/// Creates `dir` (and missing parents) with mode 0750 if needed; fails if it is not a directory.
fn ensure_dir(dir: &Path) -> Result<(), EnrollError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(EnrollError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(EnrollError::Io {
                action: "inspect",
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o750);
    }
    builder.create(dir).map_err(|source| EnrollError::Io {
        action: "create registry directory",
        path: dir.to_path_buf(),
        source,
    })?;
    // Make the new directory entry itself durable.
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent).map_err(|source| EnrollError::Io {
            action: "fsync directory",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// fsyncs a directory so a rename or create in it survives a crash (a no-op off Unix, where
/// directories cannot be opened this way).
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
