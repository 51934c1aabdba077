//! `wcp-hall keys export`: a receipt or package signing key in the formats standard tools read
//! (PKCS#8/SPKI PEM, OpenSSH, C2SP signed-note keys). See `crypto::export`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::json;
use zeroize::Zeroizing;

use super::{CliError, ConfigArg, Out, exit};
use crate::crypto::export;
use crate::crypto::keys::{KeyFileKind, key_file_kind};
use crate::crypto::{KeyError, KeyPair, PublicKey};
use crate::receipt::config::{ReceiptsSection, host_id};
use crate::receipt::log::default_origin;
use crate::receipt::verify::short;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyFormat {
    /// PKCS#8 `PRIVATE KEY` / SPKI `PUBLIC KEY` PEM (RFC 8410; `openssl pkey` reads it).
    Pem,
    /// `openssh-key-v1` private key / `ssh-ed25519 …` public key line (`ssh-keygen` reads it).
    Openssh,
    /// C2SP signed-note signer key `PRIVATE+KEY+name+hash+…` / verifier key `name+hash+…`.
    C2sp,
}

impl KeyFormat {
    fn as_str(self) -> &'static str {
        match self {
            KeyFormat::Pem => "pem",
            KeyFormat::Openssh => "openssh",
            KeyFormat::C2sp => "c2sp",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The key file: a private key (`wcp-ed25519-private-v1`, mode 0600) or a public key
    /// (`wcp-ed25519-public-v1`, the `.pub` beside it). Receipt and package signing keys share
    /// the format.
    pub key: PathBuf,
    /// The format to write.
    #[arg(long, value_enum)]
    pub format: KeyFormat,
    /// Export the public key only (required for a `.pub` file).
    #[arg(long)]
    pub public: bool,
    /// The key name of a C2SP key (default: the configured `[receipts] origin`, else
    /// `hall.<host id>/receipts`, the name the Hall signs checkpoints with).
    #[arg(long)]
    pub name: Option<String>,
    /// The comment of an OpenSSH key (default: `wcp-hall:<key id prefix>`).
    #[arg(long)]
    pub comment: Option<String>,
    /// Write to FILE (created, never overwritten; mode 0600 for a private key, else 0644)
    /// instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

fn key_error(e: KeyError) -> CliError {
    let (code, hint) = match &e {
        KeyError::Read { .. } => (exit::NOINPUT, "check the path of the key file"),
        KeyError::Format { .. } | KeyError::Invalid { .. } => (
            exit::DATAERR,
            "pass a key file written by `wcp-hall keygen` or `wcp-hall keys generate` (or its .pub)",
        ),
        KeyError::InsecureMode { .. } => (exit::CONFIG, "run `chmod 600` on the private key file"),
        KeyError::Write { .. } | KeyError::Random(_) => {
            (exit::IOERR, "check that the directory is writable")
        }
    };
    CliError::new(code, "key_error", e.to_string()).hint(hint)
}

fn c2sp_name(args: &ExportArgs) -> String {
    if let Some(n) = &args.name {
        return n.clone();
    }
    ReceiptsSection::from_hall_toml(&args.config.config)
        .map(|s| s.log_options().origin)
        .unwrap_or_else(|_| default_origin(&host_id()))
}

fn name_error(e: crate::receipt::checkpoint::NoteError) -> CliError {
    CliError::new(exit::USAGE, "invalid_key_name", e.to_string())
        .hint("pass --name with printable ASCII and no spaces or '+', e.g. hall.example/receipts")
}

/// Runs `wcp-hall keys export`.
pub fn run_export(args: ExportArgs, out: &mut Out) -> Result<u8, CliError> {
    let kind = key_file_kind(&args.key).map_err(key_error)?;
    if kind == KeyFileKind::Public && !args.public {
        return Err(CliError::new(
            exit::USAGE,
            "public_key_only",
            format!(
                "{} is a public key file: it holds no private key to export",
                args.key.display()
            ),
        )
        .hint("pass --public to export the public key, or give the private key file"));
    }
    let comment = args.comment.clone();
    if comment.as_deref().is_some_and(|c| c.contains(['\n', '\r'])) {
        return Err(CliError::new(
            exit::USAGE,
            "invalid_comment",
            "--comment must be one line".to_owned(),
        )
        .hint("drop the line break from --comment"));
    }
    let (text, public, key_id): (Zeroizing<String>, PublicKey, String) = match kind {
        KeyFileKind::Public => {
            let public = PublicKey::read(&args.key).map_err(key_error)?;
            let text = public_text(&args, &public, comment.as_deref())?;
            let id = public.id().0.clone();
            (text, public, id)
        }
        KeyFileKind::Private => {
            let pair = KeyPair::read(&args.key).map_err(key_error)?;
            let public = pair.public();
            let text = if args.public {
                public_text(&args, &public, comment.as_deref())?
            } else {
                let comment = comment.unwrap_or_else(|| default_comment(&public));
                match args.format {
                    KeyFormat::Pem => export::private_pem(&pair),
                    KeyFormat::Openssh => export::private_openssh(&pair, &comment),
                    KeyFormat::C2sp => {
                        export::private_c2sp(&pair, &c2sp_name(&args)).map_err(name_error)?
                    }
                }
            };
            (text, public, pair.id().0.clone())
        }
    };
    let private = kind == KeyFileKind::Private && !args.public;
    if let Some(path) = &args.output {
        write_new(path, text.as_bytes(), private)?;
    }
    if out.json {
        let mut v = json!({
            "key": args.key,
            "key_id": key_id,
            "format": args.format.as_str(),
            "public": !private,
        });
        if args.format == KeyFormat::C2sp {
            v["name"] = json!(c2sp_name(&args));
            v["verifier_key"] = json!(
                export::public_c2sp(&public, &c2sp_name(&args))
                    .map_err(name_error)?
                    .trim_end()
            );
        }
        match &args.output {
            Some(p) => v["written"] = json!(p),
            None => v["text"] = json!(text.as_str()),
        }
        out.json_line(&v)?;
    } else if let Some(p) = &args.output {
        out.line(format!(
            "{} key {} written to {} ({})",
            if private { "private" } else { "public" },
            short(public.id()),
            p.display(),
            args.format.as_str()
        ))?;
    } else {
        out.line(text.trim_end_matches('\n'))?;
    }
    Ok(exit::OK)
}

fn default_comment(public: &PublicKey) -> String {
    format!("wcp-hall:{}", short(public.id()))
}

fn public_text(
    args: &ExportArgs,
    public: &PublicKey,
    comment: Option<&str>,
) -> Result<Zeroizing<String>, CliError> {
    Ok(Zeroizing::new(match args.format {
        KeyFormat::Pem => export::public_pem(public),
        KeyFormat::Openssh => export::public_openssh(
            public,
            &comment.map_or_else(|| default_comment(public), str::to_owned),
        ),
        KeyFormat::C2sp => export::public_c2sp(public, &c2sp_name(args)).map_err(name_error)?,
    }))
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), CliError> {
    let fail = |e: std::io::Error| {
        let hint = super::key_write_hint(&KeyError::Write {
            path: path.to_owned(),
            source: std::io::Error::from(e.kind()),
        });
        CliError::new(
            exit::IOERR,
            "output_error",
            format!("cannot write {}: {e}", path.display()),
        )
        .hint(hint)
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)
}
