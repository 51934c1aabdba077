//! The dedicated spawner thread.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process: a
//! worker forked from a short-lived blocking-pool thread would be killed when that thread idles
//! out. So every `clone3` happens on one long-lived thread, started on first use and kept for
//! the life of the process; callers (any thread, e.g. the daemon's blocking pool) hand it a
//! prepared [`ChildSpec`] and wait for the pid and pidfd. Forks are therefore serialised, which
//! also means no other run's pipe ends can be half-set-up in the Hall while one is cloned.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

use nix::libc;

use super::child::{ChildSpec, init_main};
use super::sys::{self, CloneArgs};

/// A child started by the spawner.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
}

struct Job {
    spec: *const ChildSpec,
    flags: u64,
    cgroup_fd: Option<RawFd>,
    reply: SyncSender<io::Result<Spawned>>,
}

// SAFETY: the spec pointer stays valid until the reply is received (the caller blocks on it).
unsafe impl Send for Job {}

fn sender() -> &'static Mutex<mpsc::Sender<Job>> {
    static SENDER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("wcp-envelope-spawner".into())
            .spawn(move || spawner_loop(rx))
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Without a thread the receiver is dropped and every spawn reports SpawnerGone.
                eprintln!("wcp-hall: cannot start the envelope spawner thread: {e}");
            });
        Mutex::new(tx)
    })
}

fn spawner_loop(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        // SAFETY: the caller keeps the spec alive until it has our reply.
        let spec = unsafe { &*job.spec };
        let result = clone_init(spec, job.flags, job.cgroup_fd);
        let _ = job.reply.send(result);
    }
}

fn clone_init(spec: &ChildSpec, flags: u64, cgroup_fd: Option<RawFd>) -> io::Result<Spawned> {
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

/// Clones init with `flags` (namespaces) on the spawner thread; blocks until it is started.
pub(crate) fn spawn(
    spec: &ChildSpec,
    flags: u64,
    cgroup_fd: Option<RawFd>,
) -> Result<io::Result<Spawned>, ()> {
    let (reply, answer) = mpsc::sync_channel(1);
    let job = Job {
        spec: spec as *const ChildSpec,
        flags,
        cgroup_fd,
        reply,
    };
    {
        let tx = sender().lock().map_err(|_| ())?;
        tx.send(job).map_err(|_| ())?;
    }
    answer.recv().map_err(|_| ())
}
