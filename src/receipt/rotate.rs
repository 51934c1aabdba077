//! `wcp-hall keys rotate`: replace the receipt signing key with a fresh one, crash-safely.
//!
//! Steps, each durable before the next:
//! 1. generate the new key into `<key>.next` (mode 0600) and `<key>.next.pub`;
//! 2. open the log with the current key (this runs recovery and, after a fast open from the
//!    resume snapshot, waits for the full verification of the older records), append a `key_rotation` record
//!    signed by the old *and* the new key, then a checkpoint signed by the new key;
//! 3. if asked, copy the old private key to `--keep-old`; then `rename(<key>.next, <key>)`
//!    (which also destroys the old key file: forward integrity — whoever steals the host later
//!    cannot sign receipts with the retired key) and `<key>.next.pub` → `<key>.pub`.
//!
//! A crash after step 2 leaves a log whose current key is in `<key>.next`: the Hall refuses to
//! start with the old key ([`super::log::OpenError::KeyMismatch`]) and running `keys rotate`
//! again finishes step 3 instead of rotating twice. A crash before step 2 leaves an unused
//! `<key>.next`, which the next run uses.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::checkpoint::verifier_key;
use super::log::{LogOptions, OpenError, ReceiptLog};
use super::store;
use crate::crypto::keys::public_path_for;
use crate::crypto::{KeyError, KeyId, KeyPair, PublicKey};

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Log(#[from] super::log::LogError),
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// What happened to the retired private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldKey {
    /// Overwritten by the new key (the default).
    Destroyed,
    /// Copied here before it was replaced.
    KeptAt(PathBuf),
}

/// The result of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    pub old_key_id: KeyId,
    pub new_key_id: KeyId,
    /// Seq of the `key_rotation` record (`None` when an interrupted rotation was finished).
    pub rotation_seq: Option<u64>,
    /// Size of the checkpoint written right after it.
    pub checkpoint_size: Option<u64>,
    pub old_key: OldKey,
    pub key_path: PathBuf,
    pub public_key_path: PathBuf,
    /// The C2SP verifier key of the new key (for witnesses and note tooling).
    pub verifier_key: String,
    pub finished_interrupted: bool,
}

/// `<key>.next`.
pub fn next_path_for(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".next");
    PathBuf::from(s)
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RotateError + 'a {
    move |source| RotateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Rotates the log's signing key stored at `key_path`; see the module documentation.
pub fn rotate(
    opts: LogOptions,
    key_path: &Path,
    keep_old: Option<&Path>,
) -> Result<RotateReport, RotateError> {
    let old = KeyPair::read(key_path)?;
    let next_path = next_path_for(key_path);
    let next_pub = public_path_for(&next_path);
    if let Some(k) = keep_old
        && k.exists()
    {
        return Err(RotateError::Refused(format!(
            "--keep-old {} exists; choose a new file name",
            k.display()
        )));
    }
    let pending = match KeyPair::read(&next_path) {
        Ok(k) => Some(k),
        Err(KeyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let origin = opts.origin.clone();
    // A run that stopped between installing the new private key and its public file.
    if pending.is_none() && PublicKey::read(&next_pub).is_ok_and(|p| p.id() == old.id()) {
        let key_pub = public_path_for(key_path);
        fs::rename(&next_pub, &key_pub).map_err(io_err("install", &key_pub))?;
        store::sync_dir(parent(key_path)).map_err(io_err("sync", key_path))?;
        return Ok(RotateReport {
            old_key_id: old.id().clone(),
            new_key_id: old.id().clone(),
            rotation_seq: None,
            checkpoint_size: None,
            old_key: OldKey::Destroyed,
            key_path: key_path.to_owned(),
            public_key_path: key_pub,
            verifier_key: verifier_key(&origin, &old.public()),
            finished_interrupted: true,
        });
    }
    match ReceiptLog::open(opts.clone(), old) {
        Ok((log, _)) => {
            // A fast open (resume snapshot) left older records unverified: a key is rotated
            // only over a log verified end to end, so verify them here, at this tool's priority
            // (an idle-priority check could wait indefinitely on a busy machine).
            if let super::log::BackgroundCheck::Failed { reason, .. } = log.check_skipped_now() {
                return Err(RotateError::Refused(format!(
                    "sev1 integrity event in the receipt log: {reason}. The key was not rotated"
                )));
            }
            // The current key is the log's key: rotate (to the pending key, if one was left
            // behind by a run that stopped before step 2).
            let new = match pending {
                Some(k) => k,
                None => {
                    if next_pub.exists() {
                        fs::remove_file(&next_pub).map_err(io_err("remove stale", &next_pub))?;
                    }
                    let k = KeyPair::generate()?;
                    k.write(&next_path)?;
                    store::sync_dir(parent(&next_path)).map_err(io_err("sync", &next_path))?;
                    k
                }
            };
            let old_id = log.status().key_id;
            let new_id = new.id().clone();
            let new_public = new.public();
            let rotation = log.rotate_key(new)?;
            let cp = log.shutdown()?;
            let old_key = finish(key_path, &next_path, keep_old)?;
            Ok(RotateReport {
                old_key_id: old_id,
                new_key_id: new_id,
                rotation_seq: Some(rotation.seq),
                checkpoint_size: cp.map(|c| c.size),
                old_key,
                key_path: key_path.to_owned(),
                public_key_path: public_path_for(key_path),
                verifier_key: verifier_key(&origin, &new_public),
                finished_interrupted: false,
            })
        }
        Err(OpenError::KeyMismatch {
            configured,
            current,
            retired: true,
        }) if pending.as_ref().is_some_and(|k| *k.id() == current) => {
            // Step 2 happened, step 3 did not: finish it.
            let new_public = pending.map(|k| k.public());
            let old_key = finish(key_path, &next_path, keep_old)?;
            Ok(RotateReport {
                old_key_id: configured,
                new_key_id: current,
                rotation_seq: None,
                checkpoint_size: None,
                old_key,
                key_path: key_path.to_owned(),
                public_key_path: public_path_for(key_path),
                verifier_key: new_public
                    .map(|k| verifier_key(&origin, &k))
                    .unwrap_or_default(),
                finished_interrupted: true,
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Step 3: keep (optionally) and replace the old key with the new one, durably.
fn finish(
    key_path: &Path,
    next_path: &Path,
    keep_old: Option<&Path>,
) -> Result<OldKey, RotateError> {
    let old_key = match keep_old {
        Some(dest) => {
            let bytes =
                zeroize::Zeroizing::new(fs::read(key_path).map_err(io_err("read", key_path))?);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dest)
                .map_err(io_err("create", dest))?;
            io::Write::write_all(&mut f, &bytes).map_err(io_err("write", dest))?;
            f.sync_all().map_err(io_err("sync", dest))?;
            store::sync_dir(parent(dest)).map_err(io_err("sync", dest))?;
            OldKey::KeptAt(dest.to_owned())
        }
        None => OldKey::Destroyed,
    };
    fs::rename(next_path, key_path).map_err(io_err("install the new key at", key_path))?;
    let next_pub = public_path_for(next_path);
    let key_pub = public_path_for(key_path);
    if next_pub.exists() {
        fs::rename(&next_pub, &key_pub).map_err(io_err("install", &key_pub))?;
    } else {
        // The public file was lost: derive it again from the installed key.
        KeyPair::read(key_path)?.public().write(&key_pub)?;
    }
    store::sync_dir(parent(key_path)).map_err(io_err("sync", key_path))?;
    Ok(old_key)
}
