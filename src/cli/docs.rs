//! `wcp-hall docs`: the manual pages and shell completions, generated from the command line's
//! own definitions (clap_mangen, clap_complete), so they can never drift from `--help`.
//! The Debian package ships them (`packaging/build-deb`).

use std::path::PathBuf;

use clap::CommandFactory;
use serde_json::json;

use super::{Cli, CliError, Out, exit};

#[derive(Debug, clap::Args)]
pub struct DocsArgs {
    /// Write `wcp-hall.1` and one `wcp-hall-<command>.1` per subcommand into this directory.
    #[arg(long)]
    pub man: Option<PathBuf>,
    /// Write bash, zsh and fish completions (`wcp-hall`, `_wcp-hall`, `wcp-hall.fish`) into
    /// this directory.
    #[arg(long)]
    pub completions: Option<PathBuf>,
}

fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> CliError {
    CliError::new(
        exit::IOERR,
        "docs_write_failed",
        format!("cannot write {what} into {}: {e}", path.display()),
    )
}

pub fn run(args: DocsArgs, out: &mut Out) -> Result<u8, CliError> {
    if args.man.is_none() && args.completions.is_none() {
        return Err(CliError::new(
            exit::USAGE,
            "nothing_to_do",
            "say where to write: --man DIR and/or --completions DIR",
        ));
    }
    let mut written = Vec::new();
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir).map_err(|e| io("manual pages", dir, e))?;
        let cmd = Cli::command();
        clap_mangen::generate_to(cmd, dir).map_err(|e| io("manual pages", dir, e))?;
        let mut pages: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| io("manual pages", dir, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".1"))
            .collect();
        pages.sort();
        written.push(json!({"man": dir, "pages": pages}));
    }
    if let Some(dir) = &args.completions {
        use clap_complete::Shell;
        std::fs::create_dir_all(dir).map_err(|e| io("completions", dir, e))?;
        let mut files = Vec::new();
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut cmd = Cli::command();
            let path = clap_complete::generate_to(shell, &mut cmd, "wcp-hall", dir)
                .map_err(|e| io("completions", dir, e))?;
            files.push(path);
        }
        written.push(json!({"completions": dir, "files": files}));
    }
    if out.json {
        out.json_line(&json!({"written": written}))?;
    } else {
        for w in &written {
            match (w.get("pages"), w.get("files")) {
                (Some(p), _) => out.line(format!(
                    "{} manual pages in {}",
                    p.as_array().map_or(0, Vec::len),
                    w["man"].as_str().unwrap_or("?")
                ))?,
                (_, Some(f)) => out.line(format!(
                    "completions for bash, zsh and fish in {} ({} files)",
                    w["completions"].as_str().unwrap_or("?"),
                    f.as_array().map_or(0, Vec::len)
                ))?,
                _ => {}
            }
        }
    }
    Ok(exit::OK)
}
