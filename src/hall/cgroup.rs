//! The Hall's own cgroup under systemd `Delegate=yes` (cgroup v2).
//!
//! cgroup v2's "no internal processes" rule means a cgroup that has processes cannot give
//! controllers to children. systemd 252 has no `DelegateSubgroup=`, so the Hall moves itself into
//! a `supervisor` leaf of its delegated cgroup and enables the available controllers (memory,
//! pids, cpu) in the delegated cgroup's `cgroup.subtree_control`; per-run worker cgroups are
//! then created beside `supervisor`. It only ever writes inside the cgroup systemd delegated to
//! it, and only when it runs as a systemd service (`INVOCATION_ID` is set), so a Hall started
//! from a shell never rearranges the caller's cgroups. What happened is reported, never assumed.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What the Hall found and did about its cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delegation {
    /// The delegated cgroup (worker cgroups go here), when usable.
    pub subtree: Option<PathBuf>,
    /// Controllers enabled for children of the subtree.
    pub controllers: Vec<String>,
    /// Why there is no usable subtree, or what was limited.
    pub note: String,
}

/// The cgroup v2 path of the process from `/proc/self/cgroup` text (the `0::` line).
pub fn v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .filter(|p| p.starts_with('/'))
}

/// Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` (unified) or
/// `/sys/fs/cgroup/unified` (hybrid, as on this machine, where v2 has no controllers).
pub fn v2_mount() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
}

/// Moves `pid` into `<mount><path>/supervisor` and enables the wanted controllers on
/// `<mount><path>`. Pure apart from the cgroup files under `mount`, so it is testable on a
/// directory tree that imitates cgroupfs.
pub fn delegate(mount: &Path, own_path: &str, pid: u32) -> Delegation {
    let own = mount.join(own_path.trim_start_matches('/'));
    let none = |note: String| Delegation {
        subtree: None,
        controllers: Vec::new(),
        note,
    };
    let (subtree, leaf) = if own.file_name().is_some_and(|n| n == "supervisor") {
        (
            own.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| own.clone()),
            own.clone(),
        )
    } else {
        (own.clone(), own.join("supervisor"))
    };
    if let Err(e) = std::fs::create_dir_all(&leaf) {
        return none(format!(
            "cgroup {} is not delegated to the Hall ({e}); worker cgroups are not available",
            subtree.display()
        ));
    }
    if let Err(e) = std::fs::write(leaf.join("cgroup.procs"), pid.to_string()) {
        return none(format!(
            "cannot move the Hall into {} ({e})",
            leaf.display()
        ));
    }
    let available = std::fs::read_to_string(subtree.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .map(str::to_owned)
        .collect();
    let mut enabled = Vec::new();
    let mut problems = Vec::new();
    for c in &wanted {
        match std::fs::write(subtree.join("cgroup.subtree_control"), format!("+{c}")) {
            Ok(()) => enabled.push(c.clone()),
            Err(e) => problems.push(format!("{c}: {e}")),
        }
    }
    let missing: Vec<&str> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !enabled.iter().any(|e| e == c))
        .collect();
    let note = if missing.is_empty() {
        "delegated cgroup v2 subtree with memory, pids and cpu".to_owned()
    } else {
        format!(
            "delegated cgroup v2 subtree; controllers not available: {}{}",
            missing.join(", "),
            if problems.is_empty() {
                String::new()
            } else {
                format!(" ({})", problems.join("; "))
            }
        )
    };
    Delegation {
        subtree: Some(subtree),
        controllers: enabled,
        note,
    }
}

/// At start-up under systemd: find the delegated cgroup and take it over.
pub fn prepare_at_startup() -> Delegation {
    if std::env::var_os("INVOCATION_ID").is_none() {
        return Delegation {
            subtree: None,
            controllers: Vec::new(),
            note: "not running as a systemd service; the Hall does not rearrange its cgroup".into(),
        };
    }
    let Some(mount) = v2_mount() else {
        return Delegation {
            subtree: None,
            controllers: Vec::new(),
            note: "no cgroup v2 hierarchy is mounted".into(),
        };
    };
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    match v2_path(&text) {
        Some(path) => delegate(&mount, path, std::process::id()),
        None => Delegation {
            subtree: None,
            controllers: Vec::new(),
            note: "the Hall is not in a cgroup v2 cgroup".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_v2_line() {
        assert_eq!(
            v2_path("12:pids:/x\n0::/system.slice/wcp-hall.service\n"),
            Some("/system.slice/wcp-hall.service")
        );
        assert_eq!(v2_path("1:name=systemd:/\n"), None);
    }

    #[test]
    fn moves_into_a_supervisor_leaf_and_enables_available_controllers() {
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("system.slice/wcp-hall.service");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(
            own.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let d = delegate(mount.path(), "/system.slice/wcp-hall.service", 4242);
        assert_eq!(d.subtree.as_deref(), Some(own.as_path()));
        assert_eq!(
            std::fs::read_to_string(own.join("supervisor/cgroup.procs")).unwrap(),
            "4242"
        );
        assert_eq!(d.controllers, ["memory", "pids", "cpu"]);
        // A restart finds itself already in the leaf: the subtree is its parent.
        let again = delegate(
            mount.path(),
            "/system.slice/wcp-hall.service/supervisor",
            4243,
        );
        assert_eq!(again.subtree.as_deref(), Some(own.as_path()));
    }

    #[test]
    fn reports_missing_controllers_and_undelegated_cgroups() {
        let mount = tempfile::tempdir().unwrap();
        let own = mount.path().join("svc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cgroup.controllers"), "cpu\n").unwrap();
        let d = delegate(mount.path(), "/svc", 1);
        assert_eq!(d.controllers, ["cpu"]);
        assert!(d.note.contains("not available: memory, pids"), "{}", d.note);
        let d = delegate(Path::new("/proc/nonexistent-cgroup-root"), "/svc", 1);
        assert!(d.subtree.is_none());
        assert!(d.note.contains("not delegated"), "{}", d.note);
    }
}
