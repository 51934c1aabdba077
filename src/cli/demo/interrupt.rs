//! Interruption: Ctrl-C, SIGTERM and SIGHUP stop the demo's Hall and remove its directory
//! (unless `--keep`) before the demo exits 130.
//!
//! Owns the signal thread and what it must clean up; it must not touch anything else of the
//! demo's state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::workspace::remove_tree;

/// What an interrupted demo must clean up: its directory (unless kept) and its Hall.
pub(super) struct Interruptible {
    pub(super) dir: Option<PathBuf>,
    pub(super) keep: bool,
    pub(super) hall_pid: Option<u32>,
}

/// Set by the signal thread before it cleans up and exits 130.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(super) static INTERRUPT: std::sync::Mutex<Interruptible> =
    std::sync::Mutex::new(Interruptible {
        dir: None,
        keep: false,
        hall_pid: None,
    });

pub(super) fn interruptible(update: impl FnOnce(&mut Interruptible)) {
    let mut g = INTERRUPT.lock().unwrap_or_else(|p| p.into_inner());
    update(&mut g);
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP must not leave a Hall running or a directory on tmpfs:
/// they are blocked in every thread of the demo and taken by one thread with `sigwait`, which
/// kills the Hall, removes the directory (unless `--keep`) and exits 130. Children start with
/// an empty signal mask (std resets it), so the Hall still stops on its own signals.
pub(super) fn guard_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            INTERRUPTED.store(true, Ordering::Release);
            // Held until the process exits: the main thread waits on it (see `run`).
            let g = INTERRUPT.lock().unwrap_or_else(|p| p.into_inner());
            let (dir, keep, pid) = (g.dir.clone(), g.keep, g.hall_pid);
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
            }
            let what = match (&dir, keep) {
                (Some(d), false) => match remove_tree(d) {
                    Ok(()) => format!("removed {}", d.display()),
                    Err(e) => format!("could not remove {}: {e}", d.display()),
                },
                (Some(d), true) => format!("kept {}", d.display()),
                (None, _) => "nothing to clean up".to_owned(),
            };
            eprintln!("wcp-hall demo: interrupted by {sig}; the Hall was stopped; {what}");
            std::process::exit(130);
        });
}
