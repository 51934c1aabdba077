//! Policy sets: the manifest, Cedar parsing, schema validation and the annotation rules, with
//! every error located at file, line and column.
//!
//! A policy set is a directory with a manifest, `policyset.toml`:
//!
//! ```toml
//! name = "wcp-default"              # a-z, 0-9, '-'
//! version = "1.0.0"                 # declared by the author
//! schema = "wcp.cedarschema"        # paths relative to the manifest
//! policies = ["baseline.cedar", "production.cedar"]
//! golden = "golden.toml"            # optional: decisions the set must reproduce
//! ```
//!
//! [`compile`] is pure: it takes the texts ([`PolicySetSources`]) and returns a
//! [`CompiledPolicySet`] only if
//! - the schema parses and accepts the exact context the Hall sends (checked with probe requests
//!   carrying every optional attribute, and none), so policies and engine cannot drift apart;
//! - every policy file parses and holds only static policies (no templates);
//! - every policy carries `@id("pol.…")` (WCP §3.2 grammar, unique in the set) and a non-empty
//!   `@reason("…")`; `@require_human("<level>")` appears only on permits and names a WCP
//!   supervisor level; no other annotation than these and `@description` is present (a typo such
//!   as `@require_humans` would silently turn a human review into an allow);
//! - the whole set validates against the schema in strict mode with no warnings.
//!
//! Every problem found is reported, not only the first. Policy ids in Cedar are the `@id`
//! values, so Cedar's own answers (determining policies, errors) name them directly.
//!
//! The policy version is `<name>@<version>+<16 hex>`, the hex being the start of a SHA-256 over
//! the schema and policy texts: two sets with the same declared version but different content
//! never share a version in a receipt.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::engine::{Effect, build_context, request_entities};
use super::request::{CallerIdentity, EnvelopeSummary, PolicyRequest, WorkerFacts};
use super::{SupervisorLevel, is_wcp_id, line_col};
use crate::registry::RiskTier;
use crate::wcp::{DataLabel, Env, QosClass, TenantRisk};

/// The manifest's file name when a directory is given.
pub const MANIFEST_FILE: &str = "policyset.toml";

/// Annotations a policy may carry.
pub const KNOWN_ANNOTATIONS: &[&str] = &["id", "reason", "require_human", "description"];

/// The longest `@reason`, in characters (reasons end up in decisions and receipts).
pub const MAX_REASON_CHARS: usize = 500;

/// The Cedar entity types and action the Hall sends.
pub(crate) const TENANT_TYPE: &str = "Wcp::Tenant";
pub(crate) const CAPABILITY_TYPE: &str = "Wcp::Capability";
pub(crate) const CAPABILITY_GROUP_TYPE: &str = "Wcp::CapabilityGroup";
pub(crate) const ACTION_TYPE: &str = "Wcp::Action";
pub(crate) const DISPATCH_ACTION: &str = "dispatch";

/// What kind of check a [`Diagnostic`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    /// The manifest (`policyset.toml`).
    Manifest,
    /// The Cedar schema file.
    Schema,
    /// Cedar syntax in a policy file.
    Syntax,
    /// The `@id` / `@reason` / `@require_human` rules.
    Annotation,
    /// Validation of the policies against the schema.
    Validation,
    /// A golden decision file.
    Golden,
    /// A profile file.
    Profile,
}

impl DiagnosticKind {
    fn as_str(self) -> &'static str {
        match self {
            DiagnosticKind::Manifest => "manifest",
            DiagnosticKind::Schema => "schema",
            DiagnosticKind::Syntax => "syntax",
            DiagnosticKind::Annotation => "annotation",
            DiagnosticKind::Validation => "validation",
            DiagnosticKind::Golden => "golden",
            DiagnosticKind::Profile => "profile",
        }
    }
}

/// One located problem: `file:line:column: kind error: message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub kind: DiagnosticKind,
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The `@id` of the policy concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at byte `offset` of `text`.
    pub fn at(
        kind: DiagnosticKind,
        file: &str,
        text: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(text, offset);
        Diagnostic {
            kind,
            file: file.to_owned(),
            line,
            column,
            message: message.into(),
            help: None,
            policy_id: None,
        }
    }

    /// Adds a hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn policy(mut self, id: Option<&str>) -> Self {
        self.policy_id = id.map(str::to_owned);
        self
    }

    /// A TOML deserialisation error, located by its span.
    pub fn from_toml(kind: DiagnosticKind, file: &str, text: &str, e: &toml::de::Error) -> Self {
        let offset = e.span().map_or(0, |s| s.start);
        Diagnostic::at(kind, file, text, offset, e.message().trim_end())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {} error: {}",
            self.file,
            self.line,
            self.column,
            self.kind.as_str(),
            self.message
        )?;
        if let Some(id) = &self.policy_id {
            write!(f, " (policy {id})")?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// Why a policy set (or a profile or golden file) was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", join_diagnostics(.0))]
    Invalid(Vec<Diagnostic>),
}

impl PolicyLoadError {
    /// The located problems (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyLoadError::Invalid(d) => d,
            PolicyLoadError::Read { .. } => &[],
        }
    }
}

fn join_diagnostics(list: &[Diagnostic]) -> String {
    list.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One source text and the name errors use for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path as written in the manifest (part of the content hash).
    pub rel: String,
    /// The path shown in errors.
    pub display: String,
    pub text: String,
}

/// Everything a policy set is compiled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySetSources {
    pub name: String,
    pub version: String,
    pub schema: SourceFile,
    pub policies: Vec<SourceFile>,
    /// The golden decision file, when the manifest names one.
    pub golden: Option<SourceFile>,
}

/// `policyset.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: toml::Spanned<String>,
    version: toml::Spanned<String>,
    schema: String,
    policies: toml::Spanned<Vec<String>>,
    #[serde(default)]
    golden: Option<String>,
}

/// Parses a manifest text. Paths stay as written.
fn parse_manifest(text: &str, file: &str) -> Result<Manifest, PolicyLoadError> {
    let m: Manifest = toml::from_str(text).map_err(|e| {
        PolicyLoadError::Invalid(vec![Diagnostic::from_toml(
            DiagnosticKind::Manifest,
            file,
            text,
            &e,
        )])
    })?;
    let mut problems = Vec::new();
    let at = |span: std::ops::Range<usize>, msg: String| {
        Diagnostic::at(DiagnosticKind::Manifest, file, text, span.start, msg)
    };
    let name = m.name.get_ref();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(at(
            m.name.span(),
            format!("name {name:?} must be 1-64 characters of a-z, 0-9 and '-'"),
        ));
    }
    let version = m.version.get_ref();
    if version.is_empty()
        || version.len() > 32
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        problems.push(at(
            m.version.span(),
            format!(
                "version {version:?} must be 1-32 characters of letters, digits, '.', '_' and '-'"
            ),
        ));
    }
    if m.policies.get_ref().is_empty() {
        problems.push(at(
            m.policies.span(),
            "policies lists no file; an empty policy set would deny every dispatch".into(),
        ));
    }
    if problems.is_empty() {
        Ok(m)
    } else {
        Err(PolicyLoadError::Invalid(problems))
    }
}

fn read(path: &Path) -> Result<String, PolicyLoadError> {
    std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The manifest path for `path` (a manifest file, or a directory holding `policyset.toml`).
pub fn manifest_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MANIFEST_FILE)
    } else {
        path.to_owned()
    }
}

/// Reads a manifest and every file it names (I/O). `path` is the manifest or its directory.
pub fn read_sources(path: &Path) -> Result<PolicySetSources, PolicyLoadError> {
    let manifest = manifest_path(path);
    let text = read(&manifest)?;
    let m = parse_manifest(&text, &manifest.display().to_string())?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let load = |rel: &str| -> Result<SourceFile, PolicyLoadError> {
        let full = base.join(rel);
        Ok(SourceFile {
            rel: rel.to_owned(),
            display: full.display().to_string(),
            text: read(&full)?,
        })
    };
    Ok(PolicySetSources {
        name: m.name.into_inner(),
        version: m.version.into_inner(),
        schema: load(&m.schema)?,
        policies: m
            .policies
            .into_inner()
            .iter()
            .map(|p| load(p))
            .collect::<Result<_, _>>()?,
        golden: m.golden.as_deref().map(load).transpose()?,
    })
}

/// What the set knows about one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyMeta {
    /// The `@id` (also the Cedar policy id).
    pub id: String,
    pub effect: Effect,
    /// The `@reason`.
    pub reason: String,
    /// The `@require_human` level (permits only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_human: Option<SupervisorLevel>,
    pub file: String,
    pub line: usize,
    pub column: usize,
}

/// A parsed, validated Cedar policy set, ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicySet {
    name: String,
    version: String,
    content_hash: String,
    policy_version: String,
    schema: Schema,
    pub(crate) policies: PolicySet,
    meta: HashMap<String, PolicyMeta>,
    order: Vec<String>,
}

impl CompiledPolicySet {
    /// The manifest's `name`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The manifest's declared `version`.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// Lowercase hex SHA-256 over the schema and policy texts.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }
    /// `<name>@<version>+<first 16 hex of the content hash>`: what decisions and receipts carry.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }
    /// The Cedar schema the set was validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// One policy's metadata by `@id`.
    pub fn policy(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }
    /// Every policy, in manifest and file order.
    pub fn policies(&self) -> impl Iterator<Item = &PolicyMeta> {
        self.order.iter().filter_map(|id| self.meta.get(id))
    }
    /// Number of policies.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    /// Whether the set holds no policy (never true for a compiled set).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Byte ranges of the statements in a Cedar policy file: from the first token after the previous
/// `;` (annotations included) to the `;`. Strings and `//` comments are skipped, and `;` occurs
/// nowhere else in Cedar policy syntax, so the n-th range is the n-th policy Cedar parsed.
pub(crate) fn statement_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                start.get_or_insert(i);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b';' => {
                if let Some(s) = start.take() {
                    spans.push(s..i + 1);
                }
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i += 1;
    }
    spans
}

/// Offset of `@key` inside `text[span]`, or the span start.
fn annotation_offset(text: &str, span: &std::ops::Range<usize>, key: &str) -> usize {
    let stmt = &text[span.clone()];
    let needle = format!("@{key}");
    stmt.match_indices(&needle)
        .find(|(i, _)| {
            !stmt[i + needle.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map_or(span.start, |(i, _)| span.start + i)
}

/// The first labelled byte offset of a miette diagnostic.
fn first_label(d: &dyn miette::Diagnostic) -> Option<usize> {
    d.labels()?.next().map(|l| l.offset())
}

fn help_of(d: &dyn miette::Diagnostic) -> Option<String> {
    d.help().map(|h| h.to_string())
}

/// Compiles a policy set from its texts. Pure.
pub fn compile(src: &PolicySetSources) -> Result<CompiledPolicySet, PolicyLoadError> {
    let mut problems = Vec::new();

    // 1. The schema, and that it accepts what the Hall sends.
    let schema = compile_schema(&src.schema, &mut problems);

    // 2. Policy files: syntax, annotations, ids.
    let mut combined = PolicySet::new();
    let mut meta: HashMap<String, PolicyMeta> = HashMap::new();
    let mut order = Vec::new();
    for file in &src.policies {
        compile_file(file, &mut combined, &mut meta, &mut order, &mut problems);
    }
    let Some(schema) = schema else {
        return Err(PolicyLoadError::Invalid(problems));
    };

    // 3. Strict validation against the schema; warnings count as errors. The policies that
    // passed step 2 are validated even when others failed, so one run reports everything.
    let validation_start = problems.len();
    let result = Validator::new(schema.clone()).validate(&combined, ValidationMode::Strict);
    let file_of = |id: &PolicyId| {
        let key: &str = id.as_ref();
        let m = meta.get(key);
        let file = m.map(|m| m.file.clone()).unwrap_or_default();
        let text = src
            .policies
            .iter()
            .find(|f| f.display == file)
            .map_or("", |f| f.text.as_str());
        (file, text, m.map(|m| m.id.clone()))
    };
    for e in result.validation_errors() {
        let (file, text, id) = file_of(e.policy_id());
        problems.push(
            Diagnostic {
                help: help_of(e),
                ..Diagnostic::at(
                    DiagnosticKind::Validation,
                    &file,
                    text,
                    first_label(e).unwrap_or(0),
                    strip_policy_prefix(&e.to_string()),
                )
            }
            .policy(id.as_deref()),
        );
    }
    for w in result.validation_warnings() {
        let (file, text, id) = file_of(w.policy_id());
        problems.push(
            Diagnostic {
                help: Some(
                    help_of(w).unwrap_or_else(|| {
                        "the Hall treats validator warnings as errors".to_owned()
                    }),
                ),
                ..Diagnostic::at(
                    DiagnosticKind::Validation,
                    &file,
                    text,
                    first_label(w).unwrap_or(0),
                    strip_policy_prefix(&w.to_string()),
                )
            }
            .policy(id.as_deref()),
        );
    }
    // The validator's order follows its hash maps; report in manifest, line and column order.
    let file_index = |f: &str| src.policies.iter().position(|p| p.display == f);
    problems[validation_start..].sort_by(|a, b| {
        (file_index(&a.file), a.line, a.column, &a.message).cmp(&(
            file_index(&b.file),
            b.line,
            b.column,
            &b.message,
        ))
    });
    if !problems.is_empty() {
        return Err(PolicyLoadError::Invalid(problems));
    }

    let content_hash = content_hash(src);
    let policy_version = format!("{}@{}+{}", src.name, src.version, &content_hash[..16]);
    Ok(CompiledPolicySet {
        name: src.name.clone(),
        version: src.version.clone(),
        content_hash,
        policy_version,
        schema,
        policies: combined,
        meta,
        order,
    })
}

/// Cedar prefixes validation messages with `for policy `policy3`, `; the id is reported apart.
fn strip_policy_prefix(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("for policy `")
        && let Some(end) = rest.find('`')
    {
        let tail = rest[end + 1..].trim_start_matches([',', ':']).trim_start();
        return tail.to_owned();
    }
    msg.to_owned()
}

fn compile_schema(file: &SourceFile, problems: &mut Vec<Diagnostic>) -> Option<Schema> {
    let at = |offset: usize, msg: String| {
        Diagnostic::at(
            DiagnosticKind::Schema,
            &file.display,
            &file.text,
            offset,
            msg,
        )
    };
    let schema = match Schema::from_cedarschema_str(&file.text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                problems.push(Diagnostic {
                    help: help_of(&w),
                    ..at(first_label(&w).unwrap_or(0), w.to_string())
                });
            }
            schema
        }
        Err(e) => {
            problems.push(Diagnostic {
                help: help_of(&e),
                ..at(first_label(&e).unwrap_or(0), e.to_string())
            });
            return None;
        }
    };
    if let Err(msg) = probe_schema(&schema) {
        problems.push(at(0, msg).help(
            "the schema must describe Wcp::Action::\"dispatch\" on Wcp::Tenant and Wcp::Capability with the context documented in policies/cedar/wcp.cedarschema",
        ));
        return None;
    }
    Some(schema)
}

/// Checks that the schema accepts the requests the engine builds: one with every optional
/// attribute present, one with none, and the capability entity with its groups.
fn probe_schema(schema: &Schema) -> Result<(), String> {
    let full = PolicyRequest {
        tenant_id: "probe".into(),
        capability_id: "cap.probe.check".into(),
        env: Env::Prod,
        data_label: DataLabel::Restricted,
        tenant_risk: TenantRisk::High,
        qos_class: QosClass::P0,
        dry_run: true,
        caller: Some(CallerIdentity {
            uid: 1,
            gid: 1,
            pid: 1,
        }),
        pyhall_blast_score: Some(50),
        chain_blast_prior: 3,
        worker: Some(WorkerFacts {
            species: "wrk.probe.checker".into(),
            risk_tier: RiskTier::Critical,
            envelope: Some(EnvelopeSummary {
                network_egress: true,
                egress_hosts: vec!["h:1".into()],
                secrets_access: vec!["s".into()],
                filesystem_writes: vec!["/w".into()],
                tools: vec!["t".into()],
            }),
            blast: Some(super::WcpBlast::new(1, 1, 1, 1, 1).map_err(|e| e.to_string())?),
        }),
    };
    let mut bare_worker = full.clone();
    if let Some(w) = bare_worker.worker.as_mut() {
        w.envelope = None;
        w.blast = None;
    }
    let minimal = PolicyRequest::new(
        "probe",
        "cap.probe.check",
        Env::Dev,
        DataLabel::Public,
        TenantRisk::Low,
        QosClass::P3,
    );
    let ty = |t: &str| EntityTypeName::from_str(t).map_err(|e| e.to_string());
    let tenant_type = ty(TENANT_TYPE)?;
    let cap_type = ty(CAPABILITY_TYPE)?;
    let group_type = ty(CAPABILITY_GROUP_TYPE)?;
    let action = EntityUid::from_type_name_and_id(ty(ACTION_TYPE)?, EntityId::new(DISPATCH_ACTION));
    let types = super::engine::ContextTypes::new().map_err(|e| e.to_string())?;
    for req in [&full, &bare_worker, &minimal] {
        let context: Context = build_context(req, &types).map_err(|e| e.to_string())?;
        Request::new(
            EntityUid::from_type_name_and_id(tenant_type.clone(), EntityId::new(&req.tenant_id)),
            action.clone(),
            EntityUid::from_type_name_and_id(cap_type.clone(), EntityId::new(&req.capability_id)),
            context,
            Some(schema),
        )
        .map_err(|e| format!("the schema does not accept the request the Hall sends: {e}"))?;
    }
    for req in [&full, &bare_worker, &minimal] {
        request_entities(
            &types,
            &cap_type,
            &group_type,
            "cap.probe.deep.check",
            req.worker.as_ref(),
            Some(schema),
        )
        .map_err(|e| {
            format!(
                "the schema does not accept the entities (capability, worker) the Hall sends: {e}"
            )
        })?;
    }
    // The tenant entity carries no attributes; a schema demanding some could never be satisfied.
    Entities::from_entities(
        [Entity::new_no_attrs(
            EntityUid::from_type_name_and_id(tenant_type, EntityId::new("probe")),
            Default::default(),
        )],
        Some(schema),
    )
    .map_err(|e| format!("the schema does not accept the tenant entity the Hall sends: {e}"))?;
    Ok(())
}

fn compile_file(
    file: &SourceFile,
    combined: &mut PolicySet,
    meta: &mut HashMap<String, PolicyMeta>,
    order: &mut Vec<String>,
    problems: &mut Vec<Diagnostic>,
) {
    let at = |kind, offset: usize, msg: String| {
        Diagnostic::at(kind, &file.display, &file.text, offset, msg)
    };
    let parsed = match PolicySet::from_str(&file.text) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors.iter() {
                problems.push(Diagnostic {
                    help: help_of(e),
                    ..at(
                        DiagnosticKind::Syntax,
                        first_label(e).unwrap_or(0),
                        e.to_string(),
                    )
                });
            }
            return;
        }
    };
    if parsed.num_of_templates() > 0 {
        problems.push(
            at(
                DiagnosticKind::Syntax,
                0,
                "policy templates (?principal / ?resource slots) are not supported".into(),
            )
            .help("write static policies; the Hall links no templates"),
        );
        return;
    }
    if parsed.is_empty() {
        problems.push(
            at(DiagnosticKind::Syntax, 0, "the file holds no policy".into())
                .help("remove it from the manifest or add policies"),
        );
        return;
    }
    // Cedar names the policies of one text policy0, policy1, … in source order.
    let mut policies: Vec<_> = parsed.policies().collect();
    policies.sort_by_key(|p| {
        let id: &str = p.id().as_ref();
        id.strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    let spans = statement_spans(&file.text);
    let spans_match = spans.len() == policies.len();
    for (n, policy) in policies.iter().enumerate() {
        let span = if spans_match {
            spans[n].clone()
        } else {
            0..file.text.len()
        };
        let ann = |key: &str| annotation_offset(&file.text, &span, key);
        let before = problems.len();
        for (key, _) in policy.annotations() {
            if !KNOWN_ANNOTATIONS.contains(&key) {
                problems.push(
                    at(
                        DiagnosticKind::Annotation,
                        ann(key),
                        format!("unknown annotation @{key}"),
                    )
                    .help(format!(
                        "the Hall reads only @{}",
                        KNOWN_ANNOTATIONS.join(", @")
                    )),
                );
            }
        }
        let id = policy.annotation("id").map(str::to_owned);
        match &id {
            None => problems.push(
                at(
                    DiagnosticKind::Annotation,
                    span.start,
                    "policy has no @id".into(),
                )
                .help("add @id(\"pol.<domain>.<rule>\"); decisions and receipts name policies by it"),
            ),
            Some(v) if !is_wcp_id(v, "pol") => problems.push(
                at(
                    DiagnosticKind::Annotation,
                    ann("id"),
                    format!("@id({v:?}) is not a WCP policy id"),
                )
                .help("pol. followed by 1-3 dot-separated segments of a-z, 0-9 and '-', at most 64 characters; example: pol.prod.restricted-no-egress"),
            ),
            Some(v) => {
                if let Some(first) = meta.get(v) {
                    problems.push(
                        at(
                            DiagnosticKind::Annotation,
                            ann("id"),
                            format!("@id({v:?}) is already used"),
                        )
                        .help(format!(
                            "first used at {}:{}:{}; policy ids are unique in a set",
                            first.file, first.line, first.column
                        )),
                    );
                }
            }
        }
        let effect = match policy.effect() {
            cedar_policy::Effect::Permit => Effect::Permit,
            cedar_policy::Effect::Forbid => Effect::Forbid,
        };
        let reason = policy.annotation("reason").map(str::trim).unwrap_or("");
        if reason.is_empty() {
            problems.push(
                at(
                    DiagnosticKind::Annotation,
                    if policy.annotation("reason").is_some() { ann("reason") } else { span.start },
                    "policy has no @reason".into(),
                )
                .help("add @reason(\"…\"): the sentence a denied or escalated caller and the receipt will show"),
            );
        } else if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control)
        {
            problems.push(at(
                DiagnosticKind::Annotation,
                ann("reason"),
                format!(
                    "@reason must be at most {MAX_REASON_CHARS} characters without control characters"
                ),
            ));
        }
        let mut require_human = None;
        if let Some(level) = policy.annotation("require_human") {
            if effect == Effect::Forbid {
                problems.push(
                    at(
                        DiagnosticKind::Annotation,
                        ann("require_human"),
                        "@require_human on a forbid".into(),
                    )
                    .help("a forbid always denies and no human can override it; put @require_human on a permit"),
                );
            }
            match SupervisorLevel::parse(level) {
                Some(l) => require_human = Some(l),
                None => problems.push(
                    at(
                        DiagnosticKind::Annotation,
                        ann("require_human"),
                        format!("@require_human({level:?}) is not a WCP supervisor level"),
                    )
                    .help(format!("one of: {}", SupervisorLevel::NAMES.join(", "))),
                ),
            }
        }
        if problems.len() > before {
            continue;
        }
        let Some(id) = id else { continue };
        let (line, column) = line_col(&file.text, span.start);
        if let Err(e) = combined.add(policy.new_id(PolicyId::new(&id))) {
            problems.push(at(DiagnosticKind::Annotation, span.start, e.to_string()));
            continue;
        }
        order.push(id.clone());
        meta.insert(
            id.clone(),
            PolicyMeta {
                id,
                effect,
                reason: reason.to_owned(),
                require_human,
                file: file.display.clone(),
                line,
                column,
            },
        );
    }
}

fn content_hash(src: &PolicySetSources) -> String {
    let mut h = Sha256::new();
    h.update(b"wcp-hall-policyset/1\n");
    for f in std::iter::once(&src.schema).chain(&src.policies) {
        h.update(f.rel.as_bytes());
        h.update(b"\n");
        h.update(f.text.len().to_string().as_bytes());
        h.update(b"\n");
        h.update(f.text.as_bytes());
    }
    crate::common::hex(&h.finalize())
}

#[cfg(test)]
pub(crate) mod tests;
