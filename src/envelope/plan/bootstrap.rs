//! Planning step: the program to execute and its argument vector, from the bootstrap the
//! package's signed layout selected (an interpreter running `code/bootstrap.py`, or a native
//! program).
//!
//! Owns the interpreter's flags (`-E -s -B`, the pycache prefix under the run directory); it
//! must not grant the program anything (the Landlock step adds its execute right).

use std::path::PathBuf;

use super::super::error::EnvelopeError;
use super::super::types::{Bootstrap, RunRequest};
use super::validate::check_abs;
use super::{RunDirs, s};

/// What is executed.
pub(super) struct Program {
    pub path: PathBuf,
    pub argv: Vec<String>,
    /// The probed Python runtime's label, for the report (`None` for a native program).
    pub runtime: Option<String>,
}

/// Decides the program and its argv: a Python bootstrap runs isolated (`-E -s`), without
/// bytecode writes (`-B`) and with its pycache under the run directory; a native program runs
/// with its declared arguments, none of which may hold a NUL byte.
pub(super) fn program(req: &RunRequest, dirs: &RunDirs) -> Result<Program, EnvelopeError> {
    Ok(match &req.bootstrap {
        Bootstrap::Python {
            interpreter,
            runtime,
        } => {
            check_abs("bootstrap.interpreter", interpreter)?;
            let script = req.package_dir.join("code").join("bootstrap.py");
            Program {
                path: interpreter.clone(),
                argv: vec![
                    s(interpreter),
                    "-E".into(),
                    "-s".into(),
                    "-B".into(),
                    "-X".into(),
                    format!("pycache_prefix={}", s(&dirs.pycache)),
                    s(&script),
                ],
                runtime: Some(runtime.clone()),
            }
        }
        Bootstrap::Native { program, args } => {
            check_abs("bootstrap.program", program)?;
            for (i, a) in args.iter().enumerate() {
                if a.contains('\0') {
                    return Err(EnvelopeError::invalid(
                        format!("bootstrap.args[{i}]"),
                        "contains a NUL byte",
                    ));
                }
            }
            let mut argv = vec![s(program)];
            argv.extend(args.iter().cloned());
            Program {
                path: program.clone(),
                argv,
                runtime: None,
            }
        }
    })
}
