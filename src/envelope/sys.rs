//! Thin wrappers over the Linux system calls the envelope needs and `nix` 0.32 does not offer
//! (clone3, pidfds, Landlock's version query, seccomp's action query, memfd seals), and the one
//! reader of `/proc/<pid>/stat` lines.
//!
//! Everything here is a direct system call with its error mapped to `std::io::Error`; nothing
//! allocates, so the raw pieces ([`clone3`]) are also usable between fork and exec.

#![allow(unsafe_code)] // system calls `nix` does not offer: clone3, pidfds, Landlock, seccomp, memfd

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// `CLONE_INTO_CGROUP` (Linux 5.7): libc's constant is an overflowing `c_int`.
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (Linux 5.7+, CLONE_ARGS_SIZE_VER2 = 88 bytes with `cgroup`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `clone3` with fork semantics (no new stack, no CLONE_VM): returns 0 in the child and the
/// child's pid in the parent.
///
/// # Safety
/// In a multi-threaded process the child may only call async-signal-safe functions (no
/// allocation, no locks) until it execs or exits; glibc's thread bookkeeping is stale there, so
/// credential changes must use raw system calls.
pub(crate) unsafe fn clone3(args: &mut CloneArgs) -> io::Result<libc::pid_t> {
    // SAFETY: args points to a properly sized clone_args; the caller upholds the child rules.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub(crate) fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments and a NULL siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The Landlock ABI version the kernel offers: `Ok(n)` (n ≥ 1) or the errno (`EOPNOTSUPP`:
/// built but disabled at boot; `ENOSYS`: not built).
pub(crate) fn landlock_abi() -> Result<i32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as i32)
    }
}

/// Whether seccomp filters with `SECCOMP_RET_ERRNO` can be installed (asks the kernel; installs
/// nothing).
pub(crate) fn seccomp_errno_available() -> Result<(), i32> {
    const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;
    let action: u32 = libc::SECCOMP_RET_ERRNO;
    // SAFETY: the kernel reads one u32 from the pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// Sets `O_NONBLOCK` on a descriptor the Hall owns (its end of a pipe).
pub(crate) fn set_nonblocking(fd: &OwnedFd) {
    let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
    // SAFETY: fcntl on a descriptor we own; failure leaves it blocking, which the callers only
    // use in a poll loop that never reads or writes more than poll reported ready.
    unsafe {
        let fl = libc::fcntl(raw, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// A pipe with both ends close-on-exec: (read, write).
pub(crate) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A sealed, close-on-exec memfd holding `data`, positioned at offset 0: the worker's stdin.
/// Sealing means nobody (including the worker) can change the request after the Hall wrote it.
pub(crate) fn sealed_memfd(name: &std::ffi::CStr, data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, data)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    let fd = OwnedFd::from(file);
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// The fields of a `/proc/<pid>/stat` line after the parenthesised command name (which may
/// itself hold spaces and parentheses): the state first, then the parent pid, and so on
/// (`proc_pid_stat(5)`'s field n is item n - 3).
pub(crate) fn stat_fields(stat: &str) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    Some(stat.get(stat.rfind(')')? + 1..)?.split_ascii_whitespace())
}

/// `strerror`-style text for an errno, for messages.
pub(crate) fn errno_text(errno: i32) -> String {
    if errno == 0 {
        return "no errno".into();
    }
    let name = nix::errno::Errno::from_raw(errno);
    format!("{name:?}: {}", io::Error::from_raw_os_error(errno))
}

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd for the peer of a connected Unix socket, taken at
/// `connect()` time. `Ok(None)` when the kernel does not know the option.
pub(crate) fn peer_pidfd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the int we own; the descriptor it
    // returns is new and ours alone, so wrapping it in an OwnedFd is sound.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) => Ok(None),
            _ => Err(e),
        };
    }
    if fd < 0 {
        return Ok(None);
    }
    // SAFETY: see above.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}
