//! A small pool of fresh network namespaces, created ahead of time by a background thread.
//!
//! Creating a network namespace is the single expensive namespace (about 0.26 ms here, against
//! ~0 for PID, IPC and UTS; measured with clone3 on this VM), and it sits on every dispatch's
//! critical path. So a thread keeps a couple of namespaces ready: it `unshare`s a new one
//! (only for itself: namespaces are per thread), brings its loopback up, keeps a descriptor to
//! it, and returns to the host namespace before handing the descriptor over. Init then
//! `setns`es into it instead of passing `CLONE_NEWNET`. Isolation is unchanged: every run gets
//! a namespace nobody used before, and its only descriptor is closed in init right after the
//! `setns`, so it disappears with the run. When the pool is empty (bursts) or unavailable (a
//! non-root Hall, whose runs live in their own user namespace), the namespace is created in
//! `clone3` as before.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};

use nix::libc;

/// Namespaces kept ready.
const CAPACITY: usize = 2;

struct Pool {
    rx: Mutex<Receiver<OwnedFd>>,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// Starts the pool (once per process). Only for a root Hall: `setns` into a namespace owned by
/// the initial user namespace needs CAP_SYS_ADMIN there.
pub(crate) fn start() {
    POOL.get_or_init(|| {
        let host = File::open("/proc/thread-self/ns/net").ok()?;
        let (tx, rx) = sync_channel::<OwnedFd>(CAPACITY);
        std::thread::Builder::new()
            .name("wcp-netns-pool".into())
            .spawn(move || producer(host, tx))
            .ok()?;
        Some(Pool { rx: Mutex::new(rx) })
    });
}

/// A fresh namespace with loopback up, if one is ready.
pub(crate) fn take() -> Option<OwnedFd> {
    let pool = POOL.get()?.as_ref()?;
    pool.rx.lock().ok()?.try_recv().ok()
}

fn producer(host: File, tx: SyncSender<OwnedFd>) {
    loop {
        let Some(fd) = create(&host) else {
            return; // cannot create namespaces: runs fall back to clone3(CLONE_NEWNET)
        };
        if tx.send(fd).is_err() {
            return;
        }
    }
}

/// Creates one namespace on this thread and comes back to the host namespace.
#[allow(unsafe_code)] // unshare/setns change the calling thread's namespace
fn create(host: &File) -> Option<OwnedFd> {
    // SAFETY: unshare/setns affect only this thread's network namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return None;
        }
        let up = super::child::loopback_up();
        let fd = File::open("/proc/thread-self/ns/net").ok();
        if libc::setns(host.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
            // Stuck in a private namespace: this thread must not do anything else.
            return None;
        }
        if !up {
            return None;
        }
        fd.map(OwnedFd::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_namespaces_are_fresh_and_distinct() {
        if nix::unistd::geteuid().as_raw() != 0 {
            return;
        }
        let host = File::open("/proc/thread-self/ns/net").unwrap();
        let a = create(&host).unwrap();
        let b = create(&host).unwrap();
        use std::os::unix::fs::MetadataExt;
        let ino = |f: &OwnedFd| File::from(f.try_clone().unwrap()).metadata().unwrap().ino();
        let host_ino = host.metadata().unwrap().ino();
        assert_ne!(ino(&a), ino(&b));
        assert_ne!(ino(&a), host_ino);
        // This thread is back in the host namespace.
        let now = File::open("/proc/thread-self/ns/net").unwrap();
        assert_eq!(now.metadata().unwrap().ino(), host_ino);
    }
}
