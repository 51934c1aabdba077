//! The `wcp-hall` command line: parse arguments, call the library, print.
//!
//! Thin by design: each subcommand lives in its own file and only wires library calls to
//! output. Human output by default, `--json` for scripts. Errors are printed as
//! `error: …` plus a hint (or as a JSON object with `--json`) and mapped to stable exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; every request allowed |
//! | 1 | a request was denied, a dispatched run failed, a rules test or conformance case failed, or rules are invalid |
//! | 2 | bad command-line usage |
//! | 65 | malformed input data (RouteInput, registry record, test fixture, vector file) |
//! | 66 | an input file does not exist or cannot be read |
//! | 69 | the running Hall cannot be reached (nothing else) |
//! | 70 | the Hall answered but has failed on its side (a 5xx other than 503, or `status` while its receipt log refuses appends) |
//! | 74 | an output could not be written |
//! | 75 | try again later: the Hall is overloaded, shutting down or degraded, or a dispatch awaits human approval |
//! | 77 | the Hall refused: the caller is not an operator |
//! | 78 | bad configuration (`hall.toml`, the configured rules or registry; also a reload the Hall refused) |

mod attest;
mod conformance;
mod daemon;
mod demo;
mod docs;
mod enroll;
mod envelope;
mod init;
mod keys_export;
mod mcp;
mod oci;
mod policy;
mod receipts;
mod registry;
mod route;
mod status;
mod validate;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit codes (see the module documentation).
pub mod exit {
    pub const OK: u8 = 0;
    pub const DENIED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DATAERR: u8 = 65;
    pub const NOINPUT: u8 = 66;
    /// The Hall could not be reached (no socket, refused, timed out). Nothing else.
    pub const UNAVAILABLE: u8 = 69;
    /// The Hall answered but has failed on its side (a 5xx other than 503, or `status` while the
    /// receipt log refuses appends): retrying will not help, an operator must look.
    pub const SOFTWARE: u8 = 70;
    pub const IOERR: u8 = 74;
    pub const TEMPFAIL: u8 = 75;
    pub const NOPERM: u8 = 77;
    pub const CONFIG: u8 = 78;
}

const AFTER_HELP: &str = r#"
Exit codes: 0 allowed/ok, 1 denied or checks failed, 2 usage, 65 malformed input,
66 missing input file, 69 Hall unreachable, 70 the Hall has failed (internal error, or its
receipt log refuses appends), 74 output error, 75 retry later (overloaded, shutting down or
pending approval), 77 not an operator, 78 bad configuration (also a reload the Hall refused).

Examples:
  wcp-hall serve --config policies/hall.toml --socket /tmp/hall.sock
  wcp-hall dispatch -s /tmp/hall.sock --capability cap.hello.greet --tenant-id acme-corp --input '{"name":"Ada"}'
  wcp-hall route --config policies/hall.toml policies/examples/fetch.json
  wcp-hall validate policies/rules.json policies/rules.tests.json
  wcp-hall conformance routing tests/vectors/routing.json"#;

/// wcp-hall: the WCP Hall. Routes capability requests (cap.*) to attested worker species
/// (wrk.*) under WCP rules: fail closed, deterministic, controls, blast radius, policy gate,
/// signatory tenants.
#[derive(Debug, Parser)]
#[command(name = "wcp-hall", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Print machine-readable JSON instead of human text (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the Hall's configuration comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Path to hall.toml.
    #[arg(
        long,
        short = 'c',
        env = "WCP_HALL_CONFIG",
        default_value = "/etc/wcp-hall/hall.toml"
    )]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decide one RouteInput (or JSON lines of them) and print the RouteDecision(s) as JSON.
    ///
    /// INPUT is a file or `-` for stdin holding one JSON object (any formatting) or one object
    /// per line. Nothing is executed: this is the router alone. Exit 1 if any request is denied,
    /// 65 if any input is malformed (its line gets an error object, the others still route).
    Route(route::RouteArgs),
    /// Check a rules.json file: structure, ambiguous conditions, shadowed rules; optionally run
    /// routing tests (PyHall's fixture format {"tests": [{test_id, input, expect: {expected_rule_id}}]}).
    Validate(validate::ValidateArgs),
    /// Validate a registry record (WCP §6) and write it atomically into the registry directory.
    Enroll(enroll::EnrollArgs),
    /// The worker registry service (PyHall's RegistryClient API): a worker's status, the ban
    /// list, reporting a hash, attesting a package hash, the service's health.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Run the Hall daemon in the foreground on its Unix socket (HTTP/1.1 + JSON).
    Serve(daemon::ServeArgs),
    /// Ask a running Hall for its health (exit 0 when healthy, 69 when unreachable).
    Status(daemon::StatusArgs),
    /// Route and run one request on a running Hall; prints the result and the receipt.
    Dispatch(daemon::DispatchArgs),
    /// What a running Hall lets you route as a tenant in a route context: each capability, its
    /// worker, whether it needs a human approval, and what is not routable and why.
    Capabilities(daemon::CapabilitiesArgs),
    /// Human approvals on a running Hall (WCP §5.8): list, show, approve, deny, escalate.
    #[command(subcommand)]
    Approvals(daemon::ApprovalsCommand),
    /// Ask a running Hall to reload its configuration, rules and registry (like SIGHUP).
    Reload(daemon::ReloadArgs),
    /// Inspect the configuration offline: the floors, the rule set and the registry it names.
    #[command(subcommand)]
    Config(status::ConfigCommand),
    /// Print the version and the protocol versions this build speaks.
    Version,
    /// Run language-neutral conformance vectors.
    #[command(subcommand)]
    Conformance(conformance::ConformanceCommand),
    /// Generate an Ed25519 signing key (PATH, PATH.pub) and its trust-policy entry.
    Keygen(attest::KeygenArgs),
    /// Create PyHall's worker package layout (code/bootstrap.py, code/worker_logic.py, …).
    Scaffold(attest::ScaffoldArgs),
    /// Push a signed worker package to an OCI registry as an artifact; prints its digest.
    Push(oci::PushArgs),
    /// Pull a worker package from an OCI registry, verify it against the trust policy and
    /// store it (nothing is stored unless it verifies).
    Pull(oci::PullArgs),
    /// Package attestation: keys, scaffolds, package hashes, signing and verification.
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Evidence receipts: verify the log, show, prove and check inclusion and consistency.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCommand),
    /// Receipt signing keys: generate one, rotate it (a rotation receipt signed by both keys), or
    /// export any signing key for openssl, ssh-keygen or C2SP note tooling.
    #[command(subcommand)]
    Keys(receipts::KeysCommand),
    /// The policy gate: check policies against the schema and run golden decisions.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// The privilege envelope: probe what this kernel can enforce; run a package under it.
    #[command(subcommand)]
    Envelope(envelope::EnvelopeCommand),
    /// The whole mission in seconds: sign and enroll the bundled workers, start a Hall on a
    /// temporary socket, run the five-worker pipeline, show refusals and a human approval,
    /// verify the receipt log; then clean up (or --keep).
    Demo(demo::DemoArgs),
    /// Create a persistent state directory for real use: keys (0600), trust policy, hall.toml,
    /// registry, store and receipts directories. Idempotent; never overwrites a key.
    Init(init::InitArgs),
    /// Serve a running Hall's capabilities as MCP tools over stdio (for agent hosts).
    Mcp(mcp::McpArgs),
    /// Write the manual pages and shell completions (bash, zsh, fish), generated from these
    /// very definitions.
    Docs(docs::DocsArgs),
}

/// A failure, with the exit code it maps to and an optional hint on how to fix it.
#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    pub kind: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(exit: u8, kind: &'static str, message: impl Into<String>) -> Self {
        CliError {
            exit,
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    fn output(e: std::io::Error) -> Self {
        CliError::new(
            exit::IOERR,
            "output_error",
            format!("cannot write output: {e}"),
        )
    }
}

/// Reads an input file (or stdin for `-`), mapping failures to exit 66.
/// What to do about a key file that could not be written, from the reason it could not.
pub(crate) fn key_write_hint(e: &crate::crypto::KeyError) -> String {
    let crate::crypto::KeyError::Write { path, source } = e else {
        return "keys are written once, to a new file".to_owned();
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".to_owned(),
    };
    match source.kind() {
        std::io::ErrorKind::AlreadyExists => {
            "keys are never overwritten; choose a new path".to_owned()
        }
        std::io::ErrorKind::NotFound => {
            format!("the directory {dir} does not exist; create it first (mkdir -p {dir})")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("you may not create files in {dir}; choose a directory you can write to")
        }
        _ => format!("check that {dir} is a writable directory"),
    }
}

pub fn read_input(path: &Path) -> Result<String, CliError> {
    let result = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    result.map_err(|e| {
        CliError::new(
            exit::NOINPUT,
            "input_unreadable",
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// Loads `hall.toml`, mapping failures to exit 78.
pub fn load_config(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| {
        let err = CliError::new(exit::CONFIG, "config_invalid", e.to_string());
        match e {
            crate::config::ConfigError::Read { .. } => err.hint(
                "pass --config PATH or set WCP_HALL_CONFIG; policies/hall.toml in the source tree routes the bundled workers",
            ),
            _ => err,
        }
    })
}

/// Output sink shared by the subcommands.
pub struct Out {
    pub json: bool,
    stdout: std::io::StdoutLock<'static>,
}

impl Out {
    /// Writes one line.
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<(), CliError> {
        writeln!(self.stdout, "{}", text.as_ref()).map_err(CliError::output)
    }

    /// Writes a value as pretty JSON.
    pub fn json_pretty<T: serde::Serialize>(&mut self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::new(exit::IOERR, "output_error", e.to_string()))?;
        self.line(text)
    }

    /// Writes a value as one compact JSON line.
    pub fn json_line<T: serde::Serialize>(&mut self, value: &T) -> Result<(), CliError> {
        let text = serde_json::to_string(value)
            .map_err(|e| CliError::new(exit::IOERR, "output_error", e.to_string()))?;
        self.line(text)
    }
}

/// Parses the process arguments, runs the command and returns the exit code.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    run(cli)
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let json = cli.json;
    let mut out = Out {
        json,
        stdout: std::io::stdout().lock(),
    };
    let result = match cli.command {
        Command::Route(args) => route::run(args, &mut out),
        Command::Validate(args) => validate::run(args, &mut out),
        Command::Enroll(args) => enroll::run(args, &mut out),
        Command::Registry(cmd) => registry::run(cmd, &mut out),
        Command::Serve(args) => daemon::serve(args),
        Command::Status(args) => daemon::status(args, &mut out),
        Command::Dispatch(args) => daemon::dispatch(args, &mut out),
        Command::Capabilities(args) => daemon::capabilities(args, &mut out),
        Command::Approvals(cmd) => daemon::approvals(cmd, &mut out),
        Command::Reload(args) => daemon::reload(args, &mut out),
        Command::Config(cmd) => status::run(cmd, &mut out),
        Command::Version => version(&mut out),
        Command::Conformance(cmd) => conformance::run(cmd, &mut out),
        Command::Keygen(a) => attest::run_keygen(a, &mut out),
        Command::Scaffold(a) => attest::run_scaffold(a, &mut out),
        Command::Attest(cmd) => attest::run(cmd, &mut out),
        Command::Push(args) => oci::run_push(args, &mut out),
        Command::Pull(args) => oci::run_pull(args, &mut out),
        Command::Receipts(cmd) => receipts::run(cmd, &mut out),
        Command::Keys(cmd) => receipts::run_keys(cmd, &mut out),
        Command::Policy(cmd) => policy::run(cmd, &mut out),
        Command::Envelope(cmd) => envelope::run(cmd, &mut out),
        Command::Demo(args) => demo::run(args, &mut out),
        Command::Init(args) => init::run(args, &mut out),
        Command::Docs(args) => docs::run(args, &mut out),
        Command::Mcp(args) => {
            // stdout belongs to the MCP protocol: release the CLI's lock on it.
            drop(out);
            mcp::run(args)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) if e.exit == exit::IOERR && e.message.contains("Broken pipe") => exit::IOERR,
        Err(e) => {
            report(&e, json);
            e.exit
        }
    }
}

fn report(e: &CliError, json: bool) {
    let mut stderr = std::io::stderr().lock();
    if json {
        let v =
            serde_json::json!({"error": {"code": e.kind, "message": e.message, "hint": e.hint}});
        let _ = writeln!(stderr, "{v}");
    } else {
        let _ = writeln!(stderr, "error: {}", e.message);
        if let Some(h) = &e.hint {
            let _ = writeln!(stderr, "hint: {h}");
        }
    }
}

fn version(out: &mut Out) -> Result<u8, CliError> {
    let info = serde_json::json!({
        "name": "wcp-hall",
        "version": env!("CARGO_PKG_VERSION"),
        "wcp_version": "0.1",
        "pyhall_compatibility": "0.3.0",
        "routing_vectors": crate::conformance::ROUTING_FORMAT,
    });
    if out.json {
        out.json_line(&info)?;
    } else {
        out.line(format!(
            "wcp-hall {} (WCP 0.1; decisions compatible with PyHall 0.3.0; vectors {})",
            env!("CARGO_PKG_VERSION"),
            crate::conformance::ROUTING_FORMAT
        ))?;
    }
    Ok(exit::OK)
}
