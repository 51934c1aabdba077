//! Starting init: one `clone3` with the planned namespaces, born in the cgroup leaf, with a
//! pidfd for race-free signalling.
//!
//! Which thread forks matters: `PR_SET_PDEATHSIG` fires when the *thread* that created the
//! child exits, not the process, and a worker forked from a tokio blocking-pool thread has been
//! killed when that thread idled out (the pitfall in sandbox-anchors §3). The envelope avoids it
//! by construction rather than with a dedicated spawner thread: [`super::Envelope::run`] clones
//! on the calling thread and *supervises on that same thread until init has been reaped*, so
//! the forking thread cannot exit while init lives (a pool thread is busy for the whole run).
//! If the Hall dies, every thread dies and the parent-death signal fires, as intended; if the
//! supervising code unwinds, a guard kills the tree, so no run outlives its supervisor. This
//! also saves a thread hand-off per run (two wake-ups, measurable on a loaded 2-core host).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;

use super::child::{ChildSpec, init_main};
use super::sys::{self, CloneArgs};

/// A started init.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

/// Clones init with `flags` (namespaces) on the calling thread, inside `cgroup_fd`'s leaf.
pub(crate) fn spawn(spec: &ChildSpec, flags: u64, cgroup_fd: Option<RawFd>) -> io::Result<Spawned> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= sys::CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: the child only runs init_main, which follows the fork-child rules.
    match unsafe { sys::clone3(&mut args) }? {
        0 => unsafe { init_main(spec) },
        pid => Ok(Spawned {
            pid,
            // SAFETY: CLONE_PIDFD stored a fresh descriptor we now own.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Kills init (and with it the PID namespace) and the cgroup leaf if supervision is abandoned
/// before init was reaped (a panic while supervising).
pub(crate) struct KillOnDrop<'a> {
    pub pidfd: RawFd,
    pub leaf: Option<&'a super::cgroup::Leaf>,
    pub armed: bool,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = sys::pidfd_send_signal(self.pidfd, libc::SIGKILL);
            if let Some(leaf) = self.leaf {
                let _ = leaf.kill();
            }
        }
    }
}

impl Spawned {
    pub(crate) fn raw_pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}
