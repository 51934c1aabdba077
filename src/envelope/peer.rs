//! Is a connecting peer one of the Hall's own workers?
//!
//! Threat model: a hostile worker that knows the design and can open the Hall's socket (an
//! ordinary-user Hall runs its workers under its own uid in a user namespace; a root Hall's
//! socket may be reachable by the worker uid through its mode or group). Landlock below ABI 9
//! does not mediate `connect()` on pathname sockets, and a private network namespace does not
//! either. Whatever path it reaches the socket by, its process descends from the Hall: every
//! worker process is a descendant of an init the Hall cloned, and orphans are re-parented to
//! that init (PID 1 of the run's PID namespace, or a child subreaper), never out of the tree.
//! So the Hall refuses any peer whose ancestry reaches the Hall's own process.
//!
//! Only a peer whose uid a worker can have (the Hall's own, or the configured worker uid) is
//! walked: every other uid is outside by construction. That also keeps clients working when
//! `/proc` hides other users' processes (systemd's `ProtectProc=invisible`), while every
//! worker process stays visible to the Hall (same uid in a user namespace the Hall owns, or a
//! root Hall).
//!
//! Races: the peer pid comes from `SO_PEERPIDFD` where the kernel has it (Linux 6.5+): the pidfd
//! is taken at `connect()` and checked to be alive after the walk, so a connecting process that
//! exited (leaving the socket to a child) or whose pid was reused is refused. Without it the pid
//! from `SO_PEERCRED` is used; a peer whose `/proc` entry is gone is refused.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerOrigin {
    /// Not a descendant of the Hall.
    Outside,
    /// A descendant of the Hall (a worker, or a probe the Hall started).
    Worker { pid: i32 },
    /// The peer cannot be placed (gone, unreadable, a chain too long): refuse it.
    Unknown(String),
}

/// The longest ancestry followed; deeper chains are refused as unknown.
const MAX_DEPTH: usize = 1024;

/// Places the peer of `sock` (whose `SO_PEERCRED` uid and pid are `uid` and `cred_pid`)
/// relative to this process; `worker_uids` are the uids a worker process can have.
pub fn origin(
    sock: BorrowedFd<'_>,
    uid: u32,
    cred_pid: Option<i32>,
    worker_uids: &[u32],
) -> PeerOrigin {
    if !worker_uids.contains(&uid) {
        return PeerOrigin::Outside;
    }
    let own = std::process::id() as i32;
    let pidfd = match super::sys::peer_pidfd(sock.as_raw_fd()) {
        Ok(fd) => fd,
        Err(e) => return PeerOrigin::Unknown(format!("SO_PEERPIDFD: {e}")),
    };
    let pid = match &pidfd {
        Some(fd) => match pidfd_pid(fd.as_raw_fd()) {
            Ok(Some(p)) => p,
            Ok(None) => return PeerOrigin::Unknown("the connecting process has exited".into()),
            Err(e) => return PeerOrigin::Unknown(format!("reading the peer's pidfd: {e}")),
        },
        None => match cred_pid {
            // 0: the peer's pid is not visible in this PID namespace, so it is not in a
            // namespace below ours, where every worker is.
            Some(0) => return PeerOrigin::Outside,
            Some(p) => p,
            None => return PeerOrigin::Unknown("the kernel reported no peer pid".into()),
        },
    };
    let found = walk(pid, own);
    // Still alive after the walk (its fdinfo still names a pid; signal 0 would need the right
    // to signal it), so the pid was not reused under us.
    if let Some(fd) = &pidfd
        && !matches!(pidfd_pid(fd.as_raw_fd()), Ok(Some(p)) if p == pid)
    {
        // Exited during the walk: its pid may have been reused, so what was read proves nothing.
        return PeerOrigin::Unknown("the connecting process exited during the check".into());
    }
    found
}

fn walk(pid: i32, own: i32) -> PeerOrigin {
    let mut cur = pid;
    for _ in 0..MAX_DEPTH {
        if cur == own {
            return PeerOrigin::Worker { pid };
        }
        if cur <= 1 {
            return PeerOrigin::Outside;
        }
        cur = match ppid(cur) {
            Ok(p) => p,
            Err(e) => return PeerOrigin::Unknown(format!("/proc/{cur}/stat: {e}")),
        };
    }
    PeerOrigin::Unknown(format!("an ancestry deeper than {MAX_DEPTH} processes"))
}

/// The parent pid from `/proc/<pid>/stat` (the field after the parenthesised command name,
/// which may itself contain spaces and parentheses).
fn ppid(pid: i32) -> io::Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_ppid(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable"))
}

fn parse_ppid(stat: &str) -> Option<i32> {
    super::sys::stat_fields(stat)?.nth(1)?.parse().ok()
}

/// The pid a pidfd refers to (`Pid:` in its fdinfo); `None` once the process has exited.
fn pidfd_pid(fd: i32) -> io::Result<Option<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Pid: line"))?;
    Ok((pid > 0).then_some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(parse_ppid("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("1 (systemd) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn a_child_is_a_worker_and_an_unrelated_process_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // A child of this process connects: it descends from "the Hall".
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(5)",
            ])
            .arg(&path)
            .spawn()
            .unwrap();
        let (conn, _) = listener.accept().unwrap();
        let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .unwrap();
        let me = [nix::unistd::geteuid().as_raw()];
        assert_eq!(
            origin(conn.as_fd(), cred.uid(), Some(cred.pid()), &me),
            PeerOrigin::Worker { pid: cred.pid() }
        );
        // A uid no worker can have is outside without a look at /proc.
        assert_eq!(
            origin(conn.as_fd(), cred.uid(), Some(cred.pid()), &[12345]),
            PeerOrigin::Outside
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Once it is gone it cannot be placed, and is refused.
        assert!(matches!(
            origin(conn.as_fd(), cred.uid(), Some(cred.pid()), &me),
            PeerOrigin::Unknown(_)
        ));
        // init (pid 1) is nobody's descendant.
        assert_eq!(walk(1, std::process::id() as i32), PeerOrigin::Outside);
    }
}
