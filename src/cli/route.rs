//! `wcp-hall route`: the router alone, on the configured rules and registry.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{CliError, ConfigArg, Out, exit, load_config, read_input};
use crate::clock::DEFAULT_TASK_ID;
use crate::wcp::RouteInput;

#[derive(Debug, clap::Args)]
pub struct RouteArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The task id reported in evt.os.task.routed.
    #[arg(long, default_value = DEFAULT_TASK_ID)]
    pub task_id: String,
    /// RouteInput JSON file, or `-` for stdin.
    #[arg(default_value = "-")]
    pub input: PathBuf,
}

/// One input document: the whole text, or one line of a JSON-lines stream.
struct Doc<'a> {
    line: Option<usize>,
    text: &'a str,
}

/// Splits the input into documents: JSON lines when there are several non-empty lines and the
/// first one is a complete JSON value by itself; otherwise one (possibly pretty-printed) document.
fn documents(text: &str) -> Vec<Doc<'_>> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
        .collect();
    let first_is_whole = lines
        .first()
        .is_some_and(|(_, l)| serde_json::from_str::<Value>(l).is_ok());
    if lines.len() > 1 && first_is_whole {
        lines
            .into_iter()
            .map(|(n, l)| Doc {
                line: Some(n),
                text: l,
            })
            .collect()
    } else {
        vec![Doc { line: None, text }]
    }
}

pub fn run(args: RouteArgs, out: &mut Out) -> Result<u8, CliError> {
    let config = load_config(&args.config.config)?;
    let hall = super::status::load_hall(&config)?;
    let text = read_input(&args.input)?;
    let docs = documents(&text);
    if docs.is_empty() || text.trim().is_empty() {
        return Err(CliError::new(
            exit::DATAERR,
            "input_empty",
            format!("{} holds no RouteInput", args.input.display()),
        )
        .hint("pass a JSON object such as policies/examples/fetch.json"));
    }
    let single = docs.len() == 1 && docs[0].line.is_none();
    let (mut any_denied, mut any_invalid) = (false, false);
    for doc in docs {
        match RouteInput::from_json_str(doc.text) {
            Ok(input) => {
                let decision = hall.route_offline(&input, &args.task_id);
                any_denied |= decision.denied;
                if single {
                    out.json_pretty(&decision)?;
                } else {
                    out.json_line(&decision)?;
                }
            }
            Err(e) => {
                any_invalid = true;
                let err = json!({"error": {"code": "invalid_input", "message": e.to_string(), "line": doc.line}});
                if single {
                    return Err(CliError::new(exit::DATAERR, "invalid_input", e.to_string()));
                }
                out.json_line(&err)?;
            }
        }
    }
    Ok(if any_invalid {
        exit::DATAERR
    } else if any_denied {
        exit::DENIED
    } else {
        exit::OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_json_lines_but_keeps_pretty_documents_whole() {
        let pretty = "{\n  \"a\": 1\n}\n";
        assert_eq!(documents(pretty).len(), 1);
        let lines = "{\"a\": 1}\n\n{\"b\": 2}\nnot json\n";
        let docs = documents(lines);
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[2].line, Some(4));
        assert_eq!(documents("{\"a\": 1}\n")[0].line, None);
    }
}
