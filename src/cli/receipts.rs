//! `wcp-hall receipts …` (verify, show, prove, verify-proof) and `wcp-hall keys rotate`.
//!
//! The log directory and the trusted key come from the flags, else from `[receipts]` in
//! hall.toml (`log_dir`, and `signing_key` + `.pub`). Verification trusts only the keys given
//! here, never a key found in the log directory.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::{CliError, ConfigArg, Out, exit, read_input};
use crate::crypto::keys::public_path_for;
use crate::crypto::{KeyError, PublicKey};
use crate::receipt::PAYLOAD_TYPE;
use crate::receipt::checkpoint;
use crate::receipt::config::{ReceiptsSection, host_id};
use crate::receipt::log::{LogOptions, OpenError};
use crate::receipt::rotate::{self, OldKey, RotateError};
use crate::receipt::verify::{
    self, ExternalCheckpoint, ProofBundle, ProveError, Selector, VerifyOptions, short,
};

/// Which log, and where the configuration is.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArg {
    /// The receipt log directory (default: `[receipts] log_dir` in hall.toml).
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReceiptsCommand {
    /// Verify a receipt log offline: signatures, hash chain, seq, key rotations, the Merkle
    /// tree and every checkpoint. Reports each problem with its seq and why; exit 1 if any.
    Verify(VerifyArgs),
    /// Show one record by seq or receipt id (the stored payload, decoded; not verified).
    Show(ShowArgs),
    /// Write an offline-verifiable proof bundle for one receipt: the record, its inclusion
    /// proof and the signed checkpoint (C2SP tlog-proof), and the log's key rotations.
    Prove(ProveArgs),
    /// Verify a proof bundle written by `receipts prove`, offline, with a trusted public key.
    VerifyProof(VerifyProofArgs),
    /// Prove that the log's newest checkpoint extends an older checkpoint you hold (C2SP
    /// tlog-witness body: `old N`, the consistency proof, the new checkpoint).
    Consistency(ConsistencyArgs),
    /// Verify a consistency proof offline against the older checkpoint you hold.
    VerifyConsistency(VerifyConsistencyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConsistencyArgs {
    /// The older checkpoint (C2SP signed note) to prove consistency from.
    pub old: PathBuf,
    #[command(flatten)]
    pub log: LogArg,
    /// Write the proof here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyConsistencyArgs {
    /// The older checkpoint you hold.
    pub old: PathBuf,
    /// The proof written by `receipts consistency`, or `-` for stdin.
    pub proof: PathBuf,
    /// A trusted receipt public key; repeatable (give both keys across a rotation). Default:
    /// the configured signing key's `.pub`.
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub log: LogArg,
    /// A trusted receipt public key (`wcp-ed25519-public-v1` file); repeatable. Default: the
    /// configured signing key's `.pub`.
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// A checkpoint saved elsewhere (C2SP signed note) the log must be consistent with;
    /// repeatable. The log directory's own `checkpoint` file is always checked.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// A seq (number) or a receipt id (UUIDv7).
    pub which: String,
    #[command(flatten)]
    pub log: LogArg,
}

/// What `receipts prove` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProofFormat {
    /// The `wcp-receipt-proof/1` bundle: the record, the tlog-proof, the key rotations.
    Json,
    /// The bare C2SP tlog-proof text (`c2sp.org/tlog-proof@v1`, index, hashes, checkpoint);
    /// verify it with the receipt (`verify-proof --receipt`).
    TlogProof,
}

#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The seq of the receipt to prove.
    pub seq: u64,
    #[command(flatten)]
    pub log: LogArg,
    /// `json` (the bundle) or `tlog-proof` (C2SP text).
    #[arg(long, value_enum, default_value = "json")]
    pub format: ProofFormat,
    /// Write the bundle here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyProofArgs {
    /// The proof (a JSON bundle or a C2SP tlog-proof written by `receipts prove`), or `-` for
    /// stdin.
    pub file: PathBuf,
    /// For a tlog-proof: the receipt it proves (its log line, or its DSSE envelope, as JSON).
    #[arg(long, value_name = "FILE")]
    pub receipt: Option<PathBuf>,
    /// A trusted receipt public key; repeatable. Default: the configured signing key's `.pub`.
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn run(cmd: ReceiptsCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        ReceiptsCommand::Verify(a) => run_verify(a, out),
        ReceiptsCommand::Show(a) => run_show(a, out),
        ReceiptsCommand::Prove(a) => run_prove(a, out),
        ReceiptsCommand::VerifyProof(a) => run_verify_proof(a, out),
        ReceiptsCommand::Consistency(a) => run_consistency(a, out),
        ReceiptsCommand::VerifyConsistency(a) => run_verify_consistency(a, out),
    }
}

// ---- shared resolution ------------------------------------------------------------------------

fn section(config: &ConfigArg, what: &str) -> Result<ReceiptsSection, CliError> {
    ReceiptsSection::from_hall_toml(&config.config).map_err(|e| {
        CliError::new(exit::CONFIG, "config_invalid", e.to_string()).hint(format!(
            "pass {what}, or --config PATH to a hall.toml with a [receipts] table"
        ))
    })
}

/// The log directory and, when it came from the configuration, the section.
fn log_dir(arg: &LogArg) -> Result<(PathBuf, Option<ReceiptsSection>), CliError> {
    let (dir, sec) = match &arg.log {
        Some(d) => (d.clone(), None),
        None => {
            let s = section(&arg.config, "--log DIR")?;
            (s.log_dir.clone(), Some(s))
        }
    };
    if !dir.is_dir() {
        return Err(CliError::new(
            exit::NOINPUT,
            "log_missing",
            format!("no receipt log directory at {}", dir.display()),
        )
        .hint("pass --log DIR (the directory holding receipts-*.jsonl)"));
    }
    Ok((dir, sec))
}

fn key_error(e: KeyError) -> CliError {
    let code = match &e {
        KeyError::Read { .. } => exit::NOINPUT,
        KeyError::Format { .. } | KeyError::Invalid { .. } => exit::DATAERR,
        KeyError::InsecureMode { .. } => exit::CONFIG,
        KeyError::Write { .. } | KeyError::Random(_) => exit::IOERR,
    };
    CliError::new(code, "key_error", e.to_string())
}

/// The trusted keys: `--pubkey` files, else the configured signing key's `.pub`.
fn anchors(pubkeys: &[PathBuf], config: &ConfigArg) -> Result<Vec<PublicKey>, CliError> {
    if !pubkeys.is_empty() {
        return pubkeys
            .iter()
            .map(|p| PublicKey::read(p).map_err(key_error))
            .collect();
    }
    let no_anchor = || {
        CliError::new(
            exit::USAGE,
            "no_trusted_key",
            "no trusted receipt public key".to_owned(),
        )
        .hint(
            "pass --pubkey FILE (the Hall's receipt public key, e.g. /etc/wcp-hall/receipts.key.pub), \
             obtained independently of the log",
        )
    };
    let sec = ReceiptsSection::from_hall_toml(&config.config).map_err(|_| no_anchor())?;
    let path = sec.key_path().map_err(|_| no_anchor())?;
    let public = public_path_for(&path);
    PublicKey::read(&public)
        .map(|k| vec![k])
        .map_err(|e| no_anchor().hint(format!("{e}; pass --pubkey FILE")))
}

// ---- verify -------------------------------------------------------------------------------------

fn run_verify(args: VerifyArgs, out: &mut Out) -> Result<u8, CliError> {
    let (dir, sec) = log_dir(&args.log)?;
    let anchors = anchors(&args.pubkeys, &args.log.config)?;
    let mut checkpoints = Vec::new();
    let mut sources: Vec<PathBuf> = args.checkpoints.clone();
    if let Some(copy) = sec.as_ref().and_then(|s| s.checkpoint_copy.clone())
        && copy.exists()
    {
        sources.push(copy);
    }
    for path in sources {
        let note = read_input(&path)?;
        checkpoints.push(ExternalCheckpoint {
            source: path.display().to_string(),
            note,
        });
    }
    let report = verify::verify_log(
        &dir,
        &VerifyOptions {
            anchors,
            checkpoints,
        },
    )
    .map_err(|e| {
        CliError::new(
            exit::NOINPUT,
            "log_unreadable",
            format!("cannot read the receipt log {}: {e}", dir.display()),
        )
    })?;
    if out.json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| CliError::new(exit::IOERR, "output_error", e.to_string()))?;
        v["ok"] = json!(report.ok());
        out.json_line(&v)?;
    } else {
        out.line(format!(
            "receipt log {} (origin {})",
            report.log_dir,
            report.origin.as_deref().unwrap_or("unknown")
        ))?;
        for k in &report.keys {
            let to = k
                .rotated_at
                .map_or_else(|| "..".to_owned(), |r| format!("..={r}"));
            out.line(format!(
                "  key {} signs seq {}{to} ({})",
                &k.key_id[..16],
                k.from_seq,
                if k.trusted { "trusted" } else { "NOT trusted" }
            ))?;
        }
        let cp_ok = report.checkpoints.iter().filter(|c| c.ok).count();
        let cp_bad = report.checkpoints.len() - cp_ok;
        let newest = report
            .checkpoints
            .iter()
            .filter(|c| c.ok)
            .filter_map(|c| c.size)
            .max();
        out.line(format!(
            "  checkpoints: {} checked: {cp_ok} verified, {cp_bad} failed{}",
            report.checkpoints.len(),
            newest.map_or(String::new(), |s| format!(
                "; the newest verified one covers {s} records"
            ))
        ))?;
        for c in report.checkpoints.iter().filter(|c| !c.ok).take(5) {
            out.line(format!(
                "  checkpoint FAILED: {}: {}",
                c.source,
                c.problem.as_deref().unwrap_or("failed")
            ))?;
        }
        if !report.open_intents.is_empty() {
            out.line(format!(
                "  open intents (in flight, or aborted at the Hall's next start): seq {}",
                report
                    .open_intents
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
        }
        for f in report.failures.iter().take(20) {
            out.line(format!("FAIL {f}"))?;
        }
        if report.failure_count > 20 {
            out.line(format!(
                "… and {} more problem(s) (--json lists up to {})",
                report.failure_count - 20,
                verify::MAX_REPORTED_FAILURES
            ))?;
        }
        out.line(format!(
            "records: {} passed, {} failed ({} signatures checked)",
            report.passed, report.failed, report.signatures_checked
        ))?;
        if let Some(f) = &report.first_failure {
            out.line(format!("first bad: {f}"))?;
        }
        // The verdict, last: a bad checkpoint or a bad last line fails the log even when every
        // record passed, and the summary must never read as a pass then.
        if report.ok() {
            out.line(format!(
                "OK: {} records and {} checkpoints verified",
                report.passed, cp_ok
            ))?;
        } else {
            out.line(format!(
                "FAILED: {} problem(s): {} bad record(s), {} bad checkpoint(s){}",
                report.failure_count,
                report.failed,
                cp_bad,
                if report.failure_count > report.failed + cp_bad as u64 {
                    ", and problems outside any one record or checkpoint (see the FAIL lines)"
                } else {
                    ""
                }
            ))?;
        }
    }
    Ok(if report.ok() { exit::OK } else { exit::DENIED })
}

// ---- show ---------------------------------------------------------------------------------------

fn run_show(args: ShowArgs, out: &mut Out) -> Result<u8, CliError> {
    let (dir, _) = log_dir(&args.log)?;
    let which = Selector::parse(&args.which);
    let found = verify::find_record(&dir, &which).map_err(|e| {
        CliError::new(
            exit::NOINPUT,
            "log_unreadable",
            format!("cannot read the receipt log {}: {e}", dir.display()),
        )
    })?;
    let Some(r) = found else {
        return Err(CliError::new(
            exit::DENIED,
            "not_found",
            format!("no record {} in {}", args.which, dir.display()),
        )
        .hint("give a seq (number) or a receipt_id (UUIDv7)"));
    };
    let payload_value: Option<Value> = r
        .payload
        .as_ref()
        .ok()
        .and_then(|p| serde_json::to_value(p).ok());
    let keyids: Vec<&str> = r.line.envelope.claimed_key_ids().collect();
    if out.json {
        out.json_line(&json!({
            "seq": r.line.seq,
            "segment": r.segment,
            "line": r.line_number,
            "offset": r.offset,
            "receipt_hash": r.line.receipt_hash,
            "hash_ok": r.hash_ok,
            "payload_type": r.line.envelope.payload_type,
            "signature_keyids": keyids,
            "payload": payload_value,
            "payload_error": r.payload.as_ref().err(),
        }))?;
    } else {
        out.line(format!(
            "seq {} ({} line {}, offset {})",
            r.line.seq, r.segment, r.line_number, r.offset
        ))?;
        out.line(format!(
            "receipt_hash {} ({})",
            r.line.receipt_hash,
            if r.hash_ok {
                "matches the payload bytes"
            } else {
                "DOES NOT match the payload bytes"
            }
        ))?;
        if r.line.envelope.payload_type != PAYLOAD_TYPE {
            out.line(format!(
                "payloadType {:?} (expected {PAYLOAD_TYPE:?})",
                r.line.envelope.payload_type
            ))?;
        }
        out.line(format!(
            "signed by key id(s) {} (signatures not checked here: run `wcp-hall receipts verify`)",
            keyids
                .iter()
                .map(|k| k.chars().take(16).collect::<String>())
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        match (&payload_value, &r.payload) {
            (Some(v), _) => out.json_pretty(v)?,
            (None, Err(e)) => out.line(format!("payload is not a valid receipt: {e}"))?,
            (None, Ok(_)) => {}
        }
    }
    Ok(if r.hash_ok && r.payload.is_ok() {
        exit::OK
    } else {
        exit::DENIED
    })
}

// ---- prove / verify-proof ----------------------------------------------------------------------

fn run_prove(args: ProveArgs, out: &mut Out) -> Result<u8, CliError> {
    let (dir, _) = log_dir(&args.log)?;
    let bundle = verify::prove(&dir, args.seq).map_err(|e| prove_error(e, &dir))?;
    let text = match args.format {
        ProofFormat::Json => serde_json::to_string_pretty(&bundle)
            .map_err(|e| CliError::new(exit::IOERR, "output_error", e.to_string()))?,
        ProofFormat::TlogProof => bundle.tlog_proof.trim_end_matches('\n').to_owned(),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, format!("{text}\n")).map_err(|e| {
                CliError::new(
                    exit::IOERR,
                    "output_error",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            let size = verify::parse_tlog_proof(&bundle.tlog_proof)
                .ok()
                .and_then(|t| {
                    checkpoint::SignedNote::parse(&t.checkpoint_note)
                        .and_then(|n| checkpoint::Checkpoint::parse_text(&n.text))
                        .ok()
                })
                .map_or(0, |c| c.size);
            if out.json {
                out.json_line(
                    &json!({"seq": bundle.seq, "output": path, "checkpoint_size": size}),
                )?;
            } else {
                out.line(format!(
                    "wrote the proof of seq {} (checkpoint of {size} records) to {}",
                    bundle.seq,
                    path.display()
                ))?;
            }
        }
        None => out.line(text)?,
    }
    Ok(exit::OK)
}

fn prove_error(e: ProveError, dir: &std::path::Path) -> CliError {
    match e {
        ProveError::Io(io) => CliError::new(
            exit::NOINPUT,
            "log_unreadable",
            format!("cannot read the receipt log {}: {io}", dir.display()),
        ),
        ProveError::NotCovered { .. } => CliError::new(exit::DENIED, "not_covered", e.to_string())
            .hint(
                "prove it after the next checkpoint (or stop the Hall: it checkpoints at shutdown)",
            ),
        ProveError::NoSuchRecord { .. } => CliError::new(exit::DENIED, "not_found", e.to_string()),
        ProveError::Damaged { .. } => CliError::new(exit::DENIED, "log_damaged", e.to_string()),
        ProveError::Inconsistent { .. } => {
            CliError::new(exit::DENIED, "inconsistent", e.to_string())
        }
    }
}

fn run_consistency(args: ConsistencyArgs, out: &mut Out) -> Result<u8, CliError> {
    let (dir, _) = log_dir(&args.log)?;
    let old = read_input(&args.old)?;
    let proof = verify::prove_consistency(&dir, &old).map_err(|e| prove_error(e, &dir))?;
    let text = proof.to_text();
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| {
                CliError::new(
                    exit::IOERR,
                    "output_error",
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            if out.json {
                out.json_line(&json!({"old_size": proof.old_size, "output": path}))?;
            } else {
                out.line(format!(
                    "wrote the consistency proof from {} records ({} hashes) to {}",
                    proof.old_size,
                    proof.hashes.len(),
                    path.display()
                ))?;
            }
        }
        None => out.line(text.trim_end())?,
    }
    Ok(exit::OK)
}

fn run_verify_consistency(args: VerifyConsistencyArgs, out: &mut Out) -> Result<u8, CliError> {
    let old = read_input(&args.old)?;
    let text = read_input(&args.proof)?;
    let proof = verify::ConsistencyProof::parse(&text).map_err(|e| {
        CliError::new(
            exit::DATAERR,
            "proof_malformed",
            format!("{}: not a consistency proof: {e}", args.proof.display()),
        )
    })?;
    let anchors = anchors(&args.pubkeys, &args.config)?;
    match verify::verify_consistency_proof(&old, &proof, &anchors) {
        Ok(r) => {
            if out.json {
                out.json_line(&json!({"ok": true, "consistency": r}))?;
            } else {
                out.line(format!(
                    "consistency OK: log {} grew from {} to {} records without rewriting history",
                    r.log, r.old_size, r.new_size
                ))?;
            }
            Ok(exit::OK)
        }
        Err(e) => {
            if out.json {
                out.json_line(&json!({"ok": false, "problem": e.0}))?;
            } else {
                out.line(format!("consistency FAILED: {e}"))?;
            }
            Ok(exit::DENIED)
        }
    }
}

/// The receipt a tlog-proof is about: a log line (`{"envelope", "receipt_hash", "seq"}`) or a
/// bare DSSE envelope.
fn read_receipt(path: &std::path::Path) -> Result<crate::crypto::Envelope, CliError> {
    let malformed = |why: String| {
        CliError::new(
            exit::DATAERR,
            "receipt_malformed",
            format!("{}: not a receipt: {why}", path.display()),
        )
        .hint("pass the receipt's line of receipts-*.jsonl, or its DSSE envelope")
    };
    let text = read_input(path)?;
    let value = crate::json::parse_str(text.trim_end()).map_err(|e| malformed(e.to_string()))?;
    let envelope = match value.get("envelope") {
        Some(e) => e.clone(),
        None => value,
    };
    serde_json::from_value(envelope).map_err(|e| malformed(e.to_string()))
}

fn run_verify_proof(args: VerifyProofArgs, out: &mut Out) -> Result<u8, CliError> {
    let text = read_input(&args.file)?;
    let result = if text.starts_with(verify::TLOG_PROOF_HEADER) {
        let Some(receipt) = &args.receipt else {
            return Err(CliError::new(
                exit::USAGE,
                "receipt_missing",
                format!(
                    "{} is a C2SP tlog-proof: it proves a receipt it does not hold",
                    args.file.display()
                ),
            )
            .hint("pass --receipt FILE with the receipt's log line (or its DSSE envelope)"));
        };
        let envelope = read_receipt(receipt)?;
        let anchors = anchors(&args.pubkeys, &args.config)?;
        verify::verify_tlog_proof(&text, &envelope, &anchors)
    } else {
        let bundle: ProofBundle = crate::json::from_str(&text).map_err(|e| {
            CliError::new(
                exit::DATAERR,
                "proof_malformed",
                format!("{}: not a receipt proof bundle: {e}", args.file.display()),
            )
            .hint("pass a file written by `receipts prove` (JSON, or --format tlog-proof)")
        })?;
        let anchors = anchors(&args.pubkeys, &args.config)?;
        verify::verify_proof(&bundle, &anchors)
    };
    match result {
        Ok(r) => {
            if out.json {
                out.json_line(&json!({"ok": true, "proof": r}))?;
            } else {
                out.line(format!(
                    "proof OK: seq {} ({}{}) is in log {} under the checkpoint of {} records, signed \
                     by key {}",
                    r.seq,
                    r.kind,
                    r.correlation_id
                        .as_deref()
                        .map_or(String::new(), |c| format!(", correlation_id {c}")),
                    r.log,
                    r.checkpoint_size,
                    &r.signing_key_id[..16]
                ))?;
            }
            Ok(exit::OK)
        }
        Err(e) => {
            if out.json {
                out.json_line(&json!({"ok": false, "problem": e.0}))?;
            } else {
                out.line(format!("proof FAILED: {e}"))?;
            }
            Ok(exit::DENIED)
        }
    }
}

// ---- keys rotate --------------------------------------------------------------------------------

/// `wcp-hall keys …` (wired as a top-level command).
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Generate a receipt signing key: FILE (mode 0600, never overwritten) and FILE.pub.
    Generate(GenerateArgs),
    /// Rotate the receipt signing key: a `key_rotation` receipt signed by the old and the new
    /// key, a checkpoint signed by the new key, then the new key replaces the old key file
    /// (the old private key is destroyed unless --keep-old). Stop the Hall first.
    Rotate(RotateArgs),
    /// Export a receipt or package signing key for standard tools: PKCS#8/SPKI PEM
    /// (openssl), OpenSSH (ssh-keygen) or a C2SP signed-note key (checkpoint verifiers).
    Export(super::keys_export::ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The private key file to create (its public key goes to FILE.pub).
    pub file: PathBuf,
    /// The log origin, to print the C2SP verifier key for witnesses (default
    /// `hall.<host id>/receipts`).
    #[arg(long)]
    pub origin: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub log: LogArg,
    /// The current private key file (default: `[receipts] signing_key`).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Keep a copy of the old private key here (mode 0600) instead of destroying it.
    #[arg(long, value_name = "FILE")]
    pub keep_old: Option<PathBuf>,
}

/// Runs `wcp-hall keys …`.
pub fn run_keys(cmd: KeysCommand, out: &mut Out) -> Result<u8, CliError> {
    match cmd {
        KeysCommand::Generate(a) => run_generate(a, out),
        KeysCommand::Rotate(a) => run_rotate(a, out),
        KeysCommand::Export(a) => super::keys_export::run_export(a, out),
    }
}

fn run_generate(args: GenerateArgs, out: &mut Out) -> Result<u8, CliError> {
    let key = crate::crypto::KeyPair::generate().map_err(key_error)?;
    let public = key.write(&args.file).map_err(|e| {
        let hint = super::key_write_hint(&e);
        key_error(e).hint(hint)
    })?;
    let origin = args
        .origin
        .unwrap_or_else(|| crate::receipt::log::default_origin(&host_id()));
    let vkey = checkpoint::verifier_key(&origin, &key.public());
    if out.json {
        out.json_line(&json!({
            "key": args.file,
            "public_key": public,
            "key_id": key.id(),
            "verifier_key": vkey,
        }))?;
    } else {
        out.line(format!(
            "receipt signing key {} written to {} (mode 0600)",
            short(key.id()),
            args.file.display()
        ))?;
        out.line(format!(
            "  public key: {} (give it to auditors for `receipts verify --pubkey`)",
            public.display()
        ))?;
        out.line(format!("  checkpoint verifier key: {vkey}"))?;
    }
    Ok(exit::OK)
}

fn rotate_error(e: RotateError) -> CliError {
    match e {
        RotateError::Key(k) => key_error(k),
        RotateError::Open(o) => {
            let (code, kind) = match &o {
                OpenError::Locked { .. } => (exit::DENIED, "log_in_use"),
                OpenError::Sev1 { .. } => (exit::DENIED, "sev1"),
                OpenError::KeyMismatch { .. }
                | OpenError::Origin { .. }
                | OpenError::Options(_) => (exit::CONFIG, "config_invalid"),
                OpenError::Io { .. } => (exit::IOERR, "io_error"),
            };
            let err = CliError::new(code, kind, o.to_string());
            if matches!(o, OpenError::Locked { .. }) {
                err.hint("stop the Hall, then rotate")
            } else {
                err
            }
        }
        RotateError::Log(l) => CliError::new(exit::IOERR, "log_failed", l.to_string()),
        RotateError::Io { .. } => CliError::new(exit::IOERR, "io_error", e.to_string()),
        RotateError::Refused(m) => CliError::new(exit::USAGE, "refused", m),
    }
}

fn run_rotate(args: RotateArgs, out: &mut Out) -> Result<u8, CliError> {
    let sec = if args.log.log.is_some() && args.key.is_some() {
        ReceiptsSection::from_hall_toml(&args.log.config.config).ok()
    } else {
        Some(section(&args.log.config, "--log DIR and --key FILE")?)
    };
    let key_path = match (&args.key, &sec) {
        (Some(k), _) => k.clone(),
        (None, Some(s)) if s.key_is_credential() => {
            return Err(CliError::new(
                exit::CONFIG,
                "key_is_credential",
                format!(
                    "the signing key {:?} is a systemd credential, which cannot be replaced in place",
                    s.signing_key
                ),
            )
            .hint("rotate with --key FILE pointing at a key file, then install the new key as the credential"));
        }
        (None, Some(s)) => s
            .key_path()
            .map_err(|e| CliError::new(exit::CONFIG, "config_invalid", e.to_string()))?,
        (None, None) => unreachable_config()?,
    };
    let mut opts = match &sec {
        Some(s) => s.log_options(),
        None => LogOptions::new(PathBuf::new(), &host_id()),
    };
    if let Some(d) = &args.log.log {
        opts.dir.clone_from(d);
    }
    // The log's own origin wins (a log keeps its origin for life).
    if let Ok(Some(first)) = verify::find_record(&opts.dir, &Selector::Seq(0))
        && let Ok(p) = &first.payload
    {
        opts.origin.clone_from(&p.log);
    }
    opts.checkpoint_every = 0;
    opts.checkpoint_interval = None;
    if !opts.dir.is_dir() {
        return Err(CliError::new(
            exit::NOINPUT,
            "log_missing",
            format!("no receipt log directory at {}", opts.dir.display()),
        ));
    }
    let report = rotate::rotate(opts, &key_path, args.keep_old.as_deref()).map_err(rotate_error)?;
    let old_key = match &report.old_key {
        OldKey::Destroyed => "destroyed (replaced by the new key file)".to_owned(),
        OldKey::KeptAt(p) => format!("kept at {}", p.display()),
    };
    if out.json {
        out.json_line(&json!({
            "old_key_id": report.old_key_id,
            "new_key_id": report.new_key_id,
            "rotation_seq": report.rotation_seq,
            "checkpoint_size": report.checkpoint_size,
            "old_key": match &report.old_key { OldKey::Destroyed => Value::Null, OldKey::KeptAt(p) => json!(p) },
            "key": report.key_path,
            "public_key": report.public_key_path,
            "verifier_key": report.verifier_key,
            "finished_interrupted": report.finished_interrupted,
        }))?;
    } else {
        if report.finished_interrupted {
            out.line("finished an interrupted key rotation")?;
        }
        out.line(format!(
            "receipt signing key rotated: {} -> {}",
            short(&report.old_key_id),
            short(&report.new_key_id)
        ))?;
        if let Some(seq) = report.rotation_seq {
            out.line(format!(
                "  key_rotation receipt at seq {seq}, signed by both keys; checkpoint of {} records signed by the new key",
                report.checkpoint_size.unwrap_or(seq + 1)
            ))?;
        }
        out.line(format!("  old private key: {old_key}"))?;
        out.line(format!(
            "  new key: {} (public: {})",
            report.key_path.display(),
            report.public_key_path.display()
        ))?;
        out.line(format!(
            "  checkpoint verifier key: {}",
            report.verifier_key
        ))?;
        out.line("  give auditors the new public key; either key verifies the whole log")?;
    }
    Ok(exit::OK)
}

fn unreachable_config() -> Result<PathBuf, CliError> {
    Err(CliError::new(
        exit::USAGE,
        "usage",
        "pass --key FILE or a hall.toml with [receipts] signing_key",
    ))
}
