//! `wcp-hall conformance routing FILE [--emit OUT.jsonl]`.

use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use super::{CliError, Out, exit, read_input};
use crate::conformance::run_routing_vectors;

#[derive(Debug, clap::Subcommand)]
pub enum ConformanceCommand {
    /// Run a wcp-routing-vectors/1 file (e.g. tests/vectors/routing.json): route every case and
    /// compare every key of its "expect". Prints "N passed, M failed"; exit 1 on any failure.
    Routing {
        /// The vector file.
        file: PathBuf,
        /// Also write one JSON line per case: {"id": …, "actual": {…same keys as "expect"…}}.
        #[arg(long, value_name = "OUT.jsonl")]
        emit: Option<PathBuf>,
    },
}

pub fn run(cmd: ConformanceCommand, out: &mut Out) -> Result<u8, CliError> {
    let ConformanceCommand::Routing { file, emit } = cmd;
    let text = read_input(&file)?;
    let results = run_routing_vectors(&text).map_err(|e| {
        CliError::new(
            exit::DATAERR,
            "vectors_invalid",
            format!("{}: {e}", file.display()),
        )
    })?;
    if let Some(path) = &emit {
        let mut buf = Vec::new();
        for r in &results {
            let line = json!({"id": r.id, "actual": r.actual});
            writeln!(buf, "{line}")
                .map_err(|e| CliError::new(exit::IOERR, "output_error", e.to_string()))?;
        }
        std::fs::write(path, buf).map_err(|e| {
            CliError::new(
                exit::IOERR,
                "output_error",
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
    }
    let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
    let passed = results.len() - failed.len();
    if out.json {
        let failures: Vec<_> = failed
            .iter()
            .map(|r| json!({"id": r.id, "mismatches": r.mismatches}))
            .collect();
        out.json_line(&json!({"passed": passed, "failed": failed.len(), "failures": failures}))?;
    } else {
        for r in &failed {
            out.line(format!("FAIL {}", r.id))?;
            for m in &r.mismatches {
                out.line(format!("    {m}"))?;
            }
        }
        out.line(format!("{passed} passed, {} failed", failed.len()))?;
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::DENIED
    })
}
