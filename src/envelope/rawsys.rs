//! Raw x86_64 system calls for the pre-exec processes: no libc, no `errno`, no thread-local
//! storage.
//!
//! Init and the worker share the Hall's address space until the worker execs (vfork-style
//! clones, see [`super::child`]), and they run with the forking thread's TLS pointer. A glibc
//! wrapper that fails writes `errno` into *that thread's* TLS slot, racing with the Hall's own
//! error handling; so the children make every system call through [`syscall6`], which returns
//! `-errno` in the result register and touches no memory but its arguments.
//!
//! [`clone_on_stack`] is the one piece that cannot be written in plain Rust: a `clone3` with
//! `CLONE_VM` and a new stack returns in the child on that stack, where no Rust frame exists,
//! so the child branch must call its entry point from assembly.

#![allow(unsafe_code)] // the `syscall` instruction and the clone-on-a-new-stack trampoline are `asm!`

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the privilege envelope's pre-exec code is written for x86_64 (seccomp filter, raw system calls)"
);

use std::arch::asm;

use nix::libc;

use super::sys::CloneArgs;

/// One system call with up to six arguments. Returns the raw result: `-errno` on failure.
///
/// # Safety
/// The arguments must be valid for system call `nr`.
#[inline(always)]
pub(crate) unsafe fn syscall6(
    nr: libc::c_long,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 system-call convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            in("r8") a5,
            in("r9") a6,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// `syscall6` with fewer arguments.
#[inline(always)]
pub(crate) unsafe fn sys(nr: libc::c_long, args: &[usize]) -> isize {
    let a = |i: usize| args.get(i).copied().unwrap_or(0);
    // SAFETY: forwarded to the caller.
    unsafe { syscall6(nr, a(0), a(1), a(2), a(3), a(4), a(5)) }
}

/// The errno of a raw result (0 when it succeeded).
#[inline(always)]
pub(crate) fn err(r: isize) -> i32 {
    if (-4095..0).contains(&r) {
        (-r) as i32
    } else {
        0
    }
}

/// `clone3(args)` where `args.stack` / `args.stack_size` give the child a new stack: the
/// child calls `entry(arg)` on it and must never return. Returns the child's pid (or
/// `-errno`) in the parent.
///
/// # Safety
/// `args` must describe a valid clone with a stack whose top is 16-byte aligned and which stays
/// mapped for the child's lifetime; `entry` must not return.
pub(crate) unsafe fn clone_on_stack(
    args: &mut CloneArgs,
    entry: unsafe extern "C" fn(usize) -> !,
    arg: usize,
) -> isize {
    let ret: isize;
    // SAFETY: in the child (rax == 0) the kernel has switched rsp to the new stack; r12 and
    // r13 survive the system call, so the child calls entry(arg) with a fresh frame. The
    // parent falls through to label 2 with the pid (or -errno) in rax.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The kernel's `struct sigaction` for `rt_sigaction` (not glibc's).
#[repr(C)]
pub(crate) struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

/// A kernel signal set with the given signals.
pub(crate) const fn sigset(signals: &[libc::c_int]) -> u64 {
    let mut set = 0u64;
    let mut i = 0;
    while i < signals.len() {
        set |= 1u64 << (signals[i] - 1);
        i += 1;
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_calls_return_minus_errno() {
        // SAFETY: harmless calls.
        unsafe {
            assert_eq!(sys(libc::SYS_getpid, &[]), std::process::id() as isize);
            let r = sys(libc::SYS_close, &[987_654]);
            assert_eq!(err(r), libc::EBADF);
        }
        assert_eq!(err(5), 0);
        assert_eq!(sigset(&[libc::SIGHUP, libc::SIGCHLD]), 1 | 1 << 16);
    }
}
