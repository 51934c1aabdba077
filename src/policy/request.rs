//! What the policy gate is asked: one dispatch, as typed Rust values.
//!
//! A [`PolicyRequest`] is built by the router adapter (from the RouteInput, the selected worker's
//! registry record and the chain accumulator) or read from a golden file (TOML, same field
//! names, unknown fields refused). The engine turns it into a Cedar request whose shape the WCP
//! schema (`policies/cedar/wcp.cedarschema`) describes.

use serde::{Deserialize, Deserializer, Serialize};

use super::blast::WcpBlast;
use crate::registry::{NetworkEgress, PrivilegeEnvelope, RegistryRecord, RiskTier};
use crate::wcp::{DataLabel, Env, QosClass, TenantRisk};

/// One dispatch decision to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    /// The signatory tenant (principal `Wcp::Tenant::"<tenant_id>"`).
    pub tenant_id: String,
    /// The capability requested (resource `Wcp::Capability::"<capability_id>"`).
    pub capability_id: String,
    pub env: Env,
    pub data_label: DataLabel,
    pub tenant_risk: TenantRisk,
    pub qos_class: QosClass,
    #[serde(default)]
    pub dry_run: bool,
    /// The caller's kernel identity (SO_PEERCRED) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerIdentity>,
    /// PyHall's 0–100 blast heuristic, when the router computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyhall_blast_score: Option<i64>,
    /// Blast already spent by earlier dispatches with the same correlation id.
    #[serde(default)]
    pub chain_blast_prior: u32,
    /// The selected worker species, when the gate runs after candidate selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerFacts>,
}

/// The caller as the kernel reports it for a Unix-socket peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerIdentity {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// What the registry says about the selected worker species.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFacts {
    /// `wrk.*`.
    pub species: String,
    #[serde(deserialize_with = "risk_tier")]
    pub risk_tier: RiskTier,
    /// `None` when the record declares no privilege envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<EnvelopeSummary>,
    /// `None` when the record declares no blast radius. Written in the registry's form
    /// (`{data, network, financial, time, reversibility = "reversible"}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blast: Option<WcpBlast>,
}

/// The declared privilege envelope (WCP §6), flattened for policies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeSummary {
    /// `false` for `network_egress = "none"`.
    pub network_egress: bool,
    /// The `host:port` allowlist (empty without egress).
    pub egress_hosts: Vec<String>,
    pub secrets_access: Vec<String>,
    pub filesystem_writes: Vec<String>,
    pub tools: Vec<String>,
}

impl EnvelopeSummary {
    /// Summarises a registry record's envelope.
    pub fn from_envelope(env: &PrivilegeEnvelope) -> Self {
        let egress_hosts = match &env.network_egress {
            NetworkEgress::None => Vec::new(),
            NetworkEgress::Allowlist(list) => list.clone(),
        };
        EnvelopeSummary {
            network_egress: !env.network_egress.is_none(),
            egress_hosts,
            secrets_access: env.secrets_access.clone(),
            filesystem_writes: env.filesystem_writes.clone(),
            tools: env.tools.clone(),
        }
    }
}

impl WorkerFacts {
    /// The facts a registry record declares.
    pub fn from_record(record: &RegistryRecord) -> Self {
        WorkerFacts {
            species: record.worker_species_id.clone(),
            risk_tier: record.risk_tier,
            envelope: record
                .privilege_envelope
                .as_ref()
                .map(EnvelopeSummary::from_envelope),
            blast: record.blast_radius.as_ref().map(WcpBlast::from_radius),
        }
    }
}

impl PolicyRequest {
    /// A request with the RouteInput facts only (no caller, no worker, nothing spent).
    pub fn new(
        tenant_id: impl Into<String>,
        capability_id: impl Into<String>,
        env: Env,
        data_label: DataLabel,
        tenant_risk: TenantRisk,
        qos_class: QosClass,
    ) -> Self {
        PolicyRequest {
            tenant_id: tenant_id.into(),
            capability_id: capability_id.into(),
            env,
            data_label,
            tenant_risk,
            qos_class,
            dry_run: false,
            caller: None,
            pyhall_blast_score: None,
            chain_blast_prior: 0,
            worker: None,
        }
    }

    /// The chain total including this worker, when the worker declares a blast radius.
    pub fn chain_blast_total(&self) -> Option<u32> {
        let blast = self.worker.as_ref()?.blast.as_ref()?;
        Some(self.chain_blast_prior.saturating_add(blast.total()))
    }
}

fn risk_tier<'de, D: Deserializer<'de>>(d: D) -> Result<RiskTier, D::Error> {
    let text = String::deserialize(d)?;
    RiskTier::parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "risk tier {text:?} is not one of: {}",
            RiskTier::NAMES.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryRecord;

    #[test]
    fn worker_facts_come_from_the_registry_record() {
        let record = RegistryRecord::from_json_str(
            r#"{"worker_id": "org.example.fetcher.1", "worker_species_id": "wrk.web.fetcher",
                "capabilities": ["cap.web.fetch"], "risk_tier": "high",
                "privilege_envelope": {"network_egress": ["example.org:443"], "secrets_access": ["k"]},
                "blast_radius": {"data": 1, "network": 3, "financial": 0, "time": 1, "reversibility": "partially reversible"}}"#,
        )
        .unwrap();
        let facts = WorkerFacts::from_record(&record);
        assert_eq!(facts.species, "wrk.web.fetcher");
        assert_eq!(facts.risk_tier, RiskTier::High);
        let env = facts.envelope.as_ref().unwrap();
        assert!(env.network_egress);
        assert_eq!(env.egress_hosts, vec!["example.org:443"]);
        assert_eq!(env.secrets_access, vec!["k"]);
        assert_eq!(facts.blast.unwrap().total(), 7);
        let mut req = PolicyRequest::new(
            "acme",
            "cap.web.fetch",
            Env::Prod,
            DataLabel::Public,
            TenantRisk::Low,
            QosClass::P2,
        );
        assert_eq!(req.chain_blast_total(), None);
        req.worker = Some(facts);
        req.chain_blast_prior = 5;
        assert_eq!(req.chain_blast_total(), Some(12));
    }

    #[test]
    fn requests_read_from_toml_refuse_unknown_fields_and_bad_values() {
        let ok: PolicyRequest = toml::from_str(
            r#"tenant_id = "acme"
capability_id = "cap.doc.summarize"
env = "prod"
data_label = "INTERNAL"
tenant_risk = "low"
qos_class = "P2"
caller = { uid = 1000, gid = 1000, pid = 42 }
[worker]
species = "wrk.doc.summarizer"
risk_tier = "medium"
blast = { data = 1, network = 0, financial = 0, time = 1, reversibility = "irreversible" }
"#,
        )
        .unwrap();
        assert_eq!(ok.worker.unwrap().blast.unwrap().total(), 7);
        for (bad, why) in [
            ("envv = \"prod\"", "unknown field"),
            ("env = \"production\"", "production"),
            (
                "[worker]\nspecies = \"w\"\nrisk_tier = \"extreme\"",
                "extreme",
            ),
            (
                "[worker]\nspecies = \"w\"\nrisk_tier = \"low\"\nblast = { data = 6, network = 0, financial = 0, time = 0, reversibility = \"reversible\" }",
                "out of range",
            ),
        ] {
            let base = "tenant_id = \"a\"\ncapability_id = \"cap.x.y\"\ndata_label = \"PUBLIC\"\ntenant_risk = \"low\"\nqos_class = \"P2\"\n";
            let text = if bad.starts_with("env =") || bad.starts_with("envv") {
                format!("{base}{bad}\n")
            } else {
                format!("{base}env = \"dev\"\n{bad}\n")
            };
            let err = toml::from_str::<PolicyRequest>(&text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
