//! PyHall's worker package layout (`scaffold_package`), byte for byte:
//!
//! ```text
//! <root>/
//!   code/
//!     bootstrap.py        always rewritten
//!     worker_logic.py     the given logic file, or a stub; never overwritten unless asked
//!   requirements.lock     only if absent
//!   config.schema.json    only if absent
//! ```
//!
//! The default scaffold hashes to [`DEFAULT_DIGEST`] (pyhall-spec §4). Files are written
//! without following links (`openat2` with `RESOLVE_NO_SYMLINKS` below the root), so a link
//! planted at `code/bootstrap.py` cannot redirect the write outside the package.

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

/// The stub `code/worker_logic.py`.
pub const WORKER_LOGIC_STUB: &str = "\"\"\"Worker business logic \u{2014} replace this stub with your implementation.\"\"\"\n\n\ndef run():\n    raise NotImplementedError(\"Replace this stub with your worker logic.\")\n";
/// `code/bootstrap.py`.
pub const BOOTSTRAP: &str = "#!/usr/bin/env python3\nfrom worker_logic import run\n\nif __name__ == '__main__':\n    run()\n";
/// `requirements.lock`.
pub const REQUIREMENTS_LOCK: &str =
    "# Pin your dependencies here \u{2014} one package==version per line\n";
/// `config.schema.json` (Python `json.dumps(..., indent=2) + "\n"`).
pub const CONFIG_SCHEMA: &str = "{\n  \"$schema\": \"https://json-schema.org/draft/2020-12/schema\",\n  \"type\": \"object\",\n  \"properties\": {},\n  \"additionalProperties\": true\n}\n";
/// The awp.v1 digest of the default scaffold.
pub const DEFAULT_DIGEST: &str = "a6eeb3dd3aafc410838802130e3675527dcceadf6d2b1e817e2b97f62abf3bb6";

/// Why a scaffold could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{} already exists; pass --overwrite to replace it", .0.display())]
    LogicExists(PathBuf),
    #[error("cannot read the logic file {}: {source}", .path.display())]
    Logic {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is a symbolic link or leads through one; the scaffold never writes through links", .0.display())]
    Link(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`scaffold`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScaffoldOutcome {
    pub root: PathBuf,
    /// Relative paths written.
    pub written: Vec<String>,
    /// Relative paths left as they were (PyHall keeps existing lock and schema files).
    pub kept: Vec<String>,
}

fn how(flags: OFlag) -> OpenHow {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    // openat2 refuses a mode without O_CREAT.
    if flags.contains(OFlag::O_CREAT) {
        how.mode(Mode::from_bits_truncate(0o644))
    } else {
        how
    }
}

fn map_errno(path: PathBuf) -> impl FnOnce(Errno) -> ScaffoldError {
    move |e| match e {
        Errno::ELOOP | Errno::EXDEV => ScaffoldError::Link(path),
        e => ScaffoldError::Io {
            path,
            source: e.into(),
        },
    }
}

fn exists(dir: &OwnedFd, rel: &str) -> bool {
    nix::sys::stat::fstatat(dir, rel, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

fn write(dir: &OwnedFd, root: &Path, rel: &str, text: &str) -> Result<(), ScaffoldError> {
    let fd = openat2(
        dir.as_fd(),
        rel,
        how(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC),
    )
    .map_err(map_errno(root.join(rel)))?;
    std::fs::File::from(fd)
        .write_all(text.as_bytes())
        .map_err(|source| ScaffoldError::Io {
            path: root.join(rel),
            source,
        })
}

/// Creates PyHall's package layout at `root` (creating `root` if needed). `logic` replaces the
/// stub `worker_logic.py` (read as UTF-8 text, as PyHall does); an existing `worker_logic.py`
/// is an error unless `overwrite`.
pub fn scaffold(
    root: &Path,
    logic: Option<&Path>,
    overwrite: bool,
) -> Result<ScaffoldOutcome, ScaffoldError> {
    let logic_text = match logic {
        Some(p) => std::fs::read_to_string(p).map_err(|source| ScaffoldError::Logic {
            path: p.to_owned(),
            source,
        })?,
        None => WORKER_LOGIC_STUB.to_owned(),
    };
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(ScaffoldError::Link(root.to_owned()));
    }
    std::fs::create_dir_all(root).map_err(|source| ScaffoldError::Io {
        path: root.to_owned(),
        source,
    })?;
    let dir = super::tree::open_dir_nofollow(root).map_err(map_errno(root.to_owned()))?;
    match mkdirat(&dir, "code", Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(map_errno(root.join("code"))(e)),
    }
    // `code` must be a real directory, not a link to one.
    drop(
        openat2(
            dir.as_fd(),
            "code",
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        )
        .map_err(map_errno(root.join("code")))?,
    );
    let logic_rel = "code/worker_logic.py";
    if exists(&dir, logic_rel) && !overwrite {
        return Err(ScaffoldError::LogicExists(root.join(logic_rel)));
    }
    let mut outcome = ScaffoldOutcome {
        root: root.to_owned(),
        written: Vec::new(),
        kept: Vec::new(),
    };
    write(&dir, root, logic_rel, &logic_text)?;
    outcome.written.push(logic_rel.to_owned());
    write(&dir, root, "code/bootstrap.py", BOOTSTRAP)?;
    outcome.written.push("code/bootstrap.py".to_owned());
    for (rel, text) in [
        ("requirements.lock", REQUIREMENTS_LOCK),
        ("config.schema.json", CONFIG_SCHEMA),
    ] {
        if exists(&dir, rel) {
            outcome.kept.push(rel.to_owned());
        } else {
            write(&dir, root, rel, text)?;
            outcome.written.push(rel.to_owned());
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_scaffold_hashes_to_pyhalls_digest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        let out = scaffold(&root, None, false).unwrap();
        assert_eq!(out.written.len(), 4);
        let t = super::super::tree::hash_tree(&root, &Default::default()).unwrap();
        assert_eq!(t.digest, DEFAULT_DIGEST);
        // PyHall: an existing worker_logic.py is an error without overwrite; lock and schema
        // are kept, bootstrap is rewritten.
        assert!(matches!(
            scaffold(&root, None, false),
            Err(ScaffoldError::LogicExists(_))
        ));
        std::fs::write(root.join("requirements.lock"), "x==1\n").unwrap();
        let again = scaffold(&root, None, true).unwrap();
        assert_eq!(again.kept, vec!["requirements.lock", "config.schema.json"]);
    }

    #[test]
    fn never_writes_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("code")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("code/bootstrap.py")).unwrap();
        let err = scaffold(&root, None, false).unwrap_err();
        assert!(matches!(err, ScaffoldError::Link(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
