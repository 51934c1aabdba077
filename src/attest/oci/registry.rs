//! Talking to the registry through `oci-client`: push, tag resolution, and the bounded pull
//! into staging followed by verification (see the parent module's threat model).

use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::layer::{self, LayerError};
use super::{
    ANNOTATION_FORMAT, ANNOTATION_SPECIES, ANNOTATION_TREE_DIGEST, ANNOTATION_WORKER_ID,
    EMPTY_CONFIG, EMPTY_CONFIG_TYPE, MAX_MANIFEST_BYTES, MAX_SIGNATURES, OCI_INDEX_TYPE,
    OCI_MANIFEST_TYPE, OciRef, PACKAGE_ARTIFACT_TYPE, PACKAGE_LAYER_TYPE, RefError,
    SIGNATURE_ARTIFACT_TYPE_V1, SIGNATURE_ARTIFACT_TYPE_V2, auth, is_sha256_digest,
};
use crate::attest::manifest_v1;
use crate::attest::manifest_v2::{self, Statement};
use crate::attest::report::AttestCode;
use crate::attest::tree::TreeLimits;
use crate::attest::{
    HmacKey, PackageStore, TrustPolicy, UtcTime, VerificationReport, VerifyRequest, verify_package,
};
use crate::common::hex;

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Runs a future on a private current-thread runtime on its own thread, so this works from
/// synchronous code and from inside the daemon's runtime alike.
fn block_on<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The client for one reference: TLS unless plain HTTP was asked for a loopback registry.
fn client_for(r: &OciRef, plain_http: bool, timeout: Duration) -> Result<Client, String> {
    // reqwest is built without a default TLS provider (see `install_tls_provider`).
    crate::common::install_tls_provider();
    let protocol = if plain_http {
        if !r.is_loopback() {
            return Err(format!(
                "plain HTTP is allowed only for a loopback registry (127.0.0.0/8, ::1, localhost), not {}",
                r.host
            ));
        }
        ClientProtocol::HttpsExcept(vec![r.host.clone()])
    } else {
        ClientProtocol::Https
    };
    Ok(Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        read_timeout: Some(timeout),
        connect_timeout: Some(Duration::from_secs(10)),
        user_agent: concat!("wcp-hall/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    }))
}

// ------------------------------------------------------------------------------------------
// Push
// ------------------------------------------------------------------------------------------

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The signed manifest (default: `<dir>/manifest.sig`, else `<dir>/manifest.json`).
    pub manifest_path: Option<PathBuf>,
    /// Plain HTTP (loopback registries only).
    pub plain_http: bool,
    pub limits: TreeLimits,
    pub timeout: Duration,
}

/// What a push published.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pushed {
    /// `oci://HOST/REPO@sha256:…`: what a record's `package_ref` names.
    pub reference: String,
    pub digest: String,
    pub tag: Option<String>,
    pub signature_digest: String,
    pub tree_digest: String,
    pub format: &'static str,
    pub worker_id: String,
    pub worker_species_id: String,
    pub layer_bytes: u64,
    pub files: u64,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error("cannot read the signed manifest {path}: {problem}")]
    Manifest { path: String, problem: String },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(
        "the package tree hashes to {computed}, but its manifest signs {signed}: it changed after signing"
    )]
    TreeMismatch { computed: String, signed: String },
    #[error("registry {host}: {problem}")]
    Registry { host: String, problem: String },
}

impl PushError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PushError::TreeMismatch { .. } => {
                Some("re-sign the package with `wcp-hall attest sign`")
            }
            PushError::Manifest { .. } => Some(
                "sign the package first (`wcp-hall attest sign`), or name the manifest with --manifest",
            ),
            PushError::Registry { .. } => Some(
                "check the registry address, that it is up, and the credentials (docker config or the oci-auth.json systemd credential)",
            ),
            _ => None,
        }
    }
}

/// The claims of a signed manifest that a push needs (not verified here: the puller verifies).
struct Claims {
    format: &'static str,
    artifact_type: &'static str,
    tree_digest: String,
    worker_id: String,
    species: String,
}

fn read_claims(path: &Path) -> Result<(Vec<u8>, Claims), PushError> {
    let err = |problem: String| PushError::Manifest {
        path: path.display().to_string(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > manifest_v1::MAX_MANIFEST_BYTES {
        return Err(err("larger than 1 MiB".into()));
    }
    let value = crate::json::parse_slice(&bytes).map_err(|e| err(e.to_string()))?;
    let claims = if value.get("payloadType").is_some() {
        let env = manifest_v2::parse_envelope(&bytes).map_err(|e| err(e.to_string()))?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&env.payload)
            .map_err(|e| err(format!("payload is not base64: {e}")))?;
        let st = Statement::parse(&payload).map_err(|e| err(e.to_string()))?;
        Claims {
            format: "awp.v2",
            artifact_type: SIGNATURE_ARTIFACT_TYPE_V2,
            tree_digest: st.package_hash().to_owned(),
            worker_id: st.predicate.worker_id.clone(),
            species: st.predicate.worker_species_id.clone(),
        }
    } else {
        let s = |k: &str| {
            value
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| err(format!("awp.v1 manifest without {k}")))
        };
        Claims {
            format: "awp.v1",
            artifact_type: SIGNATURE_ARTIFACT_TYPE_V1,
            tree_digest: s("package_hash")?,
            worker_id: s("worker_id")?,
            species: s("worker_species_id")?,
        }
    };
    Ok((bytes, claims))
}

fn default_manifest(dir: &Path) -> PathBuf {
    let sig = dir.join(manifest_v2::DEFAULT_FILE_NAME);
    if sig.exists() {
        sig
    } else {
        dir.join("manifest.json")
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()})
}

/// The package manifest's exact bytes (deterministic: fixed key order, no timestamps).
fn package_manifest(
    layer: &layer::PackInfo,
    claims_format: &str,
    tree: &str,
    worker: &str,
    species: &str,
) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_TYPE,
        "artifactType": PACKAGE_ARTIFACT_TYPE,
        "config": descriptor(EMPTY_CONFIG_TYPE, EMPTY_CONFIG),
        "layers": [{
            "mediaType": PACKAGE_LAYER_TYPE,
            "digest": layer.layer_digest,
            "size": layer.layer_size,
        }],
        "annotations": {
            ANNOTATION_FORMAT: claims_format,
            ANNOTATION_SPECIES: species,
            ANNOTATION_TREE_DIGEST: tree,
            ANNOTATION_WORKER_ID: worker,
        },
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

/// A file as a stream of 1 MiB chunks (read on the push's own thread).
fn file_stream(
    file: std::fs::File,
) -> impl futures_util::Stream<Item = oci_client::errors::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 20];
        match std::io::Read::read(&mut file, &mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            // The error ends the stream.
            Err(e) => Some((Err(e.into()), None)),
        }
    })
}

/// Pushes a signed package directory as an OCI artifact (see the module documentation).
pub fn push(dir: &Path, reference: &str, opts: &PushOptions) -> Result<Pushed, PushError> {
    let r = OciRef::parse(reference)?;
    let manifest_path = opts
        .manifest_path
        .clone()
        .unwrap_or_else(|| default_manifest(dir));
    let (sig_bytes, claims) = read_claims(&manifest_path)?;
    // The layer goes to an unnamed temporary file and is streamed from there: a large package
    // costs disk, not memory.
    let tmp_err = |source: std::io::Error| LayerError::Write {
        path: "a temporary file".into(),
        source,
    };
    let mut tmp = tempfile::tempfile().map_err(tmp_err)?;
    let packed = layer::pack_into(dir, &opts.limits, std::io::BufWriter::new(&mut tmp))?;
    tmp.seek(std::io::SeekFrom::Start(0)).map_err(tmp_err)?;
    let mut layer_file = Some(tmp);
    if packed.tree_digest != claims.tree_digest {
        return Err(PushError::TreeMismatch {
            computed: packed.tree_digest,
            signed: claims.tree_digest,
        });
    }
    let reg = |problem: String| PushError::Registry {
        host: r.host.clone(),
        problem,
    };
    let client = client_for(&r, opts.plain_http, opts.timeout).map_err(reg)?;
    let credentials = auth::for_host(&r.host).map_err(|e| reg(e.to_string()))?;
    let manifest = package_manifest(
        &packed,
        claims.format,
        &packed.tree_digest,
        &claims.worker_id,
        &claims.species,
    );
    let digest = sha256_digest(&manifest);
    let sig_manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_TYPE,
        "artifactType": claims.artifact_type,
        "config": descriptor(EMPTY_CONFIG_TYPE, EMPTY_CONFIG),
        "layers": [descriptor(claims.artifact_type, &sig_bytes)],
        "subject": descriptor(OCI_MANIFEST_TYPE, &manifest),
        "annotations": {ANNOTATION_FORMAT: claims.format},
    }))
    .unwrap_or_default();
    let sig_digest = sha256_digest(&sig_manifest);
    let result: Result<(), String> = block_on(|| {
        let rt = runtime().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let e = |err: oci_client::errors::OciDistributionError| err.to_string();
            let target = r.to_client_ref();
            client
                .auth(&target, &credentials, RegistryOperation::Push)
                .await
                .map_err(&e)?;
            client
                .push_blob(&target, EMPTY_CONFIG, &sha256_digest(EMPTY_CONFIG))
                .await
                .map_err(&e)?;
            client
                .push_blob_stream(
                    &target,
                    file_stream(layer_file.take().ok_or("layer file used twice")?),
                    &packed.layer_digest,
                    Some(packed.layer_size),
                )
                .await
                .map_err(&e)?;
            let ct = |t: &str| t.parse().map_err(|_| "bad content type".to_string());
            let package_target = match &r.tag {
                Some(_) => target.clone(),
                None => r.pinned(&digest).to_client_ref(),
            };
            client
                .push_manifest_raw(&package_target, manifest.clone(), ct(OCI_MANIFEST_TYPE)?)
                .await
                .map_err(&e)?;
            client
                .push_blob(&target, sig_bytes.clone(), &sha256_digest(&sig_bytes))
                .await
                .map_err(&e)?;
            client
                .push_manifest_raw(
                    &r.pinned(&sig_digest).to_client_ref(),
                    sig_manifest.clone(),
                    ct(OCI_MANIFEST_TYPE)?,
                )
                .await
                .map_err(&e)?;
            // The referrers tag scheme, for registries without the referrers API: an index
            // tagged `sha256-<hex>` listing the signature, merged with what is there.
            let fallback = oci_client::Reference::with_tag(
                r.host.clone(),
                r.repository.clone(),
                digest.replace(':', "-"),
            );
            let mut entries: Vec<Value> = match client
                .pull_manifest_raw(&fallback, &credentials, &[OCI_INDEX_TYPE])
                .await
            {
                Ok((body, _)) => crate::json::parse_slice(&body)
                    .ok()
                    .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let mut entry = descriptor(OCI_MANIFEST_TYPE, &sig_manifest);
            entry["artifactType"] = json!(claims.artifact_type);
            entry["annotations"] = json!({ANNOTATION_FORMAT: claims.format});
            if !entries
                .iter()
                .any(|m| m.get("digest").and_then(Value::as_str) == Some(sig_digest.as_str()))
            {
                entries.push(entry);
            }
            let index = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX_TYPE,
                "manifests": entries,
            }))
            .unwrap_or_default();
            client
                .push_manifest_raw(&fallback, index, ct(OCI_INDEX_TYPE)?)
                .await
                .map_err(&e)?;
            Ok(())
        })
    });
    result.map_err(reg)?;
    Ok(Pushed {
        reference: r.pinned(&digest).to_string(),
        digest,
        tag: r.tag.clone(),
        signature_digest: sig_digest,
        tree_digest: packed.tree_digest,
        format: claims.format,
        worker_id: claims.worker_id,
        worker_species_id: claims.species,
        layer_bytes: packed.layer_size,
        files: packed.files,
    })
}

// ------------------------------------------------------------------------------------------
// Pull
// ------------------------------------------------------------------------------------------

/// How to pull and what to verify against.
pub struct PullOptions<'a> {
    pub plain_http: bool,
    pub trust: &'a TrustPolicy,
    pub hmac_key: Option<&'a HmacKey>,
    pub store: &'a PackageStore,
    /// Where verified package sources are kept, one `sha256-<hex>` directory per artifact
    /// (Hall-owned; the Hall re-verifies from there at dispatch, never from the registry).
    pub sources_dir: &'a Path,
    /// The expected worker ids (a record's); `None` takes the manifest annotations' (the
    /// signature must still name them, for a key trusted for their namespace).
    pub worker_id: Option<&'a str>,
    pub worker_species_id: Option<&'a str>,
    /// Largest package layer accepted (bytes, checked before and during the download).
    pub max_layer_bytes: u64,
    pub timeout: Duration,
    /// Called with (bytes so far, layer size) while the layer downloads.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
    pub now: UtcTime,
}

/// A pulled, verified package.
#[derive(Debug)]
pub struct Pulled {
    /// The reference pinned to the package manifest's digest.
    pub reference: OciRef,
    pub digest: String,
    /// The verified source under `sources_dir`.
    pub package_root: PathBuf,
    pub manifest_path: PathBuf,
    pub report: VerificationReport,
    /// The artifact was already in `sources_dir` (and verified again, nothing downloaded).
    pub reused: bool,
}

/// Why a pull did not end in a verified package.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Ref(#[from] RefError),
    /// The registry could not be reached or did not answer usefully (nothing was refused).
    #[error("registry {host}: {problem}")]
    Unavailable { host: String, problem: String },
    /// What the registry served was refused before verification (digest, size, shape).
    #[error("{code}: {message}")]
    Refused { code: AttestCode, message: String },
    /// The package did not verify against the trust policy.
    #[error("{}: {}", .0.code_str().unwrap_or("ATTEST"), .0.message)]
    Verification(Box<VerificationReport>),
    #[error("cannot write the staging directory under {path}: {source}")]
    Staging {
        path: String,
        source: std::io::Error,
    },
}

impl PullError {
    /// The attestation code of a refusal.
    pub fn code(&self) -> Option<AttestCode> {
        match self {
            PullError::Refused { code, .. } => Some(*code),
            PullError::Verification(r) => r.code,
            _ => None,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            PullError::Unavailable { .. } => Some(
                "check that the registry is up and reachable, and the credentials (docker config or the oci-auth.json systemd credential); a Hall keeps using its stored copy meanwhile",
            ),
            PullError::Refused { .. } => Some(
                "the registry served something that is not the signed package this reference pins: do not trust this registry copy; re-push the signed package",
            ),
            PullError::Verification(_) => Some(
                "the package does not verify against the trust policy (signer, namespace, ids, expiry, bans): check who signed it and the policy (`wcp-hall attest check-trust`)",
            ),
            _ => None,
        }
    }
}

fn refused(code: AttestCode, message: impl Into<String>) -> PullError {
    PullError::Refused {
        code,
        message: message.into(),
    }
}

/// What a pull downloaded, before verification.
struct Fetched {
    digest: String,
    layer_path: PathBuf,
    worker_id: Option<String>,
    species: Option<String>,
    signatures: Vec<(&'static str, Vec<u8>)>,
}

fn parse_manifest(body: &[u8], what: &str) -> Result<Value, PullError> {
    let v = crate::json::parse_slice(body).map_err(|e| {
        refused(
            AttestCode::ManifestInvalid,
            format!("{what} is not JSON: {e}"),
        )
    })?;
    if v.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(refused(
            AttestCode::ManifestInvalid,
            format!("{what} is not an OCI manifest (schemaVersion 2)"),
        ));
    }
    Ok(v)
}

/// The one layer of a manifest: media type, digest, size (checked against `max`).
fn single_layer(
    v: &Value,
    media_type: &str,
    max: u64,
    what: &str,
) -> Result<(String, u64), PullError> {
    let layers = v.get("layers").and_then(Value::as_array);
    let Some([l]) = layers.map(Vec::as_slice) else {
        return Err(refused(
            AttestCode::ManifestInvalid,
            format!("{what} must have exactly one layer"),
        ));
    };
    if l.get("mediaType").and_then(Value::as_str) != Some(media_type) {
        return Err(refused(
            AttestCode::ManifestInvalid,
            format!("{what}'s layer is not {media_type}"),
        ));
    }
    let digest = l
        .get("digest")
        .and_then(Value::as_str)
        .filter(|d| is_sha256_digest(d))
        .ok_or_else(|| {
            refused(
                AttestCode::ManifestInvalid,
                format!("{what}'s layer digest is not sha256"),
            )
        })?;
    let size = l.get("size").and_then(Value::as_u64).ok_or_else(|| {
        refused(
            AttestCode::ManifestInvalid,
            format!("{what}'s layer has no size"),
        )
    })?;
    if size > max {
        return Err(refused(
            AttestCode::TreeUnsafe,
            format!("{what}'s layer is {size} bytes, over the limit of {max}"),
        ));
    }
    Ok((digest.to_owned(), size))
}

/// Streams a blob into `out`, refusing more bytes than `size` and any digest mismatch.
async fn download(
    client: &Client,
    target: &oci_client::Reference,
    digest: &str,
    size: u64,
    out: &mut dyn std::io::Write,
    progress: Option<&(dyn Fn(u64, u64) + Sync)>,
    host: &str,
) -> Result<(), PullError> {
    let desc = OciDescriptor {
        media_type: String::new(),
        digest: digest.to_owned(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    };
    let unavailable = |problem: String| PullError::Unavailable {
        host: host.to_owned(),
        problem,
    };
    let mut stream = client
        .pull_blob_stream(target, &desc)
        .await
        .map_err(|e| unavailable(format!("blob {digest}: {e}")))?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut failure = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                got = got.saturating_add(bytes.len() as u64);
                if got > size {
                    return Err(refused(
                        AttestCode::HashMismatch,
                        format!(
                            "blob {digest}: the registry sent more than the {size} bytes its manifest gives"
                        ),
                    ));
                }
                hasher.update(&bytes);
                out.write_all(&bytes).map_err(|e| PullError::Staging {
                    path: "blob".into(),
                    source: e,
                })?;
                if let Some(p) = progress {
                    p(got, size);
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    let actual = format!("sha256:{}", hex(&hasher.finalize()));
    if got == size && actual != digest {
        return Err(refused(
            AttestCode::HashMismatch,
            format!("blob {digest}: the registry served bytes hashing to {actual}"),
        ));
    }
    if let Some(problem) = failure {
        return Err(unavailable(format!(
            "blob {digest} interrupted after {got} of {size} bytes: {problem}"
        )));
    }
    if got != size {
        return Err(unavailable(format!(
            "blob {digest} ended after {got} of {size} bytes"
        )));
    }
    Ok(())
}

/// A registry session for a pull: the oci-client (authentication, blobs) and a plain HTTP
/// client for the manifest and referrers requests, whose bodies are read with a bound.
struct Session<'a> {
    client: &'a Client,
    http: reqwest::Client,
    credentials: &'a RegistryAuth,
    r: &'a OciRef,
    scheme: &'static str,
    /// The bearer token the registry issued for pulls, if it uses tokens.
    token: Option<String>,
}

impl<'a> Session<'a> {
    async fn open(
        client: &'a Client,
        credentials: &'a RegistryAuth,
        r: &'a OciRef,
        plain_http: bool,
        timeout: Duration,
    ) -> Result<Session<'a>, PullError> {
        let unavailable = |problem: String| PullError::Unavailable {
            host: r.host.clone(),
            problem,
        };
        let token = client
            .auth(&r.to_client_ref(), credentials, RegistryOperation::Pull)
            .await
            .map_err(|e| unavailable(format!("authentication: {e}")))?;
        let http = reqwest::Client::builder()
            .read_timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wcp-hall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Session {
            client,
            http,
            credentials,
            r,
            scheme: if plain_http { "http" } else { "https" },
            token,
        })
    }

    fn host(&self) -> &str {
        &self.r.host
    }

    fn unavailable(&self, problem: String) -> PullError {
        PullError::Unavailable {
            host: self.r.host.clone(),
            problem,
        }
    }

    /// GETs `/v2/<repo>/<path>` and reads at most [`MAX_MANIFEST_BYTES`] of the body
    /// (`None` for a 404). A longer body is refused as soon as it passes the bound.
    async fn get_bounded(&self, path: &str, accept: &str) -> Result<Option<Vec<u8>>, PullError> {
        let registry = self.r.to_client_ref().resolve_registry().to_owned();
        let url = format!(
            "{}://{registry}/v2/{}/{path}",
            self.scheme, self.r.repository
        );
        let mut req = self.http.get(&url).header("Accept", accept);
        req = match (&self.token, self.credentials) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        };
        let mut resp = req
            .send()
            .await
            .map_err(|e| self.unavailable(format!("{url}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("{url}: HTTP {status}")));
        }
        let too_big = || {
            refused(
                AttestCode::ManifestInvalid,
                format!("{url}: the answer is larger than {MAX_MANIFEST_BYTES} bytes"),
            )
        };
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_MANIFEST_BYTES)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.unavailable(format!("{url}: {e}")))?
        {
            if (body.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// Fetches a manifest by digest or tag, bounded; by digest, its bytes must hash to it.
    async fn manifest(
        &self,
        reference: &str,
        accept: &str,
    ) -> Result<(Vec<u8>, String), PullError> {
        let body = self
            .get_bounded(&format!("manifests/{reference}"), accept)
            .await?
            .ok_or_else(|| self.unavailable(format!("manifest {reference} not found")))?;
        let digest = sha256_digest(&body);
        if is_sha256_digest(reference) && reference != digest {
            return Err(refused(
                AttestCode::HashMismatch,
                format!("manifest {reference}: the registry served a manifest hashing to {digest}"),
            ));
        }
        Ok((body, digest))
    }

    /// The referrers of `digest`: the OCI 1.1 referrers API, else (404) the referrers tag
    /// scheme; no index at all is no referrers.
    async fn referrers(&self, digest: &str) -> Result<Vec<Value>, PullError> {
        let body = match self
            .get_bounded(&format!("referrers/{digest}"), OCI_INDEX_TYPE)
            .await?
        {
            Some(b) => Some(b),
            None => {
                self.get_bounded(
                    &format!("manifests/{}", digest.replace(':', "-")),
                    OCI_INDEX_TYPE,
                )
                .await?
            }
        };
        let Some(body) = body else {
            return Ok(Vec::new());
        };
        let index = crate::json::parse_slice(&body).map_err(|e| {
            refused(
                AttestCode::ManifestInvalid,
                format!("the referrers index of {digest} is not JSON: {e}"),
            )
        })?;
        Ok(index
            .get("manifests")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

async fn fetch(
    session: &Session<'_>,
    opts: &PullOptions<'_>,
    staging: &Path,
) -> Result<Fetched, PullError> {
    let r = session.r;
    let host = session.host();
    let first = r
        .digest
        .clone()
        .or(r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (body, digest) = session.manifest(&first, OCI_MANIFEST_TYPE).await?;
    let m = parse_manifest(&body, "the package manifest")?;
    if m.get("artifactType").and_then(Value::as_str) != Some(PACKAGE_ARTIFACT_TYPE) {
        return Err(refused(
            AttestCode::ManifestInvalid,
            format!("{r} is not a wcp-hall worker package (artifactType {PACKAGE_ARTIFACT_TYPE})"),
        ));
    }
    let (layer_digest, layer_size) = single_layer(
        &m,
        PACKAGE_LAYER_TYPE,
        opts.max_layer_bytes,
        "the package manifest",
    )?;
    let annotation = |k: &str| {
        m.get("annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let pinned = r.pinned(&digest).to_client_ref();

    // Signatures: the referrers API, or the tag scheme.
    let mut candidates: Vec<(String, &'static str)> = session
        .referrers(&digest)
        .await?
        .iter()
        .filter_map(|e| {
            let kind = match e.get("artifactType").and_then(Value::as_str) {
                Some(SIGNATURE_ARTIFACT_TYPE_V2) => SIGNATURE_ARTIFACT_TYPE_V2,
                Some(SIGNATURE_ARTIFACT_TYPE_V1) => SIGNATURE_ARTIFACT_TYPE_V1,
                _ => return None,
            };
            let d = e.get("digest").and_then(Value::as_str)?;
            is_sha256_digest(d).then(|| (d.to_owned(), kind))
        })
        .collect();
    candidates.sort();
    candidates.dedup();
    candidates.truncate(MAX_SIGNATURES);
    let mut signatures = Vec::new();
    for (sig_digest, kind) in candidates {
        let (body, _) = session.manifest(&sig_digest, OCI_MANIFEST_TYPE).await?;
        let sm = parse_manifest(&body, "a signature manifest")?;
        // A signature manifest that is not about this package (swapped in) is ignored.
        if sm
            .get("subject")
            .and_then(|s| s.get("digest"))
            .and_then(Value::as_str)
            != Some(digest.as_str())
            || sm.get("artifactType").and_then(Value::as_str) != Some(kind)
        {
            continue;
        }
        let (blob, size) = single_layer(
            &sm,
            kind,
            manifest_v1::MAX_MANIFEST_BYTES,
            "a signature manifest",
        )?;
        let mut bytes = Vec::new();
        download(session.client, &pinned, &blob, size, &mut bytes, None, host).await?;
        signatures.push((kind, bytes));
    }
    if signatures.is_empty() {
        return Err(refused(
            AttestCode::SignatureMissing,
            format!(
                "{r} has no signature attached (no referrer of type {SIGNATURE_ARTIFACT_TYPE_V2} or {SIGNATURE_ARTIFACT_TYPE_V1})"
            ),
        ));
    }

    let layer_path = staging.join("layer.tar");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&layer_path)
        .map_err(|e| PullError::Staging {
            path: staging.display().to_string(),
            source: e,
        })?;
    download(
        session.client,
        &pinned,
        &layer_digest,
        layer_size,
        &mut file,
        opts.progress,
        host,
    )
    .await?;
    file.flush().map_err(|e| PullError::Staging {
        path: layer_path.display().to_string(),
        source: e,
    })?;
    Ok(Fetched {
        digest,
        layer_path,
        worker_id: annotation(ANNOTATION_WORKER_ID),
        species: annotation(ANNOTATION_SPECIES),
        signatures,
    })
}

/// Resolves a reference to its package manifest's digest (a tag is looked up once; a digest is
/// checked to name a worker package). Records pin what this returns.
pub fn resolve(reference: &str, plain_http: bool, timeout: Duration) -> Result<OciRef, PullError> {
    let r = OciRef::parse(reference)?;
    let unavailable = |problem: String| PullError::Unavailable {
        host: r.host.clone(),
        problem,
    };
    let client = client_for(&r, plain_http, timeout).map_err(unavailable)?;
    let credentials = auth::for_host(&r.host).map_err(|e| unavailable(e.to_string()))?;
    let digest = block_on(|| {
        let rt = runtime().map_err(|e| unavailable(e.to_string()))?;
        rt.block_on(async {
            let session = Session::open(&client, &credentials, &r, plain_http, timeout).await?;
            let first = r
                .digest
                .clone()
                .or(r.tag.clone())
                .unwrap_or_else(|| "latest".into());
            let (body, digest) = session.manifest(&first, OCI_MANIFEST_TYPE).await?;
            let m = parse_manifest(&body, "the package manifest")?;
            if m.get("artifactType").and_then(Value::as_str) != Some(PACKAGE_ARTIFACT_TYPE) {
                return Err(refused(
                    AttestCode::ManifestInvalid,
                    format!("{r} is not a wcp-hall worker package"),
                ));
            }
            Ok(digest)
        })
    })?;
    Ok(r.pinned(&digest))
}

fn entry_name(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Verifies an unpacked package directory; returns the report and the manifest path used.
fn verify_dir(
    dir: &Path,
    opts: &PullOptions<'_>,
    worker_id: &str,
    species: &str,
) -> (VerificationReport, PathBuf) {
    let manifest_path = default_manifest(dir);
    let report = verify_package(&VerifyRequest {
        package_root: dir,
        manifest_path: &manifest_path,
        worker_id,
        worker_species_id: species,
        trust: Some(opts.trust),
        hmac_key: opts.hmac_key,
        store: Some(opts.store),
        limits: *opts.store.limits(),
        now: opts.now,
    });
    (report, manifest_path)
}

/// Pulls `reference` (which should be pinned by digest; a tag is resolved first) into staging,
/// verifies it against the trust policy, and on success publishes the store copy and keeps
/// the source under `sources_dir`. A source already there is verified again without a
/// download, so a Hall whose registry is down still loads what it pulled before.
pub fn pull(reference: &str, opts: &PullOptions<'_>) -> Result<Pulled, PullError> {
    let r = OciRef::parse(reference)?;
    let staging_err = |source: std::io::Error| PullError::Staging {
        path: opts.sources_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(opts.sources_dir).map_err(staging_err)?;
    if let (Some(d), Some(w), Some(s)) = (&r.digest, opts.worker_id, opts.worker_species_id) {
        let existing = opts.sources_dir.join(entry_name(d));
        if existing.is_dir() {
            let (report, manifest_path) = verify_dir(&existing, opts, w, s);
            if report.ok {
                return Ok(Pulled {
                    reference: r.clone(),
                    digest: d.clone(),
                    package_root: existing,
                    manifest_path,
                    report,
                    reused: true,
                });
            }
            // A stored source that no longer verifies is replaced by a fresh pull.
            let _ = std::fs::remove_dir_all(&existing);
        }
    }
    let unavailable = |problem: String| PullError::Unavailable {
        host: r.host.clone(),
        problem,
    };
    let client = client_for(&r, opts.plain_http, opts.timeout).map_err(unavailable)?;
    let credentials = auth::for_host(&r.host).map_err(|e| unavailable(e.to_string()))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(opts.sources_dir)
        .map_err(staging_err)?;
    let fetched = block_on(|| {
        let rt = runtime().map_err(|e| unavailable(e.to_string()))?;
        rt.block_on(async {
            let session =
                Session::open(&client, &credentials, &r, opts.plain_http, opts.timeout).await?;
            fetch(&session, opts, staging.path()).await
        })
    })?;
    let worker_id = opts
        .worker_id
        .map(str::to_owned)
        .or(fetched.worker_id.clone())
        .unwrap_or_default();
    let species = opts
        .worker_species_id
        .map(str::to_owned)
        .or(fetched.species.clone())
        .unwrap_or_default();
    let mut last = None;
    for (kind, bytes) in &fetched.signatures {
        // A fresh tree per signature: the manifest file is the only difference.
        let pkg = staging
            .path()
            .join(format!("pkg-{}", hex(&Sha256::digest(bytes))));
        std::fs::create_dir(&pkg).map_err(staging_err)?;
        if let Err(e) = layer::unpack_file(&fetched.layer_path, &pkg, opts.store.limits()) {
            let code = match &e {
                LayerError::Write { .. } => AttestCode::StoreFailed,
                _ => AttestCode::TreeUnsafe,
            };
            return Err(refused(code, e.to_string()));
        }
        let name = if *kind == SIGNATURE_ARTIFACT_TYPE_V2 {
            manifest_v2::DEFAULT_FILE_NAME
        } else {
            "manifest.json"
        };
        std::fs::write(pkg.join(name), bytes).map_err(staging_err)?;
        let (report, _) = verify_dir(&pkg, opts, &worker_id, &species);
        if !report.ok {
            opts.store.forget(&pkg);
            last = Some(report);
            continue;
        }
        // Verified and published in the store: keep the source, content-addressed.
        let dest = opts.sources_dir.join(entry_name(&fetched.digest));
        opts.store.forget(&pkg);
        if !dest.exists() {
            std::fs::rename(&pkg, &dest).map_err(staging_err)?;
        }
        let (report, manifest_path) = verify_dir(&dest, opts, &worker_id, &species);
        if !report.ok {
            return Err(PullError::Verification(Box::new(report)));
        }
        return Ok(Pulled {
            reference: r.pinned(&fetched.digest),
            digest: fetched.digest,
            package_root: dest,
            manifest_path,
            report,
            reused: false,
        });
    }
    match last {
        Some(report) => Err(PullError::Verification(Box::new(report))),
        None => Err(refused(
            AttestCode::SignatureMissing,
            "no signature to verify",
        )),
    }
}
