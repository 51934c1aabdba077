//! The seccomp deny-list installed last before exec, compiled once per mode by seccompiler
//! (Firecracker's pure-Rust BPF compiler) and identified in the report by a SHA-256 digest.
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
    /// The program(s) to install, in order (one: see [`insert_prelude`]).
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
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (_, nr) in DENIED {
        rules.insert(*nr, Vec::new());
    }
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
    insert_prelude(&mut deny);

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

/// After seccompiler's architecture check (3 instructions): deny every x32 system call
/// (`nr >= 0x40000000`) with EPERM, then answer the [`ENOSYS`] calls (seccompiler has one
/// match action per filter, and a second filter would cost a second JIT compilation).
fn insert_prelude(program: &mut BpfProgram) {
    // BPF_LD | BPF_W | BPF_ABS = 0x00 | 0x00 | 0x20.
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
    const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
    const BPF_RET_K: u16 = 0x06;
    let mut guard = vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0, // seccomp_data.nr
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32),
        },
    ];
    // The accumulator still holds the system call number.
    for (_, nr) in ENOSYS {
        guard.push(sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: *nr as u32,
        });
        guard.push(sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32),
        });
    }
    let at = 3.min(program.len());
    program.splice(at..at, guard);
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
    format!("sha256:{}", crate::router::hex(&h.finalize()))
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

    #[test]
    fn the_prelude_follows_the_arch_check() {
        let c = compiled(SeccompMode::Base).unwrap();
        assert_eq!(c.programs.len(), 1);
        let p = &c.programs[0];
        // arch load, arch jump, kill, then the x32 guard and clone3 → ENOSYS.
        assert_eq!(p[3].k, 0);
        assert_eq!(p[4].k, 0x4000_0000);
        assert_eq!(p[5].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(p[6].k, libc::SYS_clone3 as u32);
        assert_eq!(p[7].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }
}
