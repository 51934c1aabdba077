//! Starting init: one `clone3` with the planned namespaces, born in the cgroup leaf, sharing
//! the Hall's address space on its own stack, with a pidfd for race-free signalling.
//!
//! Which thread clones matters: `PR_SET_PDEATHSIG` fires when the *thread* that created the
//! child exits, not the process, and a worker forked from a tokio blocking-pool thread has been
//! killed when that thread idled out (the pitfall in sandbox-anchors §3). The envelope avoids it
//! by construction rather than with a dedicated spawner thread: [`super::Envelope::run`] clones
//! on the calling thread and *supervises on that same thread until init has been reaped*, so
//! the cloning thread cannot exit while init lives (a pool thread is busy for the whole run).
//! If the Hall dies, every thread dies and the parent-death signal fires, as intended. This
//! also saves a thread hand-off per run (two wake-ups, measurable on a loaded 2-core host).
//!
//! Because init and the worker (until its exec) run in the Hall's address space, the memory
//! they read ([`ChildSpec`]) and their stacks ([`Stacks`]) are owned by [`Running`], which
//! frees them only once it is *settled*: init reaped and the status pipe at end-of-file (no
//! pre-exec process left). If supervision is abandoned (a panic), dropping [`Running`] kills
//! init, waits for it, and deliberately leaks those two allocations rather than risk a
//! pre-exec worker writing into freed memory.

#![allow(unsafe_code)] // clone3 of init with CLONE_VM on guarded stacks, and the signal mask around it

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::child::{ChildSpec, Stacks, init_entry};
use super::rawsys::{clone_on_stack, err};
use super::sys::{self, CloneArgs};

/// A started init and the memory it runs on.
pub(crate) struct Running {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// The leaf's `cgroup.kill`, written when supervision is abandoned.
    leaf_kill: Option<std::path::PathBuf>,
    spec: ManuallyDrop<Box<ChildSpec>>,
    stacks: ManuallyDrop<Stacks>,
    settled: bool,
}

// SAFETY: `Running` owns the memory init and the pre-exec worker read (the spec's raw
// pointers point into the spec's own boxed strings and BPF programs) and their stacks. No Hall
// thread dereferences those pointers; moving the owner to another thread moves neither
// allocation (they are boxed / mapped), and they are freed only once settled (or leaked).
// Waiting for init and signalling it through its pidfd work from any thread of the Hall
// (`wait4` on a sibling thread's child is allowed within one thread group). A warm instance
// (`super::warm`) is started on the pool's thread and finished on a dispatch's thread.
unsafe impl Send for Running {}

impl Running {
    /// Init has been reaped and no pre-exec process is left: the memory can be freed.
    pub(crate) fn settle(mut self) {
        self.settled = true;
    }

    /// Kills init (its PID namespace goes with it), waits for it and frees the memory. Only for
    /// a run whose status pipe reached end-of-file (no pre-exec process is left to use it): a
    /// warm instance that is discarded.
    pub(crate) fn kill_settled(mut self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
        // Not reaped (it cannot happen: init is ours and nobody else waits for it): leak.
        self.settled = r == self.pid;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.settled {
            // SAFETY: nothing runs on or reads this memory any more; dropped exactly once.
            unsafe {
                ManuallyDrop::drop(&mut self.spec);
                ManuallyDrop::drop(&mut self.stacks);
            }
            return;
        }
        // Abandoned: kill init (its PID namespace goes with it) and wait until it is gone;
        // a worker that had not exec'd yet may still use the memory, so it is leaked.
        let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
        if let Some(kill) = &self.leaf_kill {
            let _ = std::fs::write(kill, "1");
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(self.pid, &mut status, libc::__WALL) };
    }
}

/// Clones init with `flags` (namespaces) on the calling thread, inside `cgroup_fd`'s leaf.
pub(crate) fn spawn(
    spec: Box<ChildSpec>,
    stacks: Stacks,
    flags: u64,
    leaf: Option<&super::cgroup::Leaf>,
) -> io::Result<Running> {
    let cgroup_fd = leaf.map(|l| l.dir_fd.as_raw_fd());
    let mut pidfd: libc::c_int = -1;
    let top = stacks.init_top();
    let size = super::child::INIT_STACK;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64 | libc::CLONE_VM as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: (top - size) as u64,
        stack_size: size as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_fd {
        args.flags |= sys::CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let spec_ptr: *const ChildSpec = &*spec;
    // As posix_spawn does: init starts with every signal blocked, so none of the Hall's
    // handlers can run on init's stack before init has reset them to the default.
    // SAFETY: `sigset_t` is plain integers, for which all zeroes is a valid value.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset operations on local values; the old mask is restored right after.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs init_entry on its own stack, reading only the spec, which lives
    // (with the stacks) in the returned Running until init is settled.
    let r = unsafe { clone_on_stack(&mut args, init_entry, spec_ptr as usize) };
    // SAFETY: restoring this thread's mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    if r < 0 {
        return Err(io::Error::from_raw_os_error(err(r)));
    }
    Ok(Running {
        pid: r as libc::pid_t,
        // SAFETY: CLONE_PIDFD stored a fresh descriptor we now own.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        leaf_kill: leaf.map(|l| l.path.join("cgroup.kill")),
        spec: ManuallyDrop::new(spec),
        stacks: ManuallyDrop::new(stacks),
        settled: false,
    })
}
