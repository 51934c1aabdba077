//! O(1) "has this source tree changed since it was hashed?" with inotify.
//!
//! A cached re-verification must not re-read a package, and re-`stat`ing 5,000 files costs
//! ~10–20 ms. Instead, while the store scans a source tree it adds an inotify watch to every
//! directory **before listing it**, so any later change below it — a file written, truncated,
//! chmod-ed, created, deleted, renamed, or the directory itself moved or removed — queues an
//! event. Checking a source is then one non-blocking `read` of the inotify descriptor.
//!
//! Limits, and why they are safe: inotify does not report writes made through a shared `mmap`,
//! and watches can run out (`max_user_watches`) or the event queue overflow. An overflow marks
//! every source changed; a tree that could not be fully watched is never served from the watch
//! path (the store falls back to its metadata fingerprint), and the store rescans every source's
//! metadata periodically anyway. None of this is a security boundary: workers run from the
//! verified store copy, which no source change can alter; change detection only decides when
//! the source is hashed again (and reported as tampered).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// Watches over the source trees a store has hashed.
#[derive(Debug)]
pub(crate) struct TreeWatcher {
    inotify: Option<Inotify>,
    wd_sources: HashMap<WatchDescriptor, HashSet<PathBuf>>,
    source_wds: HashMap<PathBuf, HashSet<WatchDescriptor>>,
    dirty: HashSet<PathBuf>,
}

impl TreeWatcher {
    /// A watcher; without inotify (e.g. no instances left) every check reports "changed".
    pub fn new() -> Self {
        TreeWatcher {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok(),
            wd_sources: HashMap::new(),
            source_wds: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// A watcher that never vouches for anything (the store then relies on fingerprints).
    pub fn disabled() -> Self {
        TreeWatcher {
            inotify: None,
            wd_sources: HashMap::new(),
            source_wds: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    pub fn available(&self) -> bool {
        self.inotify.is_some()
    }

    /// Reads every queued event and marks the sources they concern as changed.
    fn drain(&mut self) {
        let Some(inotify) = &self.inotify else { return };
        loop {
            match inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.dirty.extend(self.source_wds.keys().cloned());
                            continue;
                        }
                        if let Some(sources) = self.wd_sources.get(&e.wd) {
                            self.dirty.extend(sources.iter().cloned());
                        }
                        if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                            // The kernel dropped the watch (directory removed).
                            if let Some(sources) = self.wd_sources.remove(&e.wd) {
                                for s in sources {
                                    if let Some(w) = self.source_wds.get_mut(&s) {
                                        w.remove(&e.wd);
                                    }
                                }
                            }
                        }
                    }
                }
                Ok(_) | Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    self.dirty.extend(self.source_wds.keys().cloned());
                    return;
                }
            }
        }
    }

    /// Starts a new scan of `source`: pending events are consumed and its changed mark cleared
    /// (events from here on mark it again).
    pub fn begin(&mut self, source: &Path) {
        self.drain();
        self.dirty.remove(source);
    }

    /// Watches the directory open at `dir` (call before listing it).
    pub fn watch(&mut self, dir: BorrowedFd<'_>) -> Option<WatchDescriptor> {
        let inotify = self.inotify.as_ref()?;
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        inotify.add_watch(path.as_str(), mask()).ok()
    }

    /// Ends a scan: `source` is now watched by exactly `wds` (`complete` if every directory
    /// got a watch); watches no longer needed by any source are removed.
    pub fn finish(&mut self, source: &Path, wds: HashSet<WatchDescriptor>, complete: bool) {
        let old = self.source_wds.remove(source).unwrap_or_default();
        for wd in old.difference(&wds) {
            if let Some(set) = self.wd_sources.get_mut(wd) {
                set.remove(source);
                if set.is_empty() {
                    self.wd_sources.remove(wd);
                    if let Some(i) = &self.inotify {
                        let _ = i.rm_watch(*wd);
                    }
                }
            }
        }
        for wd in &wds {
            self.wd_sources
                .entry(*wd)
                .or_default()
                .insert(source.to_owned());
        }
        if complete {
            self.source_wds.insert(source.to_owned(), wds);
        } else {
            // Keep the watches (they still mark changes) but never vouch for this source.
            self.source_wds.insert(source.to_owned(), wds);
            self.dirty.insert(source.to_owned());
        }
    }

    /// True if `source` is fully watched and nothing changed under it since its last scan.
    pub fn unchanged(&mut self, source: &Path) -> bool {
        if self.inotify.is_none() || !self.source_wds.contains_key(source) {
            return false;
        }
        self.drain();
        !self.dirty.contains(source)
    }

    /// Stops watching `source`.
    pub fn forget(&mut self, source: &Path) {
        self.finish(source, HashSet::new(), true);
        self.source_wds.remove(source);
        self.dirty.remove(source);
    }
}
