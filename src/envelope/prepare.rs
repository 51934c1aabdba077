//! Materialising a plan in the parent: the per-run directory, secrets, the Landlock ruleset
//! (paths opened *before* any uid change, by the Hall), the cgroup leaf, the stdin memfd, the
//! pipes and the raw [`ChildSpec`] the children read. Parent-side failures are attributed to
//! their own stage (`run_dir`, `secrets`, `landlock_ruleset`, `cgroup`) in the report.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};
use nix::libc;

use super::cgroup::{self, LeafLimits};
use super::child::{ChildSpec, RawRlimit, Stacks};
use super::error::EnvelopeError;
use super::plan::{FsAccess, LandlockPlan, Plan};
use super::report::{Effective, EnvelopeReport, StageReport};
use super::sys;
use super::types::{HostConfig, SecretValues};

/// The largest secret file accepted.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// What the worker's stdin is.
pub(crate) enum StdinSource<'a> {
    /// A sealed memfd holding these bytes (a cold run: the request, or its protocol 2 frame).
    Sealed(&'a [u8]),
    /// A pipe whose write end the Hall keeps ([`Prepared::stdin_w`]): a warm instance, whose
    /// frame is written when its request arrives.
    Pipe,
}

/// A prepared run: the spec for the children plus the Hall's ends of everything.
pub(crate) struct Prepared {
    pub spec: Box<ChildSpec>,
    pub stacks: Stacks,
    pub clone_flags: u64,
    pub leaf: Option<cgroup::Leaf>,
    pub stdout_r: OwnedFd,
    pub stderr_r: OwnedFd,
    pub status_r: OwnedFd,
    pub result_r: OwnedFd,
    /// The write end of stdin for [`StdinSource::Pipe`].
    pub stdin_w: Option<OwnedFd>,
    /// The children's ends; dropped (closed in the Hall) right after the clone.
    pub child_fds: Vec<OwnedFd>,
}

pub(crate) fn hall_stage(
    report: &mut EnvelopeReport,
    stage: &str,
    outcome: &str,
    detail: Option<String>,
) {
    report.stages.push(StageReport {
        stage: stage.into(),
        process: "hall".into(),
        outcome: outcome.into(),
        errno: None,
        detail,
    });
}

fn stage_failed(
    report: &EnvelopeReport,
    stage: &str,
    message: String,
    errno: i32,
) -> EnvelopeError {
    let mut report = report.clone();
    hall_stage(&mut report, stage, "failed", Some(message.clone()));
    EnvelopeError::StageFailed {
        stage: stage.into(),
        errno,
        message,
        report: Box::new(report),
    }
}

fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)?;
    // The umask may have narrowed the mode.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

/// Creates the run directory tree: `<run>/work` (the worker's cwd, not writable itself),
/// `<run>/tmp` and the declared write directories, the last two owned by the worker uid with
/// mode 0700. Everything else is owned by the Hall.
fn make_run_dir(
    plan: &Plan,
    host: &HostConfig,
    report: &mut EnvelopeReport,
) -> Result<(), EnvelopeError> {
    let ctx = |what: &str, p: &Path| format!("creating {what} {}", p.display());
    if !host.runs_dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&host.runs_dir)
            .map_err(|e| EnvelopeError::io(ctx("the runs directory", &host.runs_dir), e))?;
    }
    // The runs directory must be the Hall's own: a directory someone else owns or can write
    // to (e.g. pre-created in /tmp by another user) could redirect every run's files.
    let meta = fs::symlink_metadata(&host.runs_dir)
        .map_err(|e| EnvelopeError::io(ctx("the runs directory", &host.runs_dir), e))?;
    let euid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(EnvelopeError::io(
            format!(
                "the runs directory {} must be a directory owned by uid {euid} and writable by \
                 no one else (found uid {}, mode {:o}{})",
                host.runs_dir.display(),
                meta.uid(),
                meta.mode() & 0o7777,
                if meta.file_type().is_symlink() {
                    ", a symlink"
                } else {
                    ""
                }
            ),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ));
    }
    mkdir(&plan.run_dir, 0o711)
        .map_err(|e| EnvelopeError::io(ctx("the run directory", &plan.run_dir), e))?;
    if let Some(bytes) = plan.scratch_bytes {
        // Threat model: a worker filling the disk the receipt log lives on stops the Hall. Its
        // scratch (tmp, mapped writes) lives on a tmpfs of a fixed size instead, removed with
        // the run (and by sweep_stale after a crash).
        if let Err(e) = mount_scratch(&plan.run_dir, bytes) {
            let why = format!(
                "mounting a {bytes}-byte tmpfs on the run directory failed ({e}): scratch is \
                 bounded per file only (RLIMIT_FSIZE)"
            );
            report.filesystem.scratch.effective = super::report::Effective::NotEnforced;
            report.filesystem.scratch.bytes = None;
            report.filesystem.scratch.how = why.clone();
            report.degrade(format!("scratch: {why}"));
        }
    }
    mkdir(&plan.work_dir, 0o711)
        .map_err(|e| EnvelopeError::io(ctx("the work directory", &plan.work_dir), e))?;
    // The pycache prefix is deliberately never created: Python finds no pyc there, compiles
    // the attested source, and (with -B, and no write grant on the run directory) never
    // writes one, so neither a planted `__pycache__` nor a planted prefix can be used.
    mkdir(&plan.tmp_dir, 0o700)
        .map_err(|e| EnvelopeError::io(ctx("the private tmp", &plan.tmp_dir), e))?;
    if !plan.hidden.is_empty() {
        // What the worker finds at a hidden path: an empty file nobody may read.
        let cover = hidden_cover(plan);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&cover)
            .map_err(|e| EnvelopeError::io(ctx("the cover for hidden paths", &cover), e))?;
    }
    let owner = plan.identity.map(|i| (i.uid, i.gid));
    if let Some((u, g)) = owner {
        chown(&plan.tmp_dir, u, g)
            .map_err(|e| EnvelopeError::io(ctx("(chown) the private tmp", &plan.tmp_dir), e))?;
    }
    for w in &plan.writes {
        if w.under_run_dir {
            if let Some(parent) = w.path.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o711)
                    .create(parent)
                    .map_err(|e| EnvelopeError::io(ctx("a write directory", parent), e))?;
            }
            mkdir(&w.path, 0o700)
                .map_err(|e| EnvelopeError::io(ctx("a write directory", &w.path), e))?;
            if let Some((u, g)) = owner {
                chown(&w.path, u, g)
                    .map_err(|e| EnvelopeError::io(ctx("(chown) a write directory", &w.path), e))?;
            }
        } else if w.opened.is_none() && !w.path.is_dir() {
            return Err(EnvelopeError::invalid(
                "privilege_envelope.filesystem_writes",
                format!(
                    "{:?} is granted in place but {} is not an existing directory",
                    w.declared,
                    w.path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Mounts a tmpfs of `bytes` on `dir` (mode 0711, owned by the Hall; no devices, no setuid,
/// no exec).
fn mount_scratch(dir: &Path, bytes: u64) -> nix::Result<()> {
    use nix::mount::{MsFlags, mount};
    let opts = format!(
        "size={bytes},mode=0711,uid={},gid={}",
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
}

/// Removes a run directory: its scratch tmpfs first (if any), then what is left.
pub(crate) fn remove_run_dir(dir: &Path) -> std::io::Result<()> {
    // EINVAL: not a mount point (no scratch tmpfs); anything else is worth knowing, but the
    // directory is removed either way.
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    fs::remove_dir_all(dir)
}

/// `<run>/hidden`: bound over every hidden path in the worker's mount namespace.
fn hidden_cover(plan: &Plan) -> std::path::PathBuf {
    plan.run_dir.join("hidden")
}

/// Reads `<secrets_dir>/<name>`: a regular file (not a symlink) owned by the Hall's uid, not
/// readable by group or others, at most 64 KiB of UTF-8 without NUL; one trailing newline is
/// dropped.
pub fn read_secret(dir: &Path, name: &str) -> Result<zeroize::Zeroizing<String>, EnvelopeError> {
    let err = |problem: String| EnvelopeError::Secret {
        name: name.to_owned(),
        problem,
    };
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| err(format!("cannot stat {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(err(format!("{} is not a regular file", path.display())));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(err(format!(
            "{} is owned by uid {}, not by the Hall (uid {euid})",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(err(format!(
            "{} has mode {:o}; group and others must have no access (chmod 600)",
            path.display(),
            meta.mode() & 0o777
        )));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(err(format!(
            "{} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        )));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    if bytes.contains(&0) {
        return Err(err("contains a NUL byte".into()));
    }
    let mut text = zeroize::Zeroizing::new(
        String::from_utf8(std::mem::take(&mut *bytes)).map_err(|_| err("is not UTF-8".into()))?,
    );
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

fn abi_of(v: u32) -> ABI {
    match v {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

fn rights(access: FsAccess, abi: ABI) -> BitFlags<AccessFs> {
    match access {
        FsAccess::Read => AccessFs::ReadFile | AccessFs::ReadDir,
        FsAccess::ReadExecute => AccessFs::ReadFile | AccessFs::ReadDir | AccessFs::Execute,
        FsAccess::ReadWrite => AccessFs::from_all(abi),
        FsAccess::DeviceReadWrite => AccessFs::ReadFile | AccessFs::WriteFile,
        FsAccess::DeviceRead => AccessFs::ReadFile.into(),
    }
}

/// File-only rights (a rule on a non-directory may not carry directory rights).
fn file_rights(abi: ABI) -> BitFlags<AccessFs> {
    AccessFs::from_file(abi)
}

enum RulesetError {
    Missing(String),
    Other(String),
}

/// Builds the ruleset in the Hall (paths are opened here, as the Hall, so mode-0700 parents and
/// the later uid change cannot make a rule silently disappear) and returns its descriptor.
///
/// A rule with `opened` is added from that descriptor (opened and checked by
/// [`super::grant::open_persistent`]), never by resolving its path again.
fn build_ruleset(
    ll: &LandlockPlan,
    opened: &[std::sync::Arc<super::grant::OpenedWrite>],
) -> Result<Option<OwnedFd>, RulesetError> {
    let abi = abi_of(ll.abi);
    let other = |e: landlock::RulesetError| RulesetError::Other(e.to_string());
    let handled = AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled)
        .map_err(other)?;
    if ll.tcp.is_some() {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(other)?;
    }
    if ll.scopes {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(other)?;
    }
    let mut created = ruleset.create().map_err(other)?;
    for rule in &ll.fs_rules {
        if let Some(i) = rule.opened {
            let dir = &opened
                .get(i)
                .ok_or_else(|| RulesetError::Other(format!("no opened directory {i}")))?
                .dir;
            let access = rights(rule.access, abi) & handled;
            created = created
                .add_rule(PathBeneath::new(dir.as_fd(), access))
                .map_err(other)?;
            continue;
        }
        let meta = fs::metadata(&rule.path)
            .map_err(|e| RulesetError::Missing(format!("{}: {e}", rule.path.display())))?;
        let fd = PathFd::new(&rule.path)
            .map_err(|e| RulesetError::Missing(format!("{}: {e}", rule.path.display())))?;
        let mut access = rights(rule.access, abi) & handled;
        if !meta.is_dir() {
            access &= file_rights(abi);
        }
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(other)?;
    }
    if let Some(ports) = &ll.tcp {
        for port in ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(other)?;
        }
    }
    Ok(created.into())
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, EnvelopeError> {
    CString::new(s).map_err(|_| EnvelopeError::invalid(what, "contains a NUL byte"))
}

/// Prepares everything for the clone. On error nothing is left running; the caller removes
/// the run directory.
pub(crate) fn prepare(
    plan: &Plan,
    report: &mut EnvelopeReport,
    host: &HostConfig,
    stdin_source: StdinSource<'_>,
    opened: &[std::sync::Arc<super::grant::OpenedWrite>],
    hall_uid: u32,
    hall_gid: u32,
) -> Result<Prepared, EnvelopeError> {
    // ---- inputs that must exist -----------------------------------------------------------
    if !plan.package_dir.is_dir() {
        return Err(EnvelopeError::invalid(
            "package_dir",
            format!("{} is not a directory", plan.package_dir.display()),
        ));
    }
    if !plan.program.is_file() {
        return Err(EnvelopeError::invalid(
            "bootstrap",
            format!("{} does not exist or is not a file", plan.program.display()),
        ));
    }
    if plan.argv.len() > 1 && plan.argv.iter().any(|a| a.ends_with("code/bootstrap.py")) {
        let script = plan.package_dir.join("code").join("bootstrap.py");
        if !script.is_file() {
            return Err(EnvelopeError::invalid(
                "package_dir",
                format!(
                    "the package has no code/bootstrap.py ({})",
                    script.display()
                ),
            ));
        }
    }
    for t in &plan.tools {
        if !t.is_file() {
            return Err(EnvelopeError::invalid(
                "privilege_envelope.tools",
                format!("{} does not exist", t.display()),
            ));
        }
    }

    // ---- run directory ----------------------------------------------------------------------
    make_run_dir(plan, host, report)?;
    hall_stage(report, "run_dir", "ok", None);

    // ---- secrets -----------------------------------------------------------------------------
    let mut secrets = SecretValues::new();
    if !plan.secrets.is_empty() {
        let dir = host
            .secrets_dir
            .as_ref()
            .ok_or_else(|| EnvelopeError::Secret {
                name: plan.secrets[0].name.clone(),
                problem: "no secrets directory is configured".into(),
            })?;
        for s in &plan.secrets {
            secrets.insert(s.env_key.clone(), read_secret(dir, &s.name)?);
        }
        hall_stage(
            report,
            "secrets",
            "ok",
            Some(format!("{} read", secrets.len())),
        );
    }

    // ---- Landlock ruleset ------------------------------------------------------------------------
    let mut landlock_fd = None;
    let mut landlock_required = false;
    if let Some(ll) = &plan.landlock {
        landlock_required = ll.required;
        match build_ruleset(ll, opened) {
            Ok(Some(fd)) => {
                landlock_fd = Some(fd);
                hall_stage(report, "landlock_ruleset", "ok", None);
            }
            Ok(None) | Err(RulesetError::Other(_)) if !ll.required => {
                let why = "the Landlock ruleset could not be created".to_owned();
                report.landlock.effective = Effective::NotEnforced;
                report.landlock.ruleset = "not_enforced".into();
                report.landlock.reason = Some(why.clone());
                report.degrade(format!("landlock: {why}"));
                hall_stage(report, "landlock_ruleset", "degraded", Some(why));
            }
            Ok(None) => {
                return Err(stage_failed(
                    report,
                    "landlock_ruleset",
                    "the kernel returned no Landlock ruleset".into(),
                    0,
                ));
            }
            Err(RulesetError::Missing(what)) => {
                return Err(EnvelopeError::invalid(
                    "runtime",
                    format!("a path the envelope grants does not exist: {what}"),
                ));
            }
            Err(RulesetError::Other(e)) => {
                return Err(stage_failed(report, "landlock_ruleset", e, 0));
            }
        }
    }

    // ---- cgroup leaf ---------------------------------------------------------------------------------
    let mut leaf = None;
    if let Some(cg) = &plan.cgroup {
        match cgroup::Leaf::create(&cg.parent, &cg.leaf_name, cg.memory_max, cg.pids_max) {
            Ok((l, limits)) => {
                let planned = (report.cgroup.memory_max, report.cgroup.pids_max);
                apply_leaf_limits(report, &limits);
                let lost: Vec<String> = [
                    (
                        planned.0.is_some() && limits.memory_max.is_none(),
                        &limits.memory_reason,
                    ),
                    (
                        planned.1.is_some() && limits.pids_max.is_none(),
                        &limits.pids_reason,
                    ),
                ]
                .into_iter()
                .filter(|(lost, _)| *lost)
                .map(|(_, why)| why.clone().unwrap_or_default())
                .collect();
                if !lost.is_empty() {
                    let why = lost.join("; ");
                    if cg.required {
                        let _ = l.remove();
                        return Err(stage_failed(report, "cgroup", why, 0));
                    }
                    report.cgroup.effective = Effective::Partial;
                    report.cgroup.reason = Some(why.clone());
                    report.degrade(format!("cgroup: {why}"));
                }
                hall_stage(report, "cgroup", "ok", Some(l.path.display().to_string()));
                leaf = Some(l);
            }
            Err(e) if !cg.required => {
                let why = format!("creating the cgroup leaf failed: {e}");
                report.cgroup.effective = Effective::NotEnforced;
                report.cgroup.reason = Some(why.clone());
                report.cgroup.born_in_leaf = false;
                report.cgroup.kill = false;
                report.cgroup.memory_max = None;
                report.cgroup.pids_max = None;
                report.degrade(format!("cgroup: {why}"));
                hall_stage(report, "cgroup", "degraded", Some(why));
            }
            Err(e) => {
                return Err(stage_failed(
                    report,
                    "cgroup",
                    format!("creating the cgroup leaf failed: {e}"),
                    e.raw_os_error().unwrap_or(0),
                ));
            }
        }
        // What the leaf really got decides the memory bound the report states.
        report.refresh_memory();
    }

    // ---- pipes and stdin ---------------------------------------------------------------------------------
    let io = |what: &str, e| EnvelopeError::io(what.to_owned(), e);
    let (stdin, stdin_w) = match stdin_source {
        StdinSource::Sealed(bytes) => (
            sys::sealed_memfd(c"wcp-request", bytes)
                .map_err(|e| io("creating the stdin memfd", e))?,
            None,
        ),
        StdinSource::Pipe => {
            let (r, w) = sys::pipe_cloexec().map_err(|e| io("creating the stdin pipe", e))?;
            (r, Some(w))
        }
    };
    let (stdout_r, stdout_w) =
        sys::pipe_cloexec().map_err(|e| io("creating the stdout pipe", e))?;
    let (stderr_r, stderr_w) =
        sys::pipe_cloexec().map_err(|e| io("creating the stderr pipe", e))?;
    let (status_r, status_w) =
        sys::pipe_cloexec().map_err(|e| io("creating the status pipe", e))?;
    let (result_r, result_w) =
        sys::pipe_cloexec().map_err(|e| io("creating the result pipe", e))?;

    // ---- argv, env --------------------------------------------------------------------------------------
    let mut strings = Vec::new();
    let mut argv_idx = Vec::new();
    for a in &plan.argv {
        argv_idx.push(strings.len());
        strings.push(cstring("argv", a.as_bytes())?);
    }
    let mut envp_idx = Vec::new();
    for (k, v) in &plan.env {
        envp_idx.push(strings.len());
        strings.push(cstring("environment", format!("{k}={v}"))?);
    }
    for (k, v) in &secrets {
        envp_idx.push(strings.len());
        strings.push(cstring("secret", format!("{k}={}", v.as_str()))?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> =
        argv_idx.iter().map(|i| strings[*i].as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> =
        envp_idx.iter().map(|i| strings[*i].as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    drop(secrets);

    // ---- seccomp programs ------------------------------------------------------------------------------
    let mut bpf: Vec<Vec<libc::sock_filter>> = Vec::new();
    let mut seccomp_required = false;
    if let Some((mode, required)) = plan.seccomp {
        seccomp_required = required;
        let compiled = super::seccomp::compiled(mode).map_err(|e| {
            EnvelopeError::io("compiling the seccomp filter", std::io::Error::other(e))
        })?;
        for p in &compiled.programs {
            bpf.push(
                p.iter()
                    .map(|i| libc::sock_filter {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect(),
            );
        }
    }
    let seccomp: Vec<libc::sock_fprog> = bpf
        .iter_mut()
        .map(|p| libc::sock_fprog {
            len: p.len() as u16,
            filter: p.as_mut_ptr(),
        })
        .collect();

    // ---- namespaces -------------------------------------------------------------------------------------
    let ns = plan.namespaces;
    let mut clone_flags = 0u64;
    if ns.user {
        clone_flags |= libc::CLONE_NEWUSER as u64;
    }
    if ns.pid {
        clone_flags |= libc::CLONE_NEWPID as u64;
    }
    // A fresh namespace from the pool when one is ready (root Hall), else created by clone3.
    let pooled_netns = if ns.net && !ns.user {
        super::netns::take()
    } else {
        None
    };
    if ns.net && pooled_netns.is_none() {
        clone_flags |= libc::CLONE_NEWNET as u64;
    }
    if ns.net {
        report.namespaces.net_source = Some(if pooled_netns.is_some() {
            "pooled".into()
        } else {
            "created".into()
        });
    }
    if ns.ipc {
        clone_flags |= libc::CLONE_NEWIPC as u64;
    }
    if ns.uts {
        clone_flags |= libc::CLONE_NEWUTS as u64;
    }
    if ns.mnt {
        clone_flags |= libc::CLONE_NEWNS as u64;
    }
    let hide = if ns.mnt {
        let mut v = Vec::with_capacity(plan.hidden.len());
        for p in &plan.hidden {
            v.push(cstring("hidden path", p.as_os_str().as_encoded_bytes())?);
        }
        Some((
            cstring(
                "hidden cover",
                hidden_cover(plan).as_os_str().as_encoded_bytes(),
            )?,
            v,
        ))
    } else {
        None
    };
    let user_maps = if ns.user {
        Some((
            cstring("uid_map", format!("{hall_uid} {hall_uid} 1\n"))?,
            cstring("gid_map", format!("{hall_gid} {hall_gid} 1\n"))?,
        ))
    } else {
        None
    };

    let stacks = Stacks::new().map_err(|e| io("mapping the pre-exec stacks", e))?;
    let spec = Box::new(ChildSpec {
        src_stdin: stdin.as_raw_fd(),
        src_stdout: stdout_w.as_raw_fd(),
        src_stderr: stderr_w.as_raw_fd(),
        src_status: status_w.as_raw_fd(),
        src_result: result_w.as_raw_fd(),
        src_landlock: landlock_fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        src_netns: pooled_netns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1),
        netns_required: report.network.requested == super::types::Minimum::Required,
        pid_ns: ns.pid,
        loopback: ns.net && pooled_netns.is_none(),
        hostname: if ns.uts {
            Some(cstring("hostname", "wcp-worker")?)
        } else {
            None
        },
        user_maps,
        hide,
        rlimits: plan
            .rlimits
            .iter()
            .map(|r| RawRlimit {
                resource: r.resource,
                soft: r.soft,
                hard: r.hard,
            })
            .collect(),
        cwd: cstring("cwd", plan.work_dir.as_os_str().as_encoded_bytes())?,
        identity: plan.identity.map(|i| (i.uid, i.gid)),
        landlock_required,
        seccomp,
        seccomp_required,
        program: cstring("program", plan.program.as_os_str().as_encoded_bytes())?,
        argv_ptrs,
        envp_ptrs,
        _strings: strings,
        _bpf: bpf,
        worker_stack_top: stacks.worker_top(),
    });
    let mut child_fds = vec![stdin, stdout_w, stderr_w, status_w, result_w];
    if let Some(fd) = landlock_fd {
        child_fds.push(fd);
    }
    if let Some(fd) = pooled_netns {
        child_fds.push(fd);
    }
    Ok(Prepared {
        spec,
        stacks,
        clone_flags,
        leaf,
        stdout_r,
        stderr_r,
        status_r,
        result_r,
        stdin_w,
        child_fds,
    })
}

fn apply_leaf_limits(report: &mut EnvelopeReport, limits: &LeafLimits) {
    let cg = &mut report.cgroup;
    cg.memory_max = limits.memory_max;
    cg.pids_max = limits.pids_max;
    cg.memory_reason = limits.memory_reason.clone();
    cg.pids_reason = limits.pids_reason.clone();
}
