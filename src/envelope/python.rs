//! The Python runtime Python workers run with: which interpreter, and what the envelope must let
//! it read and execute.
//!
//! The interpreter is `[envelope] python` (an absolute path; default: the first of
//! [`DEFAULT_CANDIDATES`] that exists), resolved through symlinks to the real binary, because
//! Landlock rules apply to the file the path resolves to. What it needs is not guessed from a
//! distribution's layout: the interpreter is run once ([`PythonRuntime::probe`], at Hall start
//! and at every reload) with `-E -s -B -c <`[`PROBE_SCRIPT`]`>` and tells its version, its
//! standard library directories, `lib-dynload`, the module files it loaded and the files it has
//! mapped (`/proc/self/maps`: the shared libraries, after importing the extension modules
//! workers commonly use). [`derive`] turns that answer into [`RuntimePaths`]; it is pure and
//! takes the answer as bytes, so hostile, oversized or malformed answers are unit-tested.
//!
//! # Threat model
//! The interpreter is chosen by the operator (`hall.toml` is the Hall's configuration, as
//! trusted as the Hall's binary), but what it answers is treated as data: the answer is capped
//! at [`MAX_ANSWER_BYTES`], parsed strictly (unknown fields, non-absolute or over-long paths,
//! control characters, `..` components are refused, never unwrapped) and a directory is only
//! granted whole when it is specific enough ([`dir_grant_allowed`]): an answer claiming the
//! standard library is `/` or `/etc` is refused, a library mapped straight from a broad
//! directory is granted as the single file. The probe runs with an empty environment, `/` as its
//! working directory, the empty entry stripped from `sys.path` (nothing next to the Hall's
//! working directory is imported), stdin closed, in its own process group (killed whole after
//! [`PROBE_TIMEOUT`]), and, when the Hall is root, as the worker uid: that is the uid that must
//! be able to execute the interpreter and read those paths, and it keeps the operator's
//! interpreter (and a `sitecustomize` it imports) from running with the Hall's privileges. A
//! non-root Hall runs its workers under its own uid (in a user namespace), so the probe runs as
//! the Hall there. The interpreter file must not be writable by group or others, nor owned by
//! the worker uid (whoever could write it would choose the code every worker starts with), and
//! it must be an ELF executable:
//! a wrapper script (a pyenv shim) would start another interpreter the envelope never granted.
//!
//! Not enforced here: a host `site-packages` inside a granted directory (most non-Debian
//! layouts keep it inside the standard library directory) stays readable and importable by
//! workers; [`PythonRuntime::notes`] says so and the Hall logs it. Workers bring their
//! dependencies in their package.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::elf::{ELF_HEAD_BYTES, elf_interpreter};
use super::types::{Bootstrap, Identity, RuntimePaths};

/// The interpreters tried, in order, when `[envelope] python` is not set.
pub const DEFAULT_CANDIDATES: [&str; 2] = ["/usr/bin/python3.11", "/usr/bin/python3"];

/// The oldest Python accepted: the worker command line uses `-X pycache_prefix=` (3.8).
pub const MIN_VERSION: (u32, u32) = (3, 8);

/// How long the probe may take (a cold start from a slow disk included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest probe answer read; a longer one is refused.
pub const MAX_ANSWER_BYTES: usize = 256 << 10;

/// The most stderr kept from a failing probe (for the error message).
const MAX_STDERR_BYTES: usize = 4 << 10;

/// Caps on the answer's lists and paths.
const MAX_LIST: usize = 4096;
const MAX_PATH_BYTES: usize = 4096;

/// Read-only host paths granted when present, which the probe cannot discover by itself:
/// the loader cache, locales, time zones and CA certificates (Debian's and Fedora's places).
pub const HOST_EXTRAS: [&str; 8] = [
    "/etc/ld.so.cache",
    "/usr/lib/locale",
    "/usr/share/zoneinfo",
    "/etc/localtime",
    "/etc/ssl",
    "/usr/share/ca-certificates",
    "/etc/pki/tls",
    "/etc/pki/ca-trust",
];

/// Directories never granted whole, whatever an answer says (a file in them is granted alone).
const NEVER_WHOLE: [&str; 7] = ["/etc", "/tmp", "/var/tmp", "/run", "/dev", "/proc", "/sys"];

/// Extension modules imported before the mapped files are listed, so that the libraries they
/// link (OpenSSL, SQLite, libffi, zlib, expat, …) show up. Missing ones are skipped.
const PROBE_IMPORTS: &str = "_ssl _hashlib _socket _json _sqlite3 _decimal _ctypes zlib _bz2 \
                             _lzma pyexpat _uuid _datetime unicodedata select _posixsubprocess";

/// The probe, valid Python 3.8 and later. It prints one JSON object.
pub const PROBE_SCRIPT: &str = r#"import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import json, os, sysconfig
for name in "@IMPORTS@".split():
    try:
        __import__(name)
    except Exception:
        pass
def utf8(p):
    try:
        p.encode("utf-8")
        return True
    except UnicodeError:
        return False
def real(p):
    return os.path.realpath(p) if p else p
modules = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if isinstance(f, str) and os.path.isabs(f):
        where = os.path.join(real(os.path.dirname(f)), os.path.basename(f))
        modules.add((where, real(f)))
maps = set()
with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as fh:
    for line in fh:
        parts = line.rstrip("\n").split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            maps.add(parts[5])
path = [real(p) for p in sys.path if p]
json.dump({
    "implementation": sys.implementation.name,
    "version": list(sys.version_info[:3]),
    "release_level": sys.version_info.releaselevel,
    "prefix": sys.prefix,
    "base_prefix": sys.base_prefix,
    "stdlib": real(sysconfig.get_path("stdlib")),
    "platstdlib": real(sysconfig.get_path("platstdlib")),
    "dynload": sorted(p for p in path if os.path.basename(p) == "lib-dynload" and os.path.isdir(p) and utf8(p)),
    "path": [p for p in path if utf8(p)],
    "modules": sorted([w, r] for w, r in modules if utf8(w) and utf8(r)),
    "maps": sorted(p for p in maps if utf8(p)),
}, sys.stdout)
"#;

/// The probe script with its import list filled in.
pub fn probe_script() -> String {
    PROBE_SCRIPT.replace("@IMPORTS@", PROBE_IMPORTS)
}

/// Why a Python runtime cannot be used. Messages name the interpreter; callers say where it was
/// configured (`[envelope] python`, `--interpreter`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PythonError {
    #[error("no Python interpreter found at {}; install one or name it explicitly", .tried.join(" or "))]
    NoDefault { tried: Vec<String> },
    #[error("{path}: must be an absolute path")]
    NotAbsolute { path: String },
    #[error("{path}: {problem}")]
    Unusable { path: String, problem: String },
    #[error("{path}: Python {version} is too old; the envelope needs {}.{} or later", MIN_VERSION.0, MIN_VERSION.1)]
    TooOld { path: String, version: String },
    #[error("{path}: the runtime probe failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    ProbeFailed {
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{path}: the runtime probe did not finish within {} s and was killed", PROBE_TIMEOUT.as_secs())]
    TimedOut { path: String },
    #[error("{path}: unusable runtime probe answer: {problem}")]
    Answer { path: String, problem: String },
}

/// What the probe prints (see [`PROBE_SCRIPT`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeAnswer {
    pub implementation: String,
    pub version: (u32, u32, u32),
    pub release_level: String,
    pub prefix: String,
    pub base_prefix: String,
    pub stdlib: String,
    pub platstdlib: String,
    pub dynload: Vec<String>,
    pub path: Vec<String>,
    /// Each loaded module file: where it was found (its directory resolved) and the file it
    /// resolves to (they differ for a symlink such as Debian's `sitecustomize.py`).
    pub modules: Vec<(String, String)>,
    pub maps: Vec<String>,
}

/// Facts about the interpreter the Hall learned itself (outside the probe's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpreterFacts {
    /// What was asked for (`[envelope] python`, a default, `--interpreter`).
    pub requested: PathBuf,
    /// `requested` with every symlink resolved: what runs, and what Landlock's rule names.
    pub interpreter: PathBuf,
    /// The ELF program interpreter (dynamic loader), resolved; `None` for a static binary.
    pub loader: Option<PathBuf>,
    /// The [`HOST_EXTRAS`] that exist here.
    pub extras: Vec<PathBuf>,
}

/// A probed Python runtime: how to start it and what it may touch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PythonRuntime {
    pub requested: PathBuf,
    pub interpreter: PathBuf,
    /// `sys.implementation.name` (`cpython`, `pypy`).
    pub implementation: String,
    /// `3.11.2`, or `3.13.0-candidate` before a final release.
    pub version: String,
    pub loader: Option<PathBuf>,
    pub paths: RuntimePaths,
    /// What the grant lets through that an operator should know about.
    pub notes: Vec<String>,
}

impl PythonRuntime {
    /// How a Python package starts under this runtime.
    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap::Python {
            interpreter: self.interpreter.clone(),
            runtime: self.describe(),
        }
    }

    /// `cpython 3.11.2`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.implementation, self.version)
    }

    /// Runs the probe (see the module documentation) and derives the runtime.
    ///
    /// `requested` is the configured interpreter (`None`: the first of [`DEFAULT_CANDIDATES`]
    /// that exists). `run_as` is the uid/gid the probe runs as; it is used only when the Hall is
    /// root (a non-root Hall runs its workers, and so the probe, under its own uid).
    pub fn probe(requested: Option<&Path>, run_as: Option<Identity>) -> Result<Self, PythonError> {
        let requested = choose(requested, |p| std::fs::metadata(p).is_ok())?;
        // A non-root Hall cannot change uid: its workers run as itself (in a user namespace).
        let run_as = run_as.filter(|_| nix::unistd::geteuid().is_root());
        let facts = interpreter_facts(&requested, run_as)?;
        let answer = run_probe(&facts.interpreter, run_as)?;
        let runtime = derive(&facts, &answer)?;
        // Every grant must exist: Landlock rules are opened per run, and a missing one refuses
        // every run; better to say so now.
        let all = runtime.paths.execute.iter().chain(&runtime.paths.read);
        if let Some(missing) = all.into_iter().find(|p| std::fs::metadata(p).is_err()) {
            return Err(answer_err(
                &facts.interpreter,
                format!("{} does not exist", missing.display()),
            ));
        }
        Ok(runtime)
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

fn unusable(p: &Path, problem: impl Into<String>) -> PythonError {
    PythonError::Unusable {
        path: show(p),
        problem: problem.into(),
    }
}

fn answer_err(p: &Path, problem: impl Into<String>) -> PythonError {
    PythonError::Answer {
        path: show(p),
        problem: problem.into(),
    }
}

/// The interpreter to use: the configured one, else the first default that `exists`.
pub fn choose(
    requested: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, PythonError> {
    match requested {
        Some(p) if !p.is_absolute() => Err(PythonError::NotAbsolute { path: show(p) }),
        Some(p) => Ok(p.to_path_buf()),
        None => DEFAULT_CANDIDATES
            .iter()
            .map(PathBuf::from)
            .find(|p| exists(p))
            .ok_or_else(|| PythonError::NoDefault {
                tried: DEFAULT_CANDIDATES.iter().map(|s| s.to_string()).collect(),
            }),
    }
}

/// Resolves the interpreter, checks the file and finds its loader and the host extras.
fn interpreter_facts(
    requested: &Path,
    run_as: Option<Identity>,
) -> Result<InterpreterFacts, PythonError> {
    let interpreter = std::fs::canonicalize(requested).map_err(|e| {
        unusable(
            requested,
            match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                _ => format!("cannot be resolved: {e}"),
            },
        )
    })?;
    let meta = std::fs::metadata(&interpreter)
        .map_err(|e| unusable(&interpreter, format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(unusable(&interpreter, "is not a regular file"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(unusable(
            &interpreter,
            format!(
                "is writable by group or others (mode {:04o}): whoever can write it chooses the \
                 code every worker starts with",
                mode & 0o7777
            ),
        ));
    }
    if let Some(id) = run_as
        && std::os::unix::fs::MetadataExt::uid(&meta) == id.uid
    {
        return Err(unusable(
            &interpreter,
            format!(
                "is owned by the worker uid {}: any process of that uid could replace the code \
                 every worker starts with",
                id.uid
            ),
        ));
    }
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(&interpreter)
        .and_then(|f| f.take(ELF_HEAD_BYTES as u64).read_to_end(&mut head))
        .map_err(|e| unusable(&interpreter, format!("cannot be read: {e}")))?;
    let loader = match elf_interpreter(&head).map_err(|p| unusable(&interpreter, p))? {
        None => None,
        Some(l) => Some(std::fs::canonicalize(&l).map_err(|e| {
            unusable(
                &interpreter,
                format!("its dynamic loader {l} cannot be resolved: {e}"),
            )
        })?),
    };
    let extras = HOST_EXTRAS
        .iter()
        .map(PathBuf::from)
        .filter(|p| std::fs::metadata(p).is_ok())
        .collect();
    Ok(InterpreterFacts {
        requested: requested.to_path_buf(),
        interpreter,
        loader,
        extras,
    })
}

/// Runs the probe script under `interpreter` (as `run_as`, already `None` unless the Hall is
/// root); returns its stdout (at most [`MAX_ANSWER_BYTES`] + 1 bytes, so [`derive`] can tell an
/// oversized answer).
fn run_probe(interpreter: &Path, run_as: Option<Identity>) -> Result<Vec<u8>, PythonError> {
    let mut cmd = Command::new(interpreter);
    cmd.args(["-E", "-s", "-B", "-c"])
        .arg(probe_script())
        .env_clear()
        .current_dir("/");
    if let Some(id) = run_as {
        // std clears the supplementary groups when root changes uid.
        cmd.uid(id.uid).gid(id.gid);
    }
    let who = match run_as {
        Some(id) => format!("the worker uid {}", id.uid),
        None => format!("uid {}", nix::unistd::geteuid()),
    };
    let out = run_bounded(cmd, PROBE_TIMEOUT).map_err(|e| match e {
        Bounded::Spawn(e) => unusable(
            interpreter,
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => format!("is not executable by {who}"),
                std::io::ErrorKind::NotFound => {
                    format!("cannot be started by {who} (it or its loader is missing)")
                }
                _ => format!("cannot be started by {who}: {e}"),
            },
        ),
        Bounded::TimedOut => PythonError::TimedOut {
            path: show(interpreter),
        },
        Bounded::Io(e) => answer_err(interpreter, format!("cannot read it: {e}")),
    })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        // The last lines say what went wrong (a traceback ends with the exception).
        let tail: Vec<&str> = text.trim().lines().rev().take(3).collect();
        return Err(PythonError::ProbeFailed {
            path: show(interpreter),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(out.stdout)
}

/// Why [`run_bounded`] has no output to give.
#[derive(Debug)]
enum Bounded {
    Spawn(std::io::Error),
    TimedOut,
    Io(std::io::Error),
}

/// Output of [`run_bounded`]: stdout capped at [`MAX_ANSWER_BYTES`] + 1, stderr at
/// [`MAX_STDERR_BYTES`] + 1 (the rest is read and dropped, so the child never blocks on a pipe).
#[derive(Debug)]
struct BoundedOutput {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Runs `cmd` with stdin closed, in its own process group, for at most `timeout`: then the
/// whole group is killed. The group is killed after a normal exit too, so nothing it left
/// behind can hold the pipes open; reading the pipes is bounded by the same deadline.
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<BoundedOutput, Bounded> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let deadline = Instant::now() + timeout;
    let mut child = cmd.spawn().map_err(Bounded::Spawn)?;
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = || {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    };
    let (tx, rx) = mpsc::channel();
    type Pipe = Option<Box<dyn Read + Send>>;
    let pipes: [(bool, Pipe, usize); 2] = [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            MAX_ANSWER_BYTES,
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            MAX_STDERR_BYTES,
        ),
    ];
    for (is_stdout, pipe, cap) in pipes {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            // One byte past the cap tells the caller it was exceeded; the rest is drained.
            let r = pipe.by_ref().take(cap as u64 + 1).read_to_end(&mut buf);
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            let _ = tx.send((is_stdout, r.map(|_| buf)));
        });
    }
    drop(tx);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(Bounded::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill_group();
                let _ = child.wait();
                return Err(Bounded::Io(e));
            }
        }
    };
    kill_group();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(100))) {
            Ok((true, r)) => stdout = r.map_err(Bounded::Io)?,
            Ok((false, r)) => stderr = r.unwrap_or_default(),
            // A reader still blocked: something outside the group holds the pipe.
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(Bounded::TimedOut),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(BoundedOutput {
        status,
        stdout,
        stderr,
    })
}

/// Checks one path of the answer: absolute, UTF-8 (by type), no control characters, no `.` or
/// `..` components, at most [`MAX_PATH_BYTES`].
fn checked_path(field: &str, p: &str) -> Result<PathBuf, String> {
    if p.len() > MAX_PATH_BYTES {
        return Err(format!(
            "{field}: a path longer than {MAX_PATH_BYTES} bytes"
        ));
    }
    if p.chars().any(char::is_control) {
        return Err(format!("{field}: {p:?} contains control characters"));
    }
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(format!("{field}: {p:?} is not absolute"));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(format!("{field}: {p:?} is not a resolved path"));
    }
    Ok(path)
}

fn checked_list(field: &str, list: &[String]) -> Result<Vec<PathBuf>, String> {
    if list.len() > MAX_LIST {
        return Err(format!("{field}: more than {MAX_LIST} entries"));
    }
    list.iter().map(|p| checked_path(field, p)).collect()
}

/// Whether a directory may be granted whole: at least two names deep (`/usr/lib`, not `/usr`)
/// and not inside a directory of configuration and secrets, temporary files, runtime state
/// (the Hall's own run directories live in `/run`) or kernel interfaces.
pub fn dir_grant_allowed(dir: &Path) -> bool {
    dir.components().count() >= 3 && !NEVER_WHOLE.iter().any(|n| dir.starts_with(n))
}

/// Builds the runtime from what the Hall knows and the probe's answer. Pure.
///
/// Granted: the interpreter and its loader (read + execute); the standard library directories
/// and `lib-dynload` (read); the directory of every shared library the probe had mapped (the
/// file alone when the directory is too broad, [`dir_grant_allowed`]); any other file it had
/// mapped (a locale archive); a standard library module whose file lies elsewhere (Debian's
/// `sitecustomize.py` is a symlink into `/etc/python3.11`); the host extras. Never granted
/// because the probe loaded them: files in site directories (every other `sys.path` entry: a
/// `.pth` file may import host packages at start-up). Refused: a version older than
/// [`MIN_VERSION`], a virtual environment (its packages would not be granted), an answer that is
/// not exactly what [`PROBE_SCRIPT`] prints, a standard library directory too broad to grant.
pub fn derive(facts: &InterpreterFacts, answer: &[u8]) -> Result<PythonRuntime, PythonError> {
    let interp = &facts.interpreter;
    if answer.len() > MAX_ANSWER_BYTES {
        return Err(answer_err(
            interp,
            format!("longer than {MAX_ANSWER_BYTES} bytes"),
        ));
    }
    let a: ProbeAnswer = serde_json::from_slice(answer).map_err(|e| {
        answer_err(
            interp,
            format!("not the probe's JSON object ({e}); is this a Python interpreter?"),
        )
    })?;
    let bad = |m: String| answer_err(interp, m);
    if a.implementation.is_empty()
        || a.implementation.len() > 32
        || !a
            .implementation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(bad(format!(
            "implementation {:?} is not a name",
            a.implementation
        )));
    }
    let (major, minor, micro) = a.version;
    if major > 99 || minor > 999 || micro > 999 {
        return Err(bad(format!(
            "version {major}.{minor}.{micro} is not plausible"
        )));
    }
    if !["alpha", "beta", "candidate", "final"].contains(&a.release_level.as_str()) {
        return Err(bad(format!(
            "release level {:?} is not alpha, beta, candidate or final",
            a.release_level
        )));
    }
    let version = if a.release_level == "final" {
        format!("{major}.{minor}.{micro}")
    } else {
        format!("{major}.{minor}.{micro}-{}", a.release_level)
    };
    if (major, minor) < MIN_VERSION {
        return Err(PythonError::TooOld {
            path: show(interp),
            version,
        });
    }
    if a.prefix != a.base_prefix {
        return Err(unusable(
            interp,
            format!(
                "is a virtual environment (sys.prefix {} is not sys.base_prefix {}); name the base \
                 interpreter: workers bring their dependencies in their package",
                a.prefix, a.base_prefix
            ),
        ));
    }
    let stdlib = checked_path("stdlib", &a.stdlib).map_err(bad)?;
    let platstdlib = checked_path("platstdlib", &a.platstdlib).map_err(bad)?;
    let dynload = checked_list("dynload", &a.dynload).map_err(bad)?;
    let sys_path = checked_list("path", &a.path).map_err(bad)?;
    if a.modules.len() > MAX_LIST {
        return Err(bad(format!("modules: more than {MAX_LIST} entries")));
    }
    let modules = a
        .modules
        .iter()
        .map(|(w, r)| Ok((checked_path("modules", w)?, checked_path("modules", r)?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(bad)?;
    let maps = checked_list("maps", &a.maps).map_err(bad)?;
    for d in std::iter::once(&stdlib)
        .chain([&platstdlib])
        .chain(&dynload)
    {
        if !dir_grant_allowed(d) {
            return Err(bad(format!(
                "{} is too broad to grant as the standard library",
                d.display()
            )));
        }
    }

    let mut read: Vec<PathBuf> = Vec::new();
    let covered = |read: &[PathBuf], p: &Path| read.iter().any(|r| p.starts_with(r));
    let grant = |read: &mut Vec<PathBuf>, p: PathBuf| {
        if !covered(read, &p) {
            // A wider grant replaces the narrower ones it covers.
            read.retain(|r| !r.starts_with(&p));
            read.push(p);
        }
    };
    for d in [stdlib.clone(), platstdlib.clone()]
        .into_iter()
        .chain(dynload.iter().cloned())
        .chain(facts.extras.iter().cloned())
    {
        grant(&mut read, d);
    }
    // Python's own directories; every other sys.path entry is a site directory (host
    // packages), whose files are never granted because the interpreter happened to load them.
    let own: Vec<PathBuf> = [stdlib.clone(), platstdlib.clone()]
        .into_iter()
        .chain(dynload.iter().cloned())
        .collect();
    let is_own = |p: &PathBuf| own.contains(p) || p.extension().is_some_and(|e| e == "zip");
    let site_dirs: Vec<&PathBuf> = sys_path.iter().filter(|p| !is_own(p)).collect();
    let in_site = |p: &Path| site_dirs.iter().any(|d| p.starts_with(d));
    let mut execute = vec![interp.clone()];
    execute.extend(facts.loader.iter().cloned());
    let skip = |p: &Path| {
        execute.iter().any(|e| e == p) || ["/dev", "/proc", "/sys"].iter().any(|d| p.starts_with(d))
    };
    for m in &maps {
        let Some(text) = m.to_str() else { continue };
        if text.ends_with(" (deleted)") || skip(m) || covered(&read, m) || in_site(m) {
            continue;
        }
        let name = m.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_library = name.contains(".so");
        let target = match m.parent() {
            Some(dir) if is_library && dir_grant_allowed(dir) => dir.to_path_buf(),
            _ => m.clone(),
        };
        grant(&mut read, target);
    }
    // A standard library module whose file lies elsewhere (a symlink out of the stdlib).
    for (found, target) in &modules {
        if own.iter().any(|d| found.starts_with(d)) && !skip(target) {
            grant(&mut read, target.clone());
        }
    }

    let mut notes = Vec::new();
    for p in &site_dirs {
        if covered(&read, p) {
            notes.push(format!(
                "{} is on sys.path inside a granted directory: workers can import host packages from it",
                p.display()
            ));
        }
    }
    Ok(PythonRuntime {
        requested: facts.requested.clone(),
        interpreter: interp.clone(),
        implementation: a.implementation,
        version,
        loader: facts.loader.clone(),
        paths: RuntimePaths { read, execute },
        notes,
    })
}

/// Debian 12's python3.11 as [`derive`] sees it (a canned answer): for pure tests elsewhere.
#[cfg(test)]
pub(crate) fn debian_fixture() -> PythonRuntime {
    derive(&tests::facts(), tests::debian().to_string().as_bytes())
        .expect("the Debian fixture derives")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub(super) fn facts() -> InterpreterFacts {
        InterpreterFacts {
            requested: "/usr/bin/python3".into(),
            interpreter: "/usr/bin/python3.11".into(),
            loader: Some("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into()),
            extras: ["/etc/ld.so.cache", "/usr/lib/locale", "/etc/ssl"]
                .map(PathBuf::from)
                .to_vec(),
        }
    }

    /// What Debian 12's python3.11 answers (trimmed).
    pub(super) fn debian() -> Value {
        json!({
            "implementation": "cpython",
            "version": [3, 11, 2],
            "release_level": "final",
            "prefix": "/usr",
            "base_prefix": "/usr",
            "stdlib": "/usr/lib/python3.11",
            "platstdlib": "/usr/lib/python3.11",
            "dynload": ["/usr/lib/python3.11/lib-dynload"],
            "path": ["/usr/lib/python311.zip", "/usr/lib/python3.11",
                     "/usr/lib/python3.11/lib-dynload", "/usr/local/lib/python3.11/dist-packages",
                     "/usr/lib/python3/dist-packages"],
            "modules": [
                ["/usr/lib/python3.11/sitecustomize.py", "/etc/python3.11/sitecustomize.py"],
                ["/usr/lib/python3.11/json/__init__.py", "/usr/lib/python3.11/json/__init__.py"],
                ["/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                 "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so"],
                // Loaded by a .pth file in a site directory: host packages are not granted.
                ["/usr/lib/python3/dist-packages/_distutils_hack/__init__.py",
                 "/usr/lib/python3/dist-packages/_distutils_hack/__init__.py"]],
            "maps": ["/usr/bin/python3.11", "/usr/lib/locale/C.utf8/LC_CTYPE",
                     "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                     "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libssl.so.3",
                     "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
                     "/usr/lib/python3/dist-packages/numpy/core/_multiarray.so",
                     "/dev/zero (deleted)", "/memfd:x (deleted)"],
        })
    }

    fn derive_json(v: &Value) -> Result<PythonRuntime, PythonError> {
        derive(&facts(), v.to_string().as_bytes())
    }

    fn problem(v: Value) -> String {
        derive_json(&v).expect_err("refused").to_string()
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = debian();
        v[field] = value;
        v
    }

    #[test]
    fn debian_paths_are_derived_from_the_answer() {
        let r = derive_json(&debian()).unwrap();
        assert_eq!(r.version, "3.11.2");
        assert_eq!(r.describe(), "cpython 3.11.2");
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            r.paths.execute,
            vec![
                p("/usr/bin/python3.11"),
                p("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(
            r.paths.read,
            vec![
                p("/usr/lib/python3.11"),
                p("/etc/ld.so.cache"),
                p("/usr/lib/locale"),
                p("/etc/ssl"),
                p("/usr/lib/x86_64-linux-gnu"),
                p("/etc/python3.11/sitecustomize.py"),
            ]
        );
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // Host site packages the probe happened to load are not granted.
        assert!(
            !r.paths
                .read
                .iter()
                .any(|p| p.starts_with("/usr/lib/python3/dist-packages")),
            "{:?}",
            r.paths.read
        );
        assert_eq!(
            r.bootstrap(),
            Bootstrap::Python {
                interpreter: p("/usr/bin/python3.11"),
                runtime: "cpython 3.11.2".into()
            }
        );
    }

    #[test]
    fn a_fedora_layout_grants_lib64_and_notes_site_packages() {
        let mut v = debian();
        v["stdlib"] = json!("/usr/lib64/python3.12");
        v["platstdlib"] = json!("/usr/lib64/python3.12");
        v["version"] = json!([3, 12, 1]);
        v["dynload"] = json!(["/usr/lib64/python3.12/lib-dynload"]);
        v["path"] = json!([
            "/usr/lib64/python312.zip",
            "/usr/lib64/python3.12",
            "/usr/lib64/python3.12/lib-dynload",
            "/usr/lib64/python3.12/site-packages",
            "/usr/lib/python3.12/site-packages"
        ]);
        v["modules"] = json!([]);
        v["maps"] = json!(["/usr/lib64/libpython3.12.so.1.0", "/usr/lib64/libc.so.6"]);
        v["prefix"] = json!("/usr");
        let mut f = facts();
        f.interpreter = "/usr/bin/python3.12".into();
        f.loader = Some("/usr/lib64/ld-linux-x86-64.so.2".into());
        let r = derive(&f, v.to_string().as_bytes()).unwrap();
        assert!(r.paths.read.contains(&PathBuf::from("/usr/lib64")));
        // /usr/lib64 covers the stdlib: the narrower grant is dropped.
        assert!(
            !r.paths
                .read
                .contains(&PathBuf::from("/usr/lib64/python3.12"))
        );
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        assert!(r.notes[0].contains("/usr/lib64/python3.12/site-packages"));
    }

    #[test]
    fn libraries_in_broad_directories_are_granted_alone() {
        let v = with(
            "maps",
            json!([
                "/libweird.so.1",
                "/etc/libx.so",
                "/tmp/liby.so",
                "/opt/libz.so"
            ]),
        );
        let read = derive_json(&v).unwrap().paths.read;
        for f in [
            "/libweird.so.1",
            "/etc/libx.so",
            "/tmp/liby.so",
            "/opt/libz.so",
        ] {
            assert!(read.contains(&PathBuf::from(f)), "{f}: {read:?}");
        }
        for d in ["/", "/etc", "/tmp", "/opt"] {
            assert!(!read.contains(&PathBuf::from(d)), "{d}: {read:?}");
        }
        assert!(dir_grant_allowed(Path::new("/opt/python/lib")));
        assert!(dir_grant_allowed(Path::new(
            "/home/ada/.pyenv/versions/3.12.1/lib"
        )));
        assert!(!dir_grant_allowed(Path::new("/run/wcp-hall/runs")));
        assert!(!dir_grant_allowed(Path::new("/home")));
    }

    #[test]
    fn old_virtualenv_and_odd_interpreters_are_refused() {
        let e = derive_json(&with("version", json!([3, 7, 17]))).unwrap_err();
        assert!(matches!(e, PythonError::TooOld { .. }), "{e}");
        assert!(e.to_string().contains("3.7.17") && e.to_string().contains("3.8"));
        assert!(derive_json(&with("version", json!([3, 8, 0]))).is_ok());
        assert!(problem(with("prefix", json!("/srv/venv"))).contains("virtual environment"));
        assert!(problem(with("release_level", json!("nightly"))).contains("release level"));
        assert!(problem(with("implementation", json!("c python"))).contains("not a name"));
        assert!(problem(with("version", json!([3, 1000000, 0]))).contains("plausible"));
        let r = derive_json(&with("release_level", json!("candidate"))).unwrap();
        assert_eq!(r.version, "3.11.2-candidate");
    }

    #[test]
    fn hostile_answers_are_refused_not_trusted() {
        // Claiming the whole filesystem, or /etc, is the standard library.
        assert!(problem(with("stdlib", json!("/"))).contains("too broad"));
        assert!(problem(with("platstdlib", json!("/etc/x"))).contains("too broad"));
        assert!(problem(with("dynload", json!(["/usr"]))).contains("too broad"));
        // Relative, dotted, control characters, over-long.
        assert!(problem(with("stdlib", json!("usr/lib/python3"))).contains("not absolute"));
        let dotted = json!([["/usr/lib/python3.11/x.py", "/usr/lib/../../etc/shadow"]]);
        assert!(problem(with("modules", dotted)).contains("resolved"));
        assert!(problem(with("modules", json!(["/usr/lib/python3.11/x.py"]))).contains("JSON"));
        assert!(problem(with("maps", json!(["/usr/lib/a\nb.so"]))).contains("control"));
        assert!(problem(with("maps", json!(["/usr/lib/a\u{0}.so"]))).contains("control"));
        let long = format!("/usr/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(problem(with("maps", json!([long]))).contains("longer than"));
        let many: Vec<String> = (0..=MAX_LIST)
            .map(|i| format!("/usr/lib/m{i}.so"))
            .collect();
        assert!(problem(with("maps", json!(many))).contains("more than"));
        let pairs: Vec<[&str; 2]> = (0..=MAX_LIST).map(|_| ["/usr/a", "/usr/a"]).collect();
        assert!(problem(with("modules", json!(pairs))).contains("more than"));
        // Not the probe's shape.
        let mut extra = debian();
        extra["grant"] = json!(["/"]);
        assert!(problem(extra).contains("unknown field"));
        assert!(problem(with("version", json!("3.11"))).contains("probe's JSON"));
        assert!(problem(with("version", json!([3, -1, 0]))).contains("probe's JSON"));
        for text in ["", "null", "{", "[1,2]", "Python 3.11.2\n"] {
            let e = derive(&facts(), text.as_bytes()).unwrap_err();
            assert!(matches!(e, PythonError::Answer { .. }), "{text:?}: {e}");
        }
        // Oversized, even if it would parse.
        let mut big = debian().to_string().into_bytes();
        big.resize(MAX_ANSWER_BYTES + 1, b' ');
        assert!(
            derive(&facts(), &big)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        // Invalid UTF-8.
        let mut v = debian().to_string().into_bytes();
        let at = v.windows(7).position(|w| w == b"cpython").unwrap();
        v[at] = 0xff;
        assert!(matches!(
            derive(&facts(), &v),
            Err(PythonError::Answer { .. })
        ));
    }

    #[test]
    fn the_default_is_the_first_existing_candidate() {
        assert_eq!(
            choose(None, |p| p == Path::new("/usr/bin/python3")).unwrap(),
            PathBuf::from("/usr/bin/python3")
        );
        assert_eq!(
            choose(None, |_| true).unwrap(),
            PathBuf::from("/usr/bin/python3.11")
        );
        let e = choose(None, |_| false).unwrap_err().to_string();
        assert!(e.contains("/usr/bin/python3.11 or /usr/bin/python3"), "{e}");
        assert!(matches!(
            choose(Some(Path::new("python3")), |_| true),
            Err(PythonError::NotAbsolute { .. })
        ));
        assert_eq!(
            choose(Some(Path::new("/opt/py/bin/python3.12")), |_| false).unwrap(),
            PathBuf::from("/opt/py/bin/python3.12")
        );
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn the_probe_process_is_bounded_in_time_and_output() {
        // Hangs: killed at the deadline, with its whole group.
        let t = Instant::now();
        let r = run_bounded(sh("sleep 30"), Duration::from_millis(300));
        assert!(matches!(r, Err(Bounded::TimedOut)), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        // Floods stdout: capped one byte past the limit, drained until it exits.
        let out = run_bounded(
            sh("head -c 1000000 /dev/zero; echo oops >&2"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), MAX_ANSWER_BYTES + 1);
        assert_eq!(out.stderr, b"oops\n");
        assert!(derive(&facts(), &out.stdout).is_err());
        // Leaves a background process holding the pipes: the group is killed at exit, so the
        // answer comes back at once.
        let t = Instant::now();
        let out = run_bounded(sh("sleep 30 & echo done"), Duration::from_secs(10)).unwrap();
        assert_eq!(out.stdout, b"done\n");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Cannot start.
        let r = run_bounded(Command::new("/nonexistent/python3"), Duration::from_secs(1));
        assert!(matches!(r, Err(Bounded::Spawn(_))), "{r:?}");
    }
}
