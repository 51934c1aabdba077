//! Planning step: what the worker may write and run beyond its package: the declared writes,
//! the scratch space and the declared tools.
//!
//! Owns where each declared write is granted (a directory the Hall opened and checked, in place
//! when the policy allows absolute writes, otherwise mapped under the run's work directory) and
//! the scratch half of the report. It must never grant the root, the package or the runs
//! directory, and it creates nothing (`prepare` does).

use std::path::{Component, Path, PathBuf};

use super::super::error::EnvelopeError;
use super::super::probe::Probe;
use super::super::report::{Effective, ScratchReport};
use super::super::types::{HostConfig, RunRequest};
use super::validate::{check_abs, check_text};
use super::{Degraded, RunDirs, WriteGrant};

/// The grants beyond the package.
pub(super) struct Grants {
    pub writes: Vec<WriteGrant>,
    pub tools: Vec<PathBuf>,
    /// The size of the tmpfs to mount on the run directory (root Hall).
    pub scratch_bytes: Option<u64>,
    pub scratch: ScratchReport,
}

/// Decides the grants: each declared write once (no `..`, never covering the root, the package
/// or the runs directory), a size-limited tmpfs on the run directory when the Hall is root, and
/// each tool as an absolute path (a bare name is under `/usr/bin`).
pub(super) fn decide(
    req: &RunRequest,
    host: &HostConfig,
    probe: &Probe,
    dirs: &RunDirs,
    degraded: &mut Degraded,
) -> Result<Grants, EnvelopeError> {
    let writes = writes(req, host, dirs)?;
    let (scratch_bytes, scratch) = scratch(host, probe.hall_uid == 0, degraded);
    let tools = tools(req)?;
    Ok(Grants {
        writes,
        tools,
        scratch_bytes,
        scratch,
    })
}

/// Where each declared write is granted.
fn writes(
    req: &RunRequest,
    host: &HostConfig,
    dirs: &RunDirs,
) -> Result<Vec<WriteGrant>, EnvelopeError> {
    let mut writes: Vec<WriteGrant> = Vec::new();
    for (i, declared) in req.privilege_envelope.filesystem_writes.iter().enumerate() {
        let field = format!("privilege_envelope.filesystem_writes[{i}]");
        check_text(&field, declared, 4096)?;
        let path = Path::new(declared);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(EnvelopeError::invalid(
                field,
                format!("{declared:?} contains \"..\""),
            ));
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let opened = req
            .opened_writes
            .iter()
            .position(|o| o.declared == *declared);
        let grant = if let Some(i) = opened {
            WriteGrant {
                declared: declared.clone(),
                path: req.opened_writes[i].dir.path.clone(),
                under_run_dir: false,
                mapped: false,
                opened: Some(i),
            }
        } else if path.is_absolute() && req.allow_absolute_writes {
            if rel.as_os_str().is_empty()
                || req.package_dir.starts_with(path)
                || path.starts_with(&req.package_dir)
                || host.runs_dir.starts_with(path)
            {
                return Err(EnvelopeError::invalid(
                    field,
                    format!(
                        "{declared:?} would make the root, the package or the runs directory writable"
                    ),
                ));
            }
            WriteGrant {
                declared: declared.clone(),
                path: PathBuf::from("/").join(&rel),
                under_run_dir: false,
                mapped: false,
                opened: None,
            }
        } else {
            if rel.as_os_str().is_empty() {
                return Err(EnvelopeError::invalid(
                    field,
                    format!("{declared:?} names no directory"),
                ));
            }
            WriteGrant {
                declared: declared.clone(),
                path: dirs.work.join(&rel),
                under_run_dir: true,
                mapped: path.is_absolute(),
                opened: None,
            }
        };
        if !writes.iter().any(|w| w.path == grant.path) {
            writes.push(grant);
        }
    }
    Ok(writes)
}

/// Scratch: a size-limited tmpfs on the run directory, where the Hall can mount one (root).
fn scratch(
    host: &HostConfig,
    hall_root: bool,
    degraded: &mut Degraded,
) -> (Option<u64>, ScratchReport) {
    let scratch_bytes = host.scratch_bytes.filter(|_| hall_root);
    let scratch_report = match (host.scratch_bytes, hall_root) {
        (Some(b), true) => ScratchReport {
            effective: Effective::Enforced,
            bytes: Some(b),
            how: format!("a tmpfs of {b} bytes on the run directory (tmp and mapped writes)"),
        },
        (Some(_), false) => {
            let why = "the Hall is not root, so it cannot mount a size-limited tmpfs on the run \
                       directory: scratch is bounded per file only (RLIMIT_FSIZE); put runs_dir \
                       on a size-limited filesystem"
                .to_owned();
            degraded.add("scratch", &why);
            ScratchReport {
                effective: Effective::NotEnforced,
                bytes: None,
                how: why,
            }
        }
        (None, _) => ScratchReport {
            effective: Effective::Off,
            bytes: None,
            how: "off ([envelope] scratch_bytes = 0): scratch is bounded per file only \
                  (RLIMIT_FSIZE)"
                .into(),
        },
    };
    (scratch_bytes, scratch_report)
}

/// The declared tools as absolute paths.
fn tools(req: &RunRequest) -> Result<Vec<PathBuf>, EnvelopeError> {
    let mut tools = Vec::new();
    for (i, tool) in req.privilege_envelope.tools.iter().enumerate() {
        let field = format!("privilege_envelope.tools[{i}]");
        check_text(&field, tool, 4096)?;
        let path = if tool.starts_with('/') {
            PathBuf::from(tool)
        } else if tool.contains('/') {
            return Err(EnvelopeError::invalid(
                field,
                format!(
                    "{tool:?}: a tool is a bare program name (found in /usr/bin) or an absolute path"
                ),
            ));
        } else {
            Path::new("/usr/bin").join(tool)
        };
        check_abs(&field, &path)?;
        tools.push(path);
    }
    Ok(tools)
}
