//! The policy gate (WCP §5.8, issue 6): Cedar behind the [`PolicyEngine`] trait, WCP profiles
//! (`prof.*`) and the WCP five-dimension blast radius.
//!
//! A dispatch is described by a [`PolicyRequest`] (tenant, capability, the RouteInput facts, the
//! caller's kernel identity, the selected worker and its blast score). A [`CedarEngine`]
//! evaluates it against a validated Cedar policy set and answers a [`Verdict`]: ALLOW, DENY or
//! REQUIRE_HUMAN with a [`SupervisorLevel`], the policy version, and the ids and reasons of the
//! policies that decided (their own `@id` / `@reason` annotations). [`HallGate`] combines that
//! with the environment's [`Profile`] (blast maxima, the action over them) and adapts it to the
//! router's `PolicyGate` trait.
//!
//! | module | concept | pure? |
//! |---|---|---|
//! | [`request`] | the [`PolicyRequest`] and its worker facts | yes |
//! | [`source`] | policy set manifests, Cedar parsing, schema validation, annotation rules, located errors | compile: yes; `load_*`: reads files |
//! | [`engine`] | the [`PolicyEngine`] trait, the Cedar implementation, the reloadable [`PolicyStore`] | evaluation: yes |
//! | [`partition`] | which policies can apply per (env, label, risk, QoS) cell, decided at load | yes |
//! | [`blast`] | the WCP five-dimension blast score, chain accumulation, the check against a profile | yes |
//! | [`profile`] | `prof.*` profiles (TOML), their loader and the env → profile selection | parsing: yes; `load_*`: reads files |
//! | [`golden`] | golden decision files and their runner | parsing and running: yes |
//! | [`gate`] | [`HallGate`]: profile + blast + engine, and the router adapter | yes |
//!
//! # Threat model
//! Policy files, profiles and golden files are written by operators and may be wrong; requests
//! come from agent hosts and may be hostile. What this module stops:
//! - **A policy that silently never fires** (a misspelt attribute, `Wcp::Env::"production"`, a
//!   string compared with a number): every policy is validated against the WCP schema in strict
//!   mode and warnings are errors, so the set does not load (test `schema_violation_*`).
//! - **A broken edit taking the gate down or open**: a reload that fails to parse, validate or
//!   pass its golden decisions leaves the previous set active (`reload_keeps_previous_set_*`).
//! - **Untraceable decisions**: every policy must carry a unique `@id("pol.…")` and a `@reason`,
//!   and unknown annotations are refused (a misspelt `@require_humans` would otherwise turn a
//!   human review into a plain allow).
//! - **Fail open on evaluation errors**: Cedar skips a policy whose evaluation errors, which for a
//!   `forbid` would allow; the engine denies instead whenever any policy errored.
//! - **A human approval overriding a prohibition**: `forbid` always wins; REQUIRE_HUMAN only comes
//!   from permits.
//! - **Resource exhaustion by hostile ids**: capability group expansion is bounded, the entity
//!   cache is bounded, and the chain accumulator refuses new chains when full instead of evicting
//!   (eviction would let a caller reset its own chain total).

pub mod blast;
pub mod engine;
pub mod gate;
pub mod golden;
pub mod partition;
pub mod profile;
pub mod request;
pub mod source;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use blast::{BlastAssessment, ChainBlast, WcpBlast};
pub use engine::{CedarEngine, Determining, Effect, Outcome, PolicyEngine, PolicyStore, Verdict};
pub use gate::{GateDecision, GateReason, HallGate};
pub use profile::{EnvProfiles, Profile, ProfileSet};
pub use request::{CallerIdentity, EnvelopeSummary, PolicyRequest, WorkerFacts};
pub use source::{CompiledPolicySet, Diagnostic, PolicyLoadError};

/// Who must look at a dispatch before (or while) it runs (WCP §5.8), lowest first.
///
/// The order matters: when several sources ask for a human, the highest level wins.
/// `advisory` means "a human is notified, execution proceeds"; every other level blocks the
/// dispatch until a human resolves it (see [`SupervisorLevel::blocks_execution`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SupervisorLevel {
    Advisory,
    Gatekeeper,
    Executor,
    IncidentCommander,
}

impl SupervisorLevel {
    /// Every wire spelling, lowest level first.
    pub const NAMES: &'static [&'static str] =
        &["advisory", "gatekeeper", "executor", "incident_commander"];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorLevel::Advisory => "advisory",
            SupervisorLevel::Gatekeeper => "gatekeeper",
            SupervisorLevel::Executor => "executor",
            SupervisorLevel::IncidentCommander => "incident_commander",
        }
    }

    /// Parses the exact wire spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "advisory" => Some(SupervisorLevel::Advisory),
            "gatekeeper" => Some(SupervisorLevel::Gatekeeper),
            "executor" => Some(SupervisorLevel::Executor),
            "incident_commander" => Some(SupervisorLevel::IncidentCommander),
            _ => None,
        }
    }

    /// Whether the worker must not run until a human resolves the approval. Only `advisory`
    /// lets execution proceed (the human is notified).
    pub fn blocks_execution(self) -> bool {
        self != SupervisorLevel::Advisory
    }
}

impl fmt::Display for SupervisorLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SupervisorLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SupervisorLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SupervisorLevel::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "supervisor level {text:?} is not one of: {}",
                SupervisorLevel::NAMES.join(", ")
            ))
        })
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`. An offset past the end
/// (or inside a multi-byte character) is clamped to the nearest earlier character boundary.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Whether `id` follows WCP §3.2 with the given kind prefix: 2–4 dot-separated segments of
/// lowercase `a-z`, `0-9` and `-`, at most 64 characters, the first segment equal to `kind`.
/// The Hall validates strictly what it and its operators mint (policy and profile ids).
pub fn is_wcp_id(id: &str, kind: &str) -> bool {
    let segments: Vec<&str> = id.split('.').collect();
    id.len() <= 64
        && (2..=4).contains(&segments.len())
        && segments[0] == kind
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_levels_are_ordered_and_round_trip() {
        let all: Vec<SupervisorLevel> = SupervisorLevel::NAMES
            .iter()
            .map(|n| SupervisorLevel::parse(n).unwrap())
            .collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        for (l, n) in all.iter().zip(SupervisorLevel::NAMES) {
            assert_eq!(l.as_str(), *n);
        }
        assert_eq!(SupervisorLevel::parse("Gatekeeper"), None);
        assert!(!SupervisorLevel::Advisory.blocks_execution());
        assert!(SupervisorLevel::Gatekeeper.blocks_execution());
    }

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 7), (2, 4)); // after the two-byte é
        assert_eq!(line_col(text, 6), (2, 3)); // inside é: clamped back
        assert_eq!(line_col(text, 999), (3, 2));
    }

    #[test]
    fn wcp_ids_follow_section_3_2() {
        assert!(is_wcp_id("pol.prod.restricted-no-egress", "pol"));
        assert!(is_wcp_id("prof.dev.permissive", "prof"));
        assert!(!is_wcp_id("pol.prod.a.b.c", "pol"), "5 segments");
        assert!(!is_wcp_id("pol", "pol"), "1 segment");
        assert!(!is_wcp_id("pol.prod_x", "pol"), "underscore");
        assert!(!is_wcp_id("pol.Prod", "pol"), "uppercase");
        assert!(!is_wcp_id("prof.dev.x", "pol"), "wrong kind");
        assert!(!is_wcp_id("pol..x", "pol"), "empty segment");
        assert!(!is_wcp_id(&format!("pol.{}", "a".repeat(70)), "pol"));
    }
}
