//! Per-run cgroup v2 leaves: `cgroup.kill` for the whole tree, `memory.max` / `pids.max` where
//! the controllers are delegated, and whole-tree accounting (`cpu.stat`, `memory.peak`,
//! `pids.peak`, `memory.events`).
//!
//! cgroup v2 is just files, so this is direct `std::fs` work (easy to audit). The Hall needs a
//! *delegated* directory (systemd `Delegate=yes`, or created by the operator) whose
//! `cgroup.subtree_control` enables `memory` and `pids`; each run gets `<parent>/wcp-<run id>`
//! and the worker is born in it (`clone3(CLONE_INTO_CGROUP)`), so no process of the tree ever
//! runs outside it. On hybrid hosts whose memory and pids controllers are bound to cgroup v1
//! the leaf still gives `cgroup.kill` and CPU accounting, and the limits are reported as not
//! enforced, with the reason.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
pub fn v2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_v2_mount(&text)
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mount_point = left.split(' ').nth(4)?;
        Some(PathBuf::from(unescape_octal(mount_point)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Hall's own cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
pub fn own_v2_path() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Controllers bound to cgroup v1 hierarchies (hybrid hosts), from `/proc/self/cgroup`, read
/// once per process: which hierarchy a controller is bound to changes only when the host
/// remounts its cgroup file systems, and every run's leaf asks (profiled: a file read per run).
pub fn v1_controllers() -> &'static [String] {
    static V1: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    V1.get_or_init(read_v1_controllers)
}

fn read_v1_controllers() -> Vec<String> {
    let Ok(text) = fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("0::"))
        .filter_map(|l| l.split(':').nth(1))
        .flat_map(|c| c.split(','))
        .filter(|c| !c.is_empty() && !c.starts_with("name="))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The space-separated list in a cgroup interface file (`cgroup.controllers`,
/// `cgroup.subtree_control`).
pub fn read_list(dir: &Path, file: &str) -> Vec<String> {
    fs::read_to_string(dir.join(file))
        .map(|t| t.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The default parent: the Hall's own cgroup v2 directory.
pub fn default_parent() -> Option<PathBuf> {
    let mount = v2_mount()?;
    let own = own_v2_path()?;
    let own = own.trim_matches('/');
    Some(if own.is_empty() {
        mount
    } else {
        mount.join(own)
    })
}

/// What a leaf could apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafLimits {
    /// `memory.max` written (the controller is delegated to the leaf).
    pub memory_max: Option<u64>,
    /// `pids.max` written.
    pub pids_max: Option<u64>,
    /// Why a requested limit is not enforced.
    pub memory_reason: Option<String>,
    pub pids_reason: Option<String>,
}

/// Whole-tree accounting read from the leaf after the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeafStats {
    pub cpu_usage_usec: Option<u64>,
    pub memory_peak_bytes: Option<u64>,
    pub pids_peak: Option<u64>,
    pub oom_kills: Option<u64>,
}

/// One run's cgroup v2 leaf. Dropping it does not remove it; call [`Leaf::remove`].
#[derive(Debug)]
pub struct Leaf {
    pub path: PathBuf,
    /// `O_DIRECTORY` descriptor for `clone3(CLONE_INTO_CGROUP)`.
    pub dir_fd: OwnedFd,
}

impl Leaf {
    /// Creates `<parent>/<name>` and writes the limits the delegated controllers allow.
    pub fn create(
        parent: &Path,
        name: &str,
        memory_max: u64,
        pids_max: u64,
    ) -> io::Result<(Leaf, LeafLimits)> {
        let path = parent.join(name);
        fs::create_dir(&path)?;
        let dir_fd = match fs::File::open(&path) {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                let _ = fs::remove_dir(&path);
                return Err(e);
            }
        };
        let leaf = Leaf { path, dir_fd };
        let available = read_list(&leaf.path, "cgroup.controllers");
        let mut limits = LeafLimits::default();
        let why_missing = |controller: &str| {
            let v1 = v1_controllers();
            if v1.iter().any(|c| c == controller) {
                format!(
                    "the {controller} controller is bound to cgroup v1 on this host (hybrid \
                     hierarchy), so cgroup v2 cannot limit it"
                )
            } else {
                format!(
                    "the {controller} controller is not enabled in {}/cgroup.subtree_control \
                     (delegate it: echo +{controller} > cgroup.subtree_control)",
                    parent.display()
                )
            }
        };
        if available.iter().any(|c| c == "memory") {
            match fs::write(leaf.path.join("memory.max"), memory_max.to_string()) {
                Ok(()) => {
                    limits.memory_max = Some(memory_max);
                    // No swap escape hatch: memory.max alone lets the tree swap out.
                    let _ = fs::write(leaf.path.join("memory.swap.max"), "0");
                }
                Err(e) => limits.memory_reason = Some(format!("writing memory.max failed: {e}")),
            }
        } else {
            limits.memory_reason = Some(why_missing("memory"));
        }
        if available.iter().any(|c| c == "pids") {
            match fs::write(leaf.path.join("pids.max"), pids_max.to_string()) {
                Ok(()) => limits.pids_max = Some(pids_max),
                Err(e) => limits.pids_reason = Some(format!("writing pids.max failed: {e}")),
            }
        } else {
            limits.pids_reason = Some(why_missing("pids"));
        }
        Ok((leaf, limits))
    }

    /// `cgroup.kill`: SIGKILL to every process in the leaf, including ones that escaped their
    /// session or process group (Linux 5.14+).
    pub fn kill(&self) -> io::Result<()> {
        fs::write(self.path.join("cgroup.kill"), "1")
    }

    /// Whether any process is still in the leaf (`cgroup.events: populated`).
    pub fn populated(&self) -> bool {
        fs::read_to_string(self.path.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// `memory.current` of the whole tree, where the memory controller is enabled in the leaf.
    pub fn memory_current(&self) -> Option<u64> {
        fs::read_to_string(self.path.join("memory.current"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whole-tree accounting.
    pub fn stats(&self) -> LeafStats {
        let kv = |file: &str, key: &str| -> Option<u64> {
            let text = fs::read_to_string(self.path.join(file)).ok()?;
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let single = |file: &str| -> Option<u64> {
            fs::read_to_string(self.path.join(file))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        LeafStats {
            cpu_usage_usec: kv("cpu.stat", "usage_usec"),
            memory_peak_bytes: single("memory.peak"),
            pids_peak: single("pids.peak"),
            oom_kills: kv("memory.events", "oom_kill"),
        }
    }

    /// Kills what is left and removes the leaf (retrying briefly while killed processes finish
    /// exiting). Returns the error of the last attempt if the leaf could not be removed.
    pub fn remove(self) -> io::Result<()> {
        let mut last = None;
        for attempt in 0..200u32 {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {
                    if attempt == 0 {
                        let _ = self.kill();
                    }
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cgroup leaf still busy")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_mountinfo() {
        let text = "25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                    36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_v2_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_v2_mount("25 30 0:22 / /x rw - tmpfs tmpfs rw\n"),
            None
        );
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape_octal("/a\\040b"), "/a b");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("/trail\\04"), "/trail\\04");
    }
}
