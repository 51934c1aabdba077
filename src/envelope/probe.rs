//! What this kernel and host can enforce, asked once at start-up (a few throwaway `clone3`
//! children and one probe cgroup; about a millisecond or two).
//!
//! Planning consults only this value, never the kernel directly, so a plan is a pure function
//! of (request, host settings, probe) and table tests can feed it any host they like.

use std::collections::BTreeMap;
use std::path::Path;

use nix::libc;
use serde::Serialize;

use super::cgroup;
use super::sys::{self, CloneArgs};
use super::types::HostConfig;

/// The Landlock ABI the envelope pins (see [`super::plan`]): ABI 6 is the last access-control
/// addition before this crate's tests (filesystem rights through `IoctlDev`, TCP bind/connect,
/// abstract-socket and signal scopes); ABI 7 only adds audit-log flags.
pub const LANDLOCK_ABI_REQUESTED: u32 = 6;

/// Landlock support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LandlockProbe {
    /// The kernel's ABI version; 0 when Landlock is unavailable.
    pub kernel_abi: u32,
    /// `available`, `disabled_at_boot` (EOPNOTSUPP) or `not_built` (ENOSYS).
    pub status: String,
}

/// Seccomp filter support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeccompProbe {
    pub filter: bool,
    pub reason: Option<String>,
}

/// Which namespaces a child can be created in. When the Hall is not root they are created
/// inside a new user namespace (`user` must then be true for any of the others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceProbe {
    pub user: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// A mount namespace (to hide the Hall's socket from workers).
    #[serde(default)]
    pub mnt: bool,
    /// Namespace → errno text, for the ones that failed.
    pub errors: BTreeMap<String, String>,
}

/// cgroup v2 support for per-run leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupProbe {
    /// Where cgroup2 is mounted, if it is.
    pub v2_mount: Option<String>,
    /// The parent directory the Hall would create leaves in.
    pub parent: Option<String>,
    /// A leaf could be created (and removed) there.
    pub leaf_ok: bool,
    /// `cgroup.kill` exists in a leaf (Linux 5.14+).
    pub kill: bool,
    /// Children can be born inside the leaf (`clone3(CLONE_INTO_CGROUP)`, Linux 5.7+).
    pub clone_into_cgroup: bool,
    /// The memory / pids controllers reach a leaf (so `memory.max` / `pids.max` can be set).
    pub memory: bool,
    pub pids: bool,
    /// Controllers a leaf gets (its `cgroup.controllers`).
    pub leaf_controllers: Vec<String>,
    /// Controllers bound to cgroup v1 on this host (hybrid hierarchy).
    pub v1_controllers: Vec<String>,
    /// Why leaves, or their limits, are unavailable.
    pub reason: Option<String>,
}

/// Everything [`super::plan`] needs to know about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub kernel_release: String,
    pub hall_uid: u32,
    pub hall_gid: u32,
    /// The Hall's supplementary groups (other than its primary gid). A non-root Hall's workers
    /// inherit them: an unprivileged user namespace cannot drop them (`setgroups` is denied).
    #[serde(default)]
    pub hall_groups: Vec<u32>,
    pub landlock: LandlockProbe,
    pub landlock_abi_requested: u32,
    pub seccomp: SeccompProbe,
    pub namespaces: NamespaceProbe,
    pub cgroup: CgroupProbe,
}

/// Whether this host can bound a run's memory as a whole ([`Probe::memory_bound`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBoundProbe {
    /// `memory.max` can be set in a per-run leaf: the whole tree shares one bound.
    pub per_run: bool,
    /// `run` or `per_process` (only `RLIMIT_AS`, each process on its own).
    pub scope: String,
    /// Why there is no per-run bound.
    pub reason: Option<String>,
}

impl Probe {
    /// Whether a per-run memory bound is enforceable here. Without it only the per-process
    /// `RLIMIT_AS` applies (a run may hold that much in each of its processes), and a profile
    /// whose `cgroup` minimum is `required` is refused. Pure.
    pub fn memory_bound(&self) -> MemoryBoundProbe {
        let cg = &self.cgroup;
        let per_run = cg.parent.is_some() && cg.leaf_ok && cg.clone_into_cgroup && cg.memory;
        MemoryBoundProbe {
            per_run,
            scope: if per_run { "run" } else { "per_process" }.into(),
            reason: (!per_run).then(|| {
                cg.reason.clone().unwrap_or_else(|| {
                    if cg.parent.is_none() || !cg.leaf_ok {
                        "no usable cgroup v2 parent for per-run leaves".into()
                    } else if !cg.clone_into_cgroup {
                        "clone3(CLONE_INTO_CGROUP) is not available".into()
                    } else {
                        "the memory controller does not reach a per-run leaf".into()
                    }
                })
            }),
        }
    }

    /// Asks the running kernel. `host` names the cgroup parent to test.
    pub fn run(host: &HostConfig) -> Probe {
        let uname = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        let hall_uid = nix::unistd::geteuid().as_raw();
        let hall_gid = nix::unistd::getegid().as_raw();
        Probe {
            kernel_release: uname,
            hall_uid,
            hall_gid,
            hall_groups: nix::unistd::getgroups()
                .map(|g| {
                    g.into_iter()
                        .map(|g| g.as_raw())
                        .filter(|g| *g != hall_gid)
                        .collect()
                })
                .unwrap_or_default(),
            landlock: probe_landlock(),
            landlock_abi_requested: LANDLOCK_ABI_REQUESTED,
            seccomp: match sys::seccomp_errno_available() {
                Ok(()) => SeccompProbe {
                    filter: true,
                    reason: None,
                },
                Err(errno) => SeccompProbe {
                    filter: false,
                    reason: Some(format!(
                        "seccomp(SECCOMP_GET_ACTION_AVAIL, RET_ERRNO) failed: {}",
                        sys::errno_text(errno)
                    )),
                },
            },
            namespaces: probe_namespaces(hall_uid != 0),
            cgroup: probe_cgroup(host),
        }
    }
}

fn probe_landlock() -> LandlockProbe {
    match sys::landlock_abi() {
        Ok(abi) => LandlockProbe {
            kernel_abi: abi.max(0) as u32,
            status: "available".into(),
        },
        Err(errno) => LandlockProbe {
            kernel_abi: 0,
            status: if errno == libc::EOPNOTSUPP {
                "disabled_at_boot".into()
            } else {
                "not_built".into()
            },
        },
    }
}

/// Creates a throwaway child with `flags` (plus CLONE_INTO_CGROUP when `cgroup_fd` is given)
/// that exits at once; returns the clone errno on failure.
#[allow(unsafe_code)] // a throwaway clone3 child that only calls _exit
fn try_clone(flags: u64, cgroup_fd: Option<i32>) -> Result<(), i32> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= sys::CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: the child only calls _exit.
    match unsafe { sys::clone3(&mut args) } {
        // SAFETY: in the child, `_exit` is async-signal-safe and ends it at once.
        Ok(0) => unsafe { libc::_exit(0) },
        Ok(pid) => {
            let mut status = 0;
            // SAFETY: waiting for the child we just created.
            unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
            Ok(())
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    }
}

fn probe_namespaces(needs_user: bool) -> NamespaceProbe {
    let base = if needs_user {
        libc::CLONE_NEWUSER as u64
    } else {
        0
    };
    let mut errors = BTreeMap::new();
    let mut check = |name: &str, flag: libc::c_int| -> bool {
        match try_clone(base | flag as u64, None) {
            Ok(()) => true,
            Err(errno) => {
                errors.insert(name.to_owned(), sys::errno_text(errno));
                false
            }
        }
    };
    let user = check("user", libc::CLONE_NEWUSER);
    let pid = check("pid", libc::CLONE_NEWPID);
    let net = check("net", libc::CLONE_NEWNET);
    let ipc = check("ipc", libc::CLONE_NEWIPC);
    let uts = check("uts", libc::CLONE_NEWUTS);
    let mnt = check("mnt", libc::CLONE_NEWNS);
    NamespaceProbe {
        user,
        pid,
        net,
        ipc,
        uts,
        mnt,
        errors,
    }
}

fn probe_cgroup(host: &HostConfig) -> CgroupProbe {
    let v2_mount = cgroup::v2_mount();
    let parent = host.cgroup_parent.clone().or_else(cgroup::default_parent);
    let mut probe = CgroupProbe {
        v2_mount: v2_mount.as_ref().map(|p| p.display().to_string()),
        parent: parent.as_ref().map(|p| p.display().to_string()),
        leaf_ok: false,
        kill: false,
        clone_into_cgroup: false,
        memory: false,
        pids: false,
        leaf_controllers: Vec::new(),
        v1_controllers: cgroup::v1_controllers().to_vec(),
        reason: None,
    };
    let Some(parent) = parent else {
        probe.reason = Some("no cgroup v2 hierarchy is mounted".into());
        return probe;
    };
    if !is_v2_dir(&parent) {
        probe.reason = Some(format!(
            "{} is not a cgroup v2 directory (no cgroup.procs / cgroup.controllers)",
            parent.display()
        ));
        return probe;
    }
    // Unique per probe: several envelopes in one process may probe at once.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("wcp-probe-{}-{n}", std::process::id());
    match cgroup::Leaf::create(&parent, &name, 1 << 30, 64) {
        Err(e) => {
            probe.reason = Some(format!(
                "cannot create a leaf in {}: {e} (the Hall needs a delegated subtree)",
                parent.display()
            ));
        }
        Ok((leaf, limits)) => {
            probe.leaf_ok = true;
            probe.kill = leaf.path.join("cgroup.kill").exists();
            probe.leaf_controllers = cgroup::read_list(&leaf.path, "cgroup.controllers");
            probe.memory = limits.memory_max.is_some();
            probe.pids = limits.pids_max.is_some();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&leaf.dir_fd);
            probe.clone_into_cgroup = try_clone(0, Some(fd)).is_ok();
            let mut reasons = Vec::new();
            if let Some(r) = limits.memory_reason {
                reasons.push(r);
            }
            if let Some(r) = limits.pids_reason {
                reasons.push(r);
            }
            if !probe.kill {
                reasons.push("cgroup.kill is missing (Linux < 5.14)".into());
            }
            if !probe.clone_into_cgroup {
                reasons.push("clone3(CLONE_INTO_CGROUP) is not supported (Linux < 5.7)".into());
            }
            if !reasons.is_empty() {
                probe.reason = Some(reasons.join("; "));
            }
            let _ = leaf.remove();
        }
    }
    probe
}

fn is_v2_dir(dir: &Path) -> bool {
    dir.join("cgroup.procs").exists() && dir.join("cgroup.controllers").exists()
}
