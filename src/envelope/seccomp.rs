//! The seccomp deny-list installed last before exec: one classic-BPF program per network mode,
//! built once (the argument rules by seccompiler, Firecracker's pure-Rust BPF compiler; the
//! architecture check, the x32 guard, `clone3 → ENOSYS` and a binary search over the
//! unconditional deny-list by hand, see `insert_prelude`) and identified in the report by a
//! SHA-256 digest.
//!
//! Default allow, `EPERM` on match: a worker is an ordinary interpreter that needs most of the
//! system-call table, and an allow-list would break with every Python or glibc update. What is
//! denied is what lets a process reach *outside* its envelope or attack the kernel:
//!
//! - other processes: `ptrace`, `process_vm_readv/writev`, `pidfd_getfd`, `kcmp`;
//! - side doors around socket filtering: `io_uring_*` (can create sockets without `socket()`);
//! - kernel attack surface: `bpf`, `perf_event_open`, `userfaultfd`, `keyctl`/`add_key`/
//!   `request_key`, module and kexec calls, `iopl`/`ioperm`;
//! - the filesystem view: `mount` and the new mount API, `umount2`, `pivot_root`, `chroot`,
//!   `open_by_handle_at`/`name_to_handle_at`, `quotactl*`, `swapon/off`;
//! - namespaces: `unshare`, `setns`, `clone` with any `CLONE_NEW*` flag, and `clone3` → `ENOSYS`
//!   (its flags sit behind a pointer seccomp cannot read; glibc falls back to `clone`);
//! - host state: `reboot`, `syslog`, `acct`, clock setting, `sethostname`, `setdomainname`,
//!   `vhangup`, NUMA page migration of other processes;
//! - terminal injection: `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)`;
//! - socket families other than `AF_UNIX`, `AF_INET`, `AF_INET6` (packet, netlink, vsock,
//!   AF_ALG…);
//! - x32 system calls (numbers with bit 30 set), which would otherwise slip past a deny-list
//!   keyed on x86_64 numbers; any other architecture kills the process (seccompiler's check).
//!
//! Modes add network rules: [`SeccompMode::NoInet`] (no IPv4/IPv6 sockets at all: the fallback
//! when a network namespace is unavailable) and [`SeccompMode::NoUdp`] (no UDP or raw IPv4/IPv6
//! sockets: Landlock's TCP port rules below ABI 10 cannot see UDP).
//! Seccomp cannot read pointer arguments (paths, socket addresses); those are Landlock's job.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Which network rules ride along with the base deny-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Base list only (a network namespace does the isolation).
    Base,
    /// Also deny `socket(AF_INET|AF_INET6, …)`.
    NoInet,
    /// Also deny UDP and raw IPv4/IPv6 sockets.
    NoUdp,
}

/// A compiled filter pair and what it contains.
#[derive(Debug)]
pub struct CompiledSeccomp {
    /// The program(s) to install, in order (one: see `insert_prelude`).
    pub programs: Vec<BpfProgram>,
    /// `sha256:` over the programs' instructions (length-prefixed, little-endian).
    pub digest: String,
    /// System calls denied with `EPERM` regardless of arguments.
    pub denied: Vec<&'static str>,
    /// System calls denied only for some arguments, described.
    pub conditional: Vec<String>,
    /// System calls answered with `ENOSYS`.
    pub enosys: Vec<&'static str>,
}

const DENIED: &[(&str, libc::c_long)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("reboot", libc::SYS_reboot),
    ("syslog", libc::SYS_syslog),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("vhangup", libc::SYS_vhangup),
    ("migrate_pages", libc::SYS_migrate_pages),
    ("move_pages", libc::SYS_move_pages),
    ("uselib", libc::SYS_uselib),
    ("ustat", libc::SYS_ustat),
    ("sysfs", libc::SYS_sysfs),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("fanotify_init", libc::SYS_fanotify_init),
];

const ENOSYS: &[(&str, libc::c_long)] = &[("clone3", libc::SYS_clone3)];

/// Namespace-creating clone flags (CLONE_NEWTIME is only accepted by clone3/unshare).
const CLONE_NS_FLAGS: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
];

const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

fn compile(mode: SeccompMode) -> Result<CompiledSeccomp, String> {
    // seccompiler compiles only the argument-dependent rules; the unconditional deny-list is a
    // binary search in the prelude (see insert_prelude).
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut conditional = Vec::new();

    // clone(flags, …) with any namespace flag.
    let mut clone_rules = Vec::new();
    for (_, flag) in CLONE_NS_FLAGS {
        clone_rules.push(rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(*flag as u64),
            *flag as u64,
        )?])?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    conditional.push(format!(
        "clone with any of {}",
        CLONE_NS_FLAGS
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join("|")
    ));

    rules.insert(
        libc::SYS_ioctl,
        vec![
            rule(vec![cond(1, SeccompCmpOp::Eq, TIOCSTI)?])?,
            rule(vec![cond(1, SeccompCmpOp::Eq, TIOCLINUX)?])?,
        ],
    );
    conditional.push("ioctl TIOCSTI, TIOCLINUX".into());

    // socket(domain, type, protocol).
    let mut socket_rules = vec![rule(vec![
        cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?,
        cond(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?,
        cond(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?,
    ])?];
    conditional.push("socket with a family other than AF_UNIX, AF_INET, AF_INET6".into());
    match mode {
        SeccompMode::Base => {}
        SeccompMode::NoInet => {
            for family in [libc::AF_INET, libc::AF_INET6] {
                socket_rules.push(rule(vec![cond(0, SeccompCmpOp::Eq, family as u64)?])?);
            }
            conditional.push("socket(AF_INET|AF_INET6, …): no IP networking at all".into());
        }
        SeccompMode::NoUdp => {
            for family in [libc::AF_INET, libc::AF_INET6] {
                for kind in [libc::SOCK_DGRAM, libc::SOCK_RAW] {
                    socket_rules.push(rule(vec![
                        cond(0, SeccompCmpOp::Eq, family as u64)?,
                        // The low bits are the type; SOCK_NONBLOCK / SOCK_CLOEXEC sit above.
                        cond(1, SeccompCmpOp::MaskedEq(0xf), kind as u64)?,
                    ])?);
                }
            }
            conditional.push("socket(AF_INET|AF_INET6, SOCK_DGRAM|SOCK_RAW): no UDP".into());
        }
    }
    rules.insert(libc::SYS_socket, socket_rules);

    let arch = TargetArch::x86_64;
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let mut deny: BpfProgram = deny
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    insert_prelude(&mut deny)?;

    // One program, not two: every installed filter is JIT-compiled per run, and that
    // compilation (not the filtering) is most of seccomp's cost on the spawn path.
    let programs = vec![deny];
    Ok(CompiledSeccomp {
        digest: digest(&programs),
        programs,
        denied: DENIED.iter().map(|(n, _)| *n).collect(),
        conditional,
        enosys: ENOSYS.iter().map(|(n, _)| *n).collect(),
    })
}

const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

fn ins(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// A jump target in the prelude, resolved once its layout is known.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// `RET ERRNO(EPERM)` right after the search.
    Deny,
    /// The first instruction after the prelude (seccompiler's argument rules).
    Rest,
    /// An absolute index in the prelude.
    At(usize),
}

struct Pending {
    code: u16,
    k: u32,
    jt: Target,
    jf: Target,
}

/// A binary search over the sorted deny-list: about log2(n) comparisons per system call.
/// Besides evaluation, this matters at install time: the kernel precomputes an allow cache by
/// emulating the filter for every system call number, which on a linear chain of ~60
/// comparisons cost about 0.2 ms per run.
fn search(nums: &[u32], out: &mut Vec<Pending>) {
    if nums.len() <= 3 {
        for n in nums {
            out.push(Pending {
                code: BPF_JMP_JEQ_K,
                k: *n,
                jt: Target::Deny,
                jf: Target::Next,
            });
        }
        out.push(Pending {
            code: BPF_JMP_JA,
            k: 0,
            jt: Target::Rest,
            jf: Target::Rest,
        });
        return;
    }
    let mid = nums.len() / 2;
    let at = out.len();
    out.push(Pending {
        code: BPF_JMP_JGE_K,
        k: nums[mid],
        jt: Target::Next, // patched below
        jf: Target::Next,
    });
    search(&nums[..mid], out);
    out[at].jt = Target::At(out.len());
    search(&nums[mid..], out);
}

/// Inserted after seccompiler's architecture check (3 instructions): deny every x32 system
/// call (`nr >= 0x40000000`), answer [`ENOSYS`] calls, deny [`DENIED`] by binary search, then
/// fall through to seccompiler's argument rules. One program, not two: every installed filter
/// is JIT-compiled and cached per run.
fn insert_prelude(program: &mut BpfProgram) -> Result<(), String> {
    let mut pending: Vec<Pending> = Vec::new();
    let direct = |code, k| Pending {
        code,
        k,
        jt: Target::Next,
        jf: Target::Next,
    };
    pending.push(direct(BPF_LD_W_ABS, 0)); // seccomp_data.nr
    pending.push(Pending {
        code: BPF_JMP_JGE_K,
        k: 0x4000_0000,
        jt: Target::Deny,
        jf: Target::Next,
    });
    for (_, nr) in ENOSYS {
        pending.push(Pending {
            code: BPF_JMP_JEQ_K,
            k: *nr as u32,
            jt: Target::At(usize::MAX), // patched: the ENOSYS return after Deny
            jf: Target::Next,
        });
    }
    let mut nums: Vec<u32> = DENIED.iter().map(|(_, nr)| *nr as u32).collect();
    nums.sort_unstable();
    nums.dedup();
    search(&nums, &mut pending);
    let deny_at = pending.len();
    pending.push(direct(
        BPF_RET_K,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    let enosys_at = pending.len();
    pending.push(direct(
        BPF_RET_K,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    let rest_at = pending.len();
    for p in pending.iter_mut() {
        if let Target::At(usize::MAX) = p.jt {
            p.jt = Target::At(enosys_at);
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for (i, p) in pending.iter().enumerate() {
        let abs = |t: Target| match t {
            Target::Next => i + 1,
            Target::Deny => deny_at,
            Target::Rest => rest_at,
            Target::At(a) => a,
        };
        if p.code == BPF_JMP_JA {
            out.push(ins(p.code, (rest_at - (i + 1)) as u32, 0, 0));
        } else if p.code & 0x07 == 0x05 {
            let rel = |t: Target| -> Result<u8, String> {
                u8::try_from(abs(t) - (i + 1))
                    .map_err(|_| "seccomp prelude jump too long".to_owned())
            };
            out.push(ins(p.code, p.k, rel(p.jt)?, rel(p.jf)?));
        } else {
            out.push(ins(p.code, p.k, 0, 0));
        }
    }
    let at = 3.min(program.len());
    program.splice(at..at, out);
    Ok(())
}

fn digest(programs: &[BpfProgram]) -> String {
    let mut h = Sha256::new();
    for p in programs {
        h.update((p.len() as u32).to_le_bytes());
        for ins in p {
            h.update(ins.code.to_le_bytes());
            h.update([ins.jt, ins.jf]);
            h.update(ins.k.to_le_bytes());
        }
    }
    format!("sha256:{}", crate::common::hex(&h.finalize()))
}

/// The compiled filter for `mode`, built on first use and then shared.
pub fn compiled(mode: SeccompMode) -> Result<&'static CompiledSeccomp, String> {
    static BASE: OnceLock<Result<CompiledSeccomp, String>> = OnceLock::new();
    static NO_INET: OnceLock<Result<CompiledSeccomp, String>> = OnceLock::new();
    static NO_UDP: OnceLock<Result<CompiledSeccomp, String>> = OnceLock::new();
    let cell = match mode {
        SeccompMode::Base => &BASE,
        SeccompMode::NoInet => &NO_INET,
        SeccompMode::NoUdp => &NO_UDP,
    };
    cell.get_or_init(|| compile(mode))
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_compiles_with_a_distinct_stable_digest() {
        let a = compiled(SeccompMode::Base).unwrap();
        let b = compiled(SeccompMode::NoInet).unwrap();
        let c = compiled(SeccompMode::NoUdp).unwrap();
        assert_ne!(a.digest, b.digest);
        assert_ne!(b.digest, c.digest);
        assert_eq!(a.digest, compile(SeccompMode::Base).unwrap().digest);
        assert!(a.digest.starts_with("sha256:") && a.digest.len() == 71);
        assert!(a.denied.contains(&"ptrace") && a.denied.contains(&"io_uring_setup"));
        assert_eq!(a.enosys, vec!["clone3"]);
    }

    /// A classic-BPF interpreter for the instructions the filter uses, over `seccomp_data`.
    fn run(p: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend(nr.to_ne_bytes());
        data.extend(arch.to_ne_bytes());
        data.extend(0u64.to_ne_bytes());
        for a in args {
            data.extend(a.to_ne_bytes());
        }
        let word = |off: u32| {
            let o = off as usize;
            u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]])
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        for _ in 0..10_000 {
            let i = &p[pc];
            pc += 1;
            match i.code {
                0x20 => acc = word(i.k),
                0x54 => acc &= i.k, // ALU AND K
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 => {
                    let hit = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += if hit { i.jt } else { i.jf } as usize;
                }
                0x06 => return i.k,
                other => panic!("unexpected BPF opcode {other:#x}"),
            }
        }
        panic!("no return")
    }

    const X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM_RET: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn the_filter_denies_exactly_what_it_says() {
        for mode in [SeccompMode::Base, SeccompMode::NoInet, SeccompMode::NoUdp] {
            let c = compiled(mode).unwrap();
            assert_eq!(c.programs.len(), 1);
            let p = &c.programs[0];
            let denied: Vec<u32> = DENIED.iter().map(|(_, n)| *n as u32).collect();
            for nr in 0..470u32 {
                let got = run(p, nr, X86_64, [0; 6]);
                let want = if denied.contains(&nr) {
                    EPERM_RET
                } else if nr == libc::SYS_clone3 as u32 {
                    libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
                } else if nr == libc::SYS_socket as u32 {
                    // family 0 (AF_UNSPEC) is not AF_UNIX/INET/INET6.
                    EPERM_RET
                } else {
                    ALLOW
                };
                assert_eq!(got, want, "{mode:?} syscall {nr}");
            }
            // x32 system calls and other architectures.
            assert_eq!(
                run(p, 0x4000_0000 + libc::SYS_read as u32, X86_64, [0; 6]),
                EPERM_RET
            );
            assert_eq!(
                run(p, 0, 3 | 0x4000_0000, [0; 6]),
                libc::SECCOMP_RET_KILL_PROCESS
            );
            // clone: a thread or fork is fine, a namespace is not.
            let clone = libc::SYS_clone as u32;
            assert_eq!(run(p, clone, X86_64, [0x3d0f00, 0, 0, 0, 0, 0]), ALLOW);
            assert_eq!(
                run(p, clone, X86_64, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
                ALLOW
            );
            for f in [libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWNS] {
                let flags = (f | libc::SIGCHLD) as u64;
                assert_eq!(run(p, clone, X86_64, [flags, 0, 0, 0, 0, 0]), EPERM_RET);
            }
            let ioctl = libc::SYS_ioctl as u32;
            assert_eq!(run(p, ioctl, X86_64, [0, TIOCSTI, 0, 0, 0, 0]), EPERM_RET);
            assert_eq!(run(p, ioctl, X86_64, [0, 0x5401, 0, 0, 0, 0]), ALLOW); // TCGETS
            let socket = |family: i32, ty: i32| {
                run(
                    p,
                    libc::SYS_socket as u32,
                    X86_64,
                    [family as u64, ty as u64, 0, 0, 0, 0],
                )
            };
            assert_eq!(socket(libc::AF_UNIX, libc::SOCK_STREAM), ALLOW);
            assert_eq!(socket(libc::AF_PACKET, libc::SOCK_RAW), EPERM_RET);
            assert_eq!(socket(libc::AF_NETLINK, libc::SOCK_DGRAM), EPERM_RET);
            assert_eq!(socket(libc::AF_VSOCK, libc::SOCK_STREAM), EPERM_RET);
            let tcp = socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC);
            let udp = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK);
            match mode {
                SeccompMode::Base => assert_eq!((tcp, udp), (ALLOW, ALLOW)),
                SeccompMode::NoInet => assert_eq!((tcp, udp), (EPERM_RET, EPERM_RET)),
                SeccompMode::NoUdp => assert_eq!((tcp, udp), (ALLOW, EPERM_RET)),
            }
        }
    }
}
