//! One small wrapper per system call the pre-exec processes make (init and the worker between
//! clone and exec, see [`super::child`]), each with its own `SAFETY:` note and a typed result:
//! `Ok` with what the call returns, or the [`Errno`] it failed with.
//!
//! Every wrapper is one raw system call through [`super::rawsys`]: no libc wrapper (it would
//! write `errno` into the forking thread's TLS), no allocation, no locks, no panics, nothing
//! written but the wrapper's own stack and the out-parameters its caller lends it. Owns only
//! making the call and typing its result; it must not decide what a failure means (the stage
//! logic in `child` does) nor keep any state. Outside the pre-exec processes, the Hall's
//! network namespace pool brings loopback up with the same wrappers (`child::loopback_up`).

#![allow(unsafe_code)] // each wrapper is one raw system call, justified where it is made

use std::ffi::CStr;

use nix::libc::{self, c_int};

use super::rawsys::{KernelSigaction, err, sys};

/// The error number a system call failed with (what the kernel returned as `-errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub i32);

/// Types a raw result: `-4095..0` is `-errno`, anything else is the call's value.
fn check(r: isize) -> Result<isize, Errno> {
    match err(r) {
        0 => Ok(r),
        e => Err(Errno(e)),
    }
}

/// `exit_group(code)`: ends every thread of the process. Never returns.
pub(crate) fn exit_group(code: c_int) -> ! {
    loop {
        // SAFETY: an integer argument; exit_group does not return, the loop only satisfies `!`.
        unsafe {
            sys(libc::SYS_exit_group, &[code as usize]);
        }
    }
}

/// `close(fd)`.
pub(crate) fn close(fd: c_int) -> Result<(), Errno> {
    // SAFETY: closes a descriptor number of this process's own descriptor table (the pre-exec
    // processes do not share the Hall's); no memory is touched.
    check(unsafe { sys(libc::SYS_close, &[fd as usize]) }).map(drop)
}

/// `write(fd, buf)`: the number of bytes written.
pub(crate) fn write(fd: c_int, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads `buf.len()` bytes from a live slice.
    check(unsafe {
        sys(
            libc::SYS_write,
            &[fd as usize, buf.as_ptr() as usize, buf.len()],
        )
    })
    .map(|n| n as usize)
}

/// `openat(AT_FDCWD, path, O_WRONLY | O_CLOEXEC)`: the new descriptor.
pub(crate) fn open_write_only(path: &CStr) -> Result<c_int, Errno> {
    // SAFETY: the kernel reads a NUL-terminated path from a live `CStr`.
    check(unsafe {
        sys(
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            ],
        )
    })
    .map(|fd| fd as c_int)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a close-on-exec copy of `fd` numbered at least `min`.
pub(crate) fn dup_cloexec_from(fd: c_int, min: c_int) -> Result<c_int, Errno> {
    // SAFETY: integer arguments only.
    check(unsafe {
        sys(
            libc::SYS_fcntl,
            &[fd as usize, libc::F_DUPFD_CLOEXEC as usize, min as usize],
        )
    })
    .map(|fd| fd as c_int)
}

/// `dup3(old, new, 0)`: `new` becomes a copy of `old` that survives exec.
pub(crate) fn dup3(old: c_int, new: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only; replaces a descriptor of this process's own table.
    check(unsafe { sys(libc::SYS_dup3, &[old as usize, new as usize, 0]) }).map(drop)
}

/// `fcntl(fd, F_SETFD, FD_CLOEXEC)`.
pub(crate) fn set_cloexec(fd: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe {
        sys(
            libc::SYS_fcntl,
            &[
                fd as usize,
                libc::F_SETFD as usize,
                libc::FD_CLOEXEC as usize,
            ],
        )
    })
    .map(drop)
}

/// `close_range(first, u32::MAX, 0)` (Linux 5.9).
pub(crate) fn close_from(first: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only; closes descriptors of this process's own table.
    check(unsafe {
        sys(
            libc::SYS_close_range,
            &[first as usize, u32::MAX as usize, 0],
        )
    })
    .map(drop)
}

/// `prlimit64(0, resource, NULL, &old)`: this process's limit.
pub(crate) fn get_rlimit(resource: c_int) -> Result<libc::rlimit, Errno> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the kernel writes one `struct rlimit` into `lim`, which lives on this stack.
    check(unsafe {
        sys(
            libc::SYS_prlimit64,
            &[
                0,
                resource as usize,
                0,
                &mut lim as *mut libc::rlimit as usize,
            ],
        )
    })?;
    Ok(lim)
}

/// `prlimit64(0, resource, &{soft, hard}, NULL)`.
pub(crate) fn set_rlimit(resource: c_int, soft: u64, hard: u64) -> Result<(), Errno> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: the kernel reads one `struct rlimit` from `lim`, which lives on this stack.
    check(unsafe {
        sys(
            libc::SYS_prlimit64,
            &[
                0,
                resource as usize,
                &lim as *const libc::rlimit as usize,
                0,
            ],
        )
    })
    .map(drop)
}

/// `setsid()`.
pub(crate) fn setsid() -> Result<(), Errno> {
    // SAFETY: no arguments.
    check(unsafe { sys(libc::SYS_setsid, &[]) }).map(drop)
}

/// `prctl(option, arg, 0, 0, 0)` for the integer-argument options.
pub(crate) fn prctl(option: c_int, arg: usize) -> Result<(), Errno> {
    // SAFETY: integer-argument prctl options only (the callers' options take no pointer).
    check(unsafe { sys(libc::SYS_prctl, &[option as usize, arg, 0, 0, 0]) }).map(drop)
}

/// `setns(fd, nstype)`.
pub(crate) fn setns(fd: c_int, nstype: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only; changes this process's namespace.
    check(unsafe { sys(libc::SYS_setns, &[fd as usize, nstype as usize]) }).map(drop)
}

/// `rt_sigaction(sig, {SIG_DFL}, NULL, 8)`: the signal's default disposition.
pub(crate) fn set_default_action(sig: c_int) -> Result<(), Errno> {
    let dfl = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: the kernel reads one kernel `struct sigaction` from `dfl`, on this stack; no old
    // action is written back.
    check(unsafe {
        sys(
            libc::SYS_rt_sigaction,
            &[sig as usize, &dfl as *const KernelSigaction as usize, 0, 8],
        )
    })
    .map(drop)
}

/// `rt_sigprocmask(SIG_SETMASK, &mask, NULL, 8)`.
pub(crate) fn set_sigmask(mask: u64) -> Result<(), Errno> {
    // SAFETY: the kernel reads 8 bytes of signal set from `mask`, on this stack.
    check(unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[
                libc::SIG_SETMASK as usize,
                &mask as *const u64 as usize,
                0,
                8,
            ],
        )
    })
    .map(drop)
}

/// `rt_sigtimedwait(&set, NULL, NULL, 8)`: waits for one of the (blocked) signals in `set`.
pub(crate) fn sigwait(set: &u64) -> Result<c_int, Errno> {
    // SAFETY: the kernel reads 8 bytes of signal set; no siginfo is written, no timeout read.
    check(unsafe {
        sys(
            libc::SYS_rt_sigtimedwait,
            &[set as *const u64 as usize, 0, 0, 8],
        )
    })
    .map(|s| s as c_int)
}

/// `sethostname(name)`.
pub(crate) fn sethostname(name: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `name.len()` bytes from a live slice.
    check(unsafe { sys(libc::SYS_sethostname, &[name.as_ptr() as usize, name.len()]) }).map(drop)
}

/// `socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)`: the new descriptor.
pub(crate) fn inet_dgram_socket() -> Result<c_int, Errno> {
    // SAFETY: integer arguments only.
    check(unsafe {
        sys(
            libc::SYS_socket,
            &[
                libc::AF_INET as usize,
                (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize,
                0,
            ],
        )
    })
    .map(|fd| fd as c_int)
}

/// The part of `struct ifreq` the interface-flag ioctls use: a name and the flags.
#[repr(C)]
pub(crate) struct IfreqFlags {
    pub name: [u8; 16],
    pub flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfreqFlags {
    /// An ifreq for the interface `name` (at most 15 bytes, the rest is NUL).
    pub(crate) const fn named(name: &[u8]) -> IfreqFlags {
        let mut ifr = IfreqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        let mut i = 0;
        while i < name.len() && i < 15 {
            ifr.name[i] = name[i];
            i += 1;
        }
        ifr
    }
}

const SIOCGIFFLAGS: usize = 0x8913;
const SIOCSIFFLAGS: usize = 0x8914;

/// `ioctl(fd, SIOCGIFFLAGS, ifr)`: reads the interface's flags into `ifr.flags`.
pub(crate) fn get_if_flags(fd: c_int, ifr: &mut IfreqFlags) -> Result<(), Errno> {
    // SAFETY: the kernel reads and writes one full-sized `struct ifreq` (40 bytes) in `ifr`,
    // which the exclusive borrow keeps alive and unaliased.
    check(unsafe {
        sys(
            libc::SYS_ioctl,
            &[fd as usize, SIOCGIFFLAGS, ifr as *mut IfreqFlags as usize],
        )
    })
    .map(drop)
}

/// `ioctl(fd, SIOCSIFFLAGS, ifr)`: sets the interface's flags from `ifr.flags`.
pub(crate) fn set_if_flags(fd: c_int, ifr: &IfreqFlags) -> Result<(), Errno> {
    // SAFETY: the kernel reads one full-sized `struct ifreq` (40 bytes) from `ifr`.
    check(unsafe {
        sys(
            libc::SYS_ioctl,
            &[fd as usize, SIOCSIFFLAGS, ifr as *const IfreqFlags as usize],
        )
    })
    .map(drop)
}

/// `mount(NULL, target, NULL, MS_REC | MS_PRIVATE, NULL)`: nothing under `target` propagates.
pub(crate) fn make_private_recursive(target: &CStr) -> Result<(), Errno> {
    // SAFETY: the kernel reads a NUL-terminated path from a live `CStr`; the other pointers are
    // null, which this mount(2) form accepts.
    check(unsafe {
        sys(
            libc::SYS_mount,
            &[
                0,
                target.as_ptr() as usize,
                0,
                (libc::MS_REC | libc::MS_PRIVATE) as usize,
                0,
            ],
        )
    })
    .map(drop)
}

/// `mount(source, target, NULL, MS_BIND, NULL)`.
pub(crate) fn bind_mount(source: &CStr, target: &CStr) -> Result<(), Errno> {
    // SAFETY: the kernel reads two NUL-terminated paths from live `CStr`s; the file system type
    // and data are null, which a bind mount accepts.
    check(unsafe {
        sys(
            libc::SYS_mount,
            &[
                source.as_ptr() as usize,
                target.as_ptr() as usize,
                0,
                libc::MS_BIND as usize,
                0,
            ],
        )
    })
    .map(drop)
}

/// `getpid()`.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: no arguments; cannot fail.
    unsafe { sys(libc::SYS_getpid, &[]) as libc::pid_t }
}

/// `getppid()`.
pub(crate) fn getppid() -> libc::pid_t {
    // SAFETY: no arguments; cannot fail.
    unsafe { sys(libc::SYS_getppid, &[]) as libc::pid_t }
}

/// `wait4(-1, &status, WNOHANG | __WALL, NULL)`: a reaped child and its status, or `None`
/// when no child has changed state.
pub(crate) fn reap_any() -> Result<Option<(libc::pid_t, c_int)>, Errno> {
    let mut status: c_int = 0;
    // SAFETY: the kernel writes one `int` status into `status`, on this stack; no rusage.
    let pid = check(unsafe {
        sys(
            libc::SYS_wait4,
            &[
                -1isize as usize,
                &mut status as *mut c_int as usize,
                (libc::WNOHANG | libc::__WALL) as usize,
                0,
            ],
        )
    })?;
    Ok((pid > 0).then_some((pid as libc::pid_t, status)))
}

/// `getrusage(RUSAGE_SELF)`: this process's peak RSS in KiB.
pub(crate) fn max_rss_kib() -> Result<i64, Errno> {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one `struct rusage` into `ru`, on this stack.
    check(unsafe {
        sys(
            libc::SYS_getrusage,
            &[
                libc::RUSAGE_SELF as usize,
                &mut ru as *mut libc::rusage as usize,
            ],
        )
    })?;
    Ok(ru.ru_maxrss)
}

/// `kill(pid, sig)` (a negative `pid` is a process group, -1 every process it may signal).
pub(crate) fn kill(pid: libc::pid_t, sig: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe { sys(libc::SYS_kill, &[pid as isize as usize, sig as usize]) }).map(drop)
}

/// `setpgid(0, 0)`: a process group of its own.
pub(crate) fn setpgid_self() -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe { sys(libc::SYS_setpgid, &[0, 0]) }).map(drop)
}

/// `setgroups(0, NULL)`: no supplementary groups.
pub(crate) fn clear_groups() -> Result<(), Errno> {
    // SAFETY: an empty list; the null pointer is not read.
    check(unsafe { sys(libc::SYS_setgroups, &[0, 0]) }).map(drop)
}

/// `setresgid(gid, gid, gid)`.
pub(crate) fn setresgid(gid: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe {
        sys(
            libc::SYS_setresgid,
            &[gid as usize, gid as usize, gid as usize],
        )
    })
    .map(drop)
}

/// `setresuid(uid, uid, uid)`.
pub(crate) fn setresuid(uid: u32) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe {
        sys(
            libc::SYS_setresuid,
            &[uid as usize, uid as usize, uid as usize],
        )
    })
    .map(drop)
}

/// `chdir(path)`.
pub(crate) fn chdir(path: &CStr) -> Result<(), Errno> {
    // SAFETY: the kernel reads a NUL-terminated path from a live `CStr`.
    check(unsafe { sys(libc::SYS_chdir, &[path.as_ptr() as usize]) }).map(drop)
}

/// `landlock_restrict_self(ruleset_fd, 0)`.
pub(crate) fn landlock_restrict_self(ruleset_fd: c_int) -> Result<(), Errno> {
    // SAFETY: integer arguments only.
    check(unsafe { sys(libc::SYS_landlock_restrict_self, &[ruleset_fd as usize, 0]) }).map(drop)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, prog)`.
///
/// # Safety
/// `prog.filter` must point to `prog.len` live BPF instructions.
pub(crate) unsafe fn seccomp_set_filter(prog: &libc::sock_fprog) -> Result<(), Errno> {
    // SAFETY: the kernel reads the `sock_fprog` from a live reference and the instructions it
    // points to, which the caller guarantees are live.
    check(unsafe {
        sys(
            libc::SYS_seccomp,
            &[
                libc::SECCOMP_SET_MODE_FILTER as usize,
                0,
                prog as *const libc::sock_fprog as usize,
            ],
        )
    })
    .map(drop)
}

/// `execve(program, argv, envp)`: returns only on failure, with its error.
///
/// # Safety
/// `argv` and `envp` must each point to a null-terminated array of pointers to live
/// NUL-terminated strings.
pub(crate) unsafe fn execve(
    program: &CStr,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> Errno {
    // SAFETY: `program` is a live `CStr`; the caller guarantees the two arrays.
    let r = unsafe {
        sys(
            libc::SYS_execve,
            &[program.as_ptr() as usize, argv as usize, envp as usize],
        )
    };
    Errno(err(r))
}
