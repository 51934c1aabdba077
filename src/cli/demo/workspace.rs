//! The demo's directory: created fresh (on tmpfs when there is one), package copies, the
//! policies copied flat, and removal (read-only store copies included).
//!
//! Owns the files only; it must not start processes or print.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Step, failed};

/// Where the demo directory goes: tmpfs (`/dev/shm`, or `$XDG_RUNTIME_DIR` for an ordinary
/// user, whose runtime directory an unprivileged worker uid cannot enter anyway) when writable,
/// else the system temporary directory.
pub(super) fn create_workspace() -> Step<(PathBuf, bool)> {
    let root = nix::unistd::geteuid().is_root();
    let mut candidates = vec![PathBuf::from("/dev/shm")];
    if !root && let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(d));
    }
    let tmpfs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(false)
    };
    candidates.retain(|c| c.is_absolute() && c.is_dir() && tmpfs(c));
    candidates.push(std::env::temp_dir());
    let mut last_error = None;
    for base in candidates {
        match tempfile::Builder::new()
            .prefix("wcp-hall-demo-")
            .tempdir_in(&base)
        {
            Ok(dir) => {
                let path = dir.keep();
                // Reachable (not listable) by the unprivileged uid workers run as.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711)).map_err(
                    |e| failed("workspace", format!("cannot chmod {}: {e}", path.display())),
                )?;
                let on_tmpfs = tmpfs(&path);
                return Ok((path, on_tmpfs));
            }
            Err(e) => last_error = Some(format!("{}: {e}", base.display())),
        }
    }
    Err(failed(
        "workspace",
        format!(
            "cannot create a temporary directory ({})",
            last_error.unwrap_or_default()
        ),
    )
    .hint("set TMPDIR to a writable directory"))
}

/// Removes a tree the demo created, including the read-only copies of the package store
/// (directories 0555 must be made writable again before their entries can be unlinked by a
/// non-root owner).
pub(super) fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn open_up(dir: &Path, uid: u32) {
        if let Ok(meta) = std::fs::symlink_metadata(dir)
            && meta.is_dir()
        {
            if meta.uid() == uid && meta.mode() & 0o700 != 0o700 {
                let _ = std::fs::set_permissions(
                    dir,
                    std::fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o700),
                );
            }
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        open_up(&e.path(), uid);
                    }
                }
            }
        }
    }
    open_up(path, nix::unistd::geteuid().as_raw());
    // A Hall that was killed leaves its runs' scratch tmpfs mounted (root only): detach them.
    if let Ok(entries) = std::fs::read_dir(path.join("state/runs")) {
        for e in entries.flatten() {
            let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Copies a worker package, leaving out what is never part of one (`__pycache__`, `*.pyc`,
/// old manifests). A link or special file is refused: signing would refuse it anyway.
pub(super) fn copy_package(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let kind = entry.file_type()?;
        if name_str == "__pycache__"
            || name_str.ends_with(".pyc")
            || matches!(
                name_str.as_ref(),
                "manifest.sig" | "manifest.json" | "manifest.tmp"
            )
        {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if kind.is_dir() {
            copy_package(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is a link or special file; worker packages hold only regular files and directories",
                src.display()
            )));
        }
    }
    Ok(())
}

pub(super) fn copy_flat_dir(from: &Path, to: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Finds files named `name` under `dir` (for "where everything is").
pub(super) fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    if depth == 0 {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    let mut dirs = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_file() && e.file_name() == name => return Some(p),
            Ok(t) if t.is_dir() => dirs.push(p),
            _ => {}
        }
    }
    dirs.iter().find_map(|d| find_file(d, name, depth - 1))
}
