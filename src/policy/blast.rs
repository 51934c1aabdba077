//! The WCP blast radius (spec §7): five dimensions scored 0–5 from the worker's registry record,
//! summed, additive along a chain of dispatches sharing a correlation id, and compared with the
//! profile's maximum for the environment.
//!
//! This is not PyHall's 0–100 heuristic over the request (`router::blast`), which is kept for
//! compatibility; both reach the policy context (`pyhall_blast_score` and `worker.blast`).
//!
//! # Reversibility
//! The registry records `reversibility` as free text. It is mapped to 0–5 following the spec's
//! table (0 reversible, 1–2 partially reversible, 3–4 difficult, 5 irreversible), taking the
//! upper end of each band so a worker is never scored lower than its own description. Matching
//! ignores case, surrounding blanks and treats `-` and spaces as `_`:
//!
//! | text | score |
//! |---|---|
//! | `reversible`, `fully_reversible` | 0 |
//! | `mostly_reversible` | 1 |
//! | `partially_reversible`, `partial` | 2 |
//! | `difficult`, `difficult_to_reverse`, `hard_to_reverse` | 4 |
//! | `irreversible`, `not_reversible`, `permanent` | 5 |
//! | a single digit `0`–`5` | that digit |
//! | anything else (including `none`, which could mean either extreme) | 5, reported as unrecognised |
//!
//! # Chains
//! [`ChainBlast`] is the small accumulator the daemon owns: blast spent per correlation id. The
//! gate is asked with the *prior* total (`PolicyRequest::chain_blast_prior`) and compares prior +
//! this worker with the maximum; the daemon records a dispatch only once it really executes (a
//! dry run or a denied request spends nothing). The accumulator is bounded and refuses new
//! chains when full rather than evicting live ones: eviction would let a caller reset its own
//! chain total by flooding the table with fresh correlation ids.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::SupervisorLevel;
use super::engine::Outcome;
use super::profile::{BlastPolicy, OverMaxAction, UndeclaredAction};
use crate::registry::BlastRadius;
use crate::wcp::Env;

/// The largest value of one dimension.
pub const MAX_DIMENSION: u8 = 5;

/// The longest correlation id the chain accumulator keeps, in bytes (a UUID is 36).
pub const MAX_CORRELATION_ID_BYTES: usize = 128;

/// A worker's WCP blast score: five dimensions 0–5 each (reversibility already mapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "BlastRadiusSpec", into = "BlastScoreOut")]
pub struct WcpBlast {
    pub data: u8,
    pub network: u8,
    pub financial: u8,
    pub time: u8,
    pub reversibility: u8,
}

/// Why a blast score could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlastError {
    #[error("blast radius {dimension} = {value} is out of range; each dimension is 0 to 5")]
    OutOfRange { dimension: &'static str, value: u8 },
}

impl WcpBlast {
    /// Checks the range of every dimension.
    pub fn new(
        data: u8,
        network: u8,
        financial: u8,
        time: u8,
        reversibility: u8,
    ) -> Result<Self, BlastError> {
        for (dimension, value) in [
            ("data", data),
            ("network", network),
            ("financial", financial),
            ("time", time),
            ("reversibility", reversibility),
        ] {
            if value > MAX_DIMENSION {
                return Err(BlastError::OutOfRange { dimension, value });
            }
        }
        Ok(WcpBlast {
            data,
            network,
            financial,
            time,
            reversibility,
        })
    }

    /// Scores a registry record's blast radius. Dimensions above 5 (which a validated record
    /// cannot hold) are clamped to 5 rather than trusted.
    pub fn from_radius(radius: &BlastRadius) -> Self {
        let c = |v: u8| v.min(MAX_DIMENSION);
        WcpBlast {
            data: c(radius.data),
            network: c(radius.network),
            financial: c(radius.financial),
            time: c(radius.time),
            reversibility: reversibility_score(&radius.reversibility).score,
        }
    }

    /// The sum of the five dimensions (0–25).
    pub fn total(&self) -> u32 {
        u32::from(self.data)
            + u32::from(self.network)
            + u32::from(self.financial)
            + u32::from(self.time)
            + u32::from(self.reversibility)
    }
}

/// The registry form (`reversibility` as text), used to read golden files and requests.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlastRadiusSpec {
    data: u8,
    network: u8,
    financial: u8,
    time: u8,
    reversibility: String,
}

impl TryFrom<BlastRadiusSpec> for WcpBlast {
    type Error = BlastError;
    fn try_from(s: BlastRadiusSpec) -> Result<Self, BlastError> {
        WcpBlast::new(
            s.data,
            s.network,
            s.financial,
            s.time,
            reversibility_score(&s.reversibility).score,
        )
    }
}

/// The scored form written out (reversibility as its number, plus the total).
#[derive(Serialize)]
struct BlastScoreOut {
    data: u8,
    network: u8,
    financial: u8,
    time: u8,
    reversibility: u8,
    total: u32,
}

impl From<WcpBlast> for BlastScoreOut {
    fn from(b: WcpBlast) -> Self {
        BlastScoreOut {
            data: b.data,
            network: b.network,
            financial: b.financial,
            time: b.time,
            reversibility: b.reversibility,
            total: b.total(),
        }
    }
}

/// A mapped reversibility text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReversibilityScore {
    pub score: u8,
    /// `false` when the text matched nothing in the table (scored 5).
    pub recognised: bool,
}

/// Maps a registry `reversibility` text to 0–5 (table in the module documentation).
pub fn reversibility_score(text: &str) -> ReversibilityScore {
    let norm: String = text
        .trim()
        .chars()
        .map(|c| match c {
            '-' | ' ' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let score = match norm.as_str() {
        "reversible" | "fully_reversible" => Some(0),
        "mostly_reversible" => Some(1),
        "partially_reversible" | "partial" => Some(2),
        "difficult" | "difficult_to_reverse" | "hard_to_reverse" => Some(4),
        "irreversible" | "not_reversible" | "permanent" => Some(5),
        d if d.len() == 1 => d.parse::<u8>().ok().filter(|&n| n <= MAX_DIMENSION),
        _ => None,
    };
    ReversibilityScore {
        score: score.unwrap_or(MAX_DIMENSION),
        recognised: score.is_some(),
    }
}

/// Why the chain accumulator refused to record a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("a blast chain needs a correlation id; the dispatch has none")]
    MissingCorrelationId,
    #[error(
        "correlation id is {len} bytes; the blast chain accumulator keeps ids up to {MAX_CORRELATION_ID_BYTES} bytes"
    )]
    CorrelationIdTooLong { len: usize },
    #[error(
        "the blast chain accumulator is full ({capacity} open chains); finish or expire chains before starting new ones"
    )]
    Full { capacity: usize },
}

/// One open chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainState {
    /// Blast spent so far (saturating sum of the recorded scores).
    pub total: u32,
    /// Dispatches recorded.
    pub dispatches: u32,
    /// The caller's clock at the last record, in milliseconds.
    pub last_ms: u64,
}

/// Blast spent per correlation id (WCP §7: "A (3) calling B (4) = 7"). Pure: the caller passes
/// the time, so expiry is deterministic and testable.
#[derive(Debug, Clone)]
pub struct ChainBlast {
    chains: HashMap<String, ChainState>,
    capacity: usize,
}

impl ChainBlast {
    /// An empty accumulator holding at most `capacity` open chains.
    pub fn new(capacity: usize) -> Self {
        ChainBlast {
            chains: HashMap::new(),
            capacity,
        }
    }

    /// Blast already spent by `correlation_id` (0 for an unknown chain).
    pub fn prior(&self, correlation_id: &str) -> u32 {
        self.chains.get(correlation_id).map_or(0, |c| c.total)
    }

    /// The chain total if a worker scoring `score` were dispatched now.
    pub fn projected(&self, correlation_id: &str, score: u32) -> u32 {
        self.prior(correlation_id).saturating_add(score)
    }

    /// The state of an open chain.
    pub fn get(&self, correlation_id: &str) -> Option<&ChainState> {
        self.chains.get(correlation_id)
    }

    /// Records an executed dispatch and returns the new chain total.
    pub fn record(
        &mut self,
        correlation_id: &str,
        score: u32,
        now_ms: u64,
    ) -> Result<u32, ChainError> {
        if correlation_id.trim().is_empty() {
            return Err(ChainError::MissingCorrelationId);
        }
        if correlation_id.len() > MAX_CORRELATION_ID_BYTES {
            return Err(ChainError::CorrelationIdTooLong {
                len: correlation_id.len(),
            });
        }
        if let Some(state) = self.chains.get_mut(correlation_id) {
            state.total = state.total.saturating_add(score);
            state.dispatches = state.dispatches.saturating_add(1);
            state.last_ms = state.last_ms.max(now_ms);
            return Ok(state.total);
        }
        if self.chains.len() >= self.capacity {
            return Err(ChainError::Full {
                capacity: self.capacity,
            });
        }
        self.chains.insert(
            correlation_id.to_owned(),
            ChainState {
                total: score,
                dispatches: 1,
                last_ms: now_ms,
            },
        );
        Ok(score)
    }

    /// Closes a chain (the agent host says the task is done) and returns its final state.
    pub fn finish(&mut self, correlation_id: &str) -> Option<ChainState> {
        self.chains.remove(correlation_id)
    }

    /// Forgets chains idle for more than `idle_ms` at `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64, idle_ms: u64) -> usize {
        let before = self.chains.len();
        self.chains
            .retain(|_, c| now_ms.saturating_sub(c.last_ms) <= idle_ms);
        before - self.chains.len()
    }

    /// Open chains.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether no chain is open.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

/// The blast check of one dispatch against a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum BlastAssessment {
    /// No worker was selected yet, so there is no record to score.
    NotAssessed,
    /// The selected worker's record declares no blast radius.
    Undeclared { action: UndeclaredAction },
    /// The chain total stays within the maximum.
    Within {
        worker: u32,
        prior: u32,
        total: u32,
        max: u32,
    },
    /// The chain total exceeds the maximum.
    OverMax {
        worker: u32,
        prior: u32,
        total: u32,
        max: u32,
        action: OverMaxAction,
    },
}

impl BlastAssessment {
    /// Assesses a dispatch. `worker` is `None` when no worker is selected, `Some(None)` when the
    /// selected worker declares no blast radius. The total is `prior + worker score`; it is over
    /// the maximum when strictly greater.
    pub fn assess(
        policy: &BlastPolicy,
        env: Env,
        worker: Option<Option<&WcpBlast>>,
        prior: u32,
    ) -> Self {
        match worker {
            None => BlastAssessment::NotAssessed,
            Some(None) => BlastAssessment::Undeclared {
                action: policy.undeclared,
            },
            Some(Some(blast)) => {
                let score = blast.total();
                let total = prior.saturating_add(score);
                let max = policy.max.get(env);
                if total > max {
                    BlastAssessment::OverMax {
                        worker: score,
                        prior,
                        total,
                        max,
                        action: policy.over_max,
                    }
                } else {
                    BlastAssessment::Within {
                        worker: score,
                        prior,
                        total,
                        max,
                    }
                }
            }
        }
    }

    /// What this assessment contributes to the gate's outcome.
    pub fn outcome(&self) -> Outcome {
        match self {
            BlastAssessment::NotAssessed | BlastAssessment::Within { .. } => Outcome::Allow,
            BlastAssessment::Undeclared { action } => match action {
                UndeclaredAction::Allow => Outcome::Allow,
                UndeclaredAction::Deny => Outcome::Deny,
                UndeclaredAction::RequireHuman(l) => Outcome::RequireHuman(*l),
            },
            BlastAssessment::OverMax { action, .. } => match action {
                OverMaxAction::Deny => Outcome::Deny,
                OverMaxAction::RequireHuman(l) => Outcome::RequireHuman(*l),
            },
        }
    }

    /// A sentence for reasons and receipts, or `None` when the check did not affect the outcome.
    pub fn message(&self, env: Env) -> Option<String> {
        match self {
            BlastAssessment::NotAssessed | BlastAssessment::Within { .. } => None,
            BlastAssessment::Undeclared { action } => match action {
                UndeclaredAction::Allow => None,
                _ => Some(
                    "the selected worker's registry record declares no blast_radius".to_owned(),
                ),
            },
            BlastAssessment::OverMax {
                worker,
                prior,
                total,
                max,
                ..
            } => Some(format!(
                "chain blast {total} (this worker {worker}, earlier in the chain {prior}) exceeds the {env} maximum {max}"
            )),
        }
    }

    /// The supervisor level this assessment asks for, if any.
    pub fn supervisor_level(&self) -> Option<SupervisorLevel> {
        match self.outcome() {
            Outcome::RequireHuman(l) => Some(l),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::profile::PerEnvMax;

    fn radius(d: u8, n: u8, f: u8, t: u8, r: &str) -> BlastRadius {
        BlastRadius {
            data: d,
            network: n,
            financial: f,
            time: t,
            reversibility: r.to_owned(),
        }
    }

    fn policy(over: OverMaxAction, undeclared: UndeclaredAction) -> BlastPolicy {
        BlastPolicy {
            max: PerEnvMax {
                dev: 20,
                stage: 12,
                prod: 7,
                edge: 4,
            },
            over_max: over,
            undeclared,
        }
    }

    #[test]
    fn reversibility_texts_map_to_the_spec_bands() {
        let s = |t: &str| reversibility_score(t);
        assert_eq!(s("reversible").score, 0);
        assert_eq!(s("  Fully-Reversible ").score, 0);
        assert_eq!(s("mostly reversible").score, 1);
        assert_eq!(s("partially_reversible").score, 2);
        assert_eq!(s("hard-to-reverse").score, 4);
        assert_eq!(s("IRREVERSIBLE").score, 5);
        assert_eq!(s("3").score, 3);
        for unknown in ["none", "", "6", "deterministic", "reversible-ish"] {
            let r = s(unknown);
            assert_eq!((r.score, r.recognised), (5, false), "{unknown:?}");
        }
        assert!(s("partial").recognised);
    }

    #[test]
    fn record_scores_sum_five_dimensions() {
        let b = WcpBlast::from_radius(&radius(1, 2, 0, 1, "partially reversible"));
        assert_eq!(b.total(), 6);
        let b = WcpBlast::from_radius(&radius(9, 0, 0, 0, "reversible"));
        assert_eq!(
            b.data, 5,
            "out-of-range dimensions are clamped, never trusted"
        );
        assert!(WcpBlast::new(0, 0, 6, 0, 0).is_err());
    }

    #[test]
    fn chain_blast_accumulates_per_correlation_id() {
        // WCP §7: A (3) calling B (4) = 7; the §9 pipeline 1 + 0 + 1 + 0 + 2 = 4.
        let mut chains = ChainBlast::new(8);
        assert_eq!(chains.prior("c1"), 0);
        assert_eq!(chains.record("c1", 3, 10).unwrap(), 3);
        assert_eq!(chains.projected("c1", 4), 7);
        assert_eq!(chains.record("c1", 4, 11).unwrap(), 7);
        for (i, s) in [1, 0, 1, 0, 2].into_iter().enumerate() {
            chains.record("pipeline", s, 20 + i as u64).unwrap();
        }
        assert_eq!(chains.prior("pipeline"), 4);
        assert_eq!(chains.get("pipeline").unwrap().dispatches, 5);
        assert_eq!(chains.prior("c1"), 7, "chains do not mix");
        assert_eq!(chains.finish("c1").unwrap().total, 7);
        assert_eq!(chains.prior("c1"), 0);
    }

    #[test]
    fn chain_blast_is_bounded_and_refuses_instead_of_evicting() {
        let mut chains = ChainBlast::new(2);
        chains.record("a", 5, 0).unwrap();
        chains.record("b", 5, 0).unwrap();
        assert_eq!(
            chains.record("c", 1, 0),
            Err(ChainError::Full { capacity: 2 })
        );
        assert_eq!(chains.prior("a"), 5, "a live chain was not evicted");
        assert_eq!(
            chains.record("a", 1, 5).unwrap(),
            6,
            "open chains still grow"
        );
        assert_eq!(
            chains.record(" ", 1, 0),
            Err(ChainError::MissingCorrelationId)
        );
        assert!(matches!(
            chains.record(&"x".repeat(200), 1, 0),
            Err(ChainError::CorrelationIdTooLong { len: 200 })
        ));
        // Expiry is by idle time on the caller's clock.
        assert_eq!(chains.expire(1_000, 100), 2);
        assert!(chains.is_empty());
        chains.record("d", u32::MAX, 0).unwrap();
        assert_eq!(chains.record("d", 10, 0).unwrap(), u32::MAX, "saturates");
    }

    #[test]
    fn assessment_compares_the_chain_total_with_the_env_maximum() {
        let p = policy(
            OverMaxAction::RequireHuman(SupervisorLevel::Gatekeeper),
            UndeclaredAction::Deny,
        );
        let b = WcpBlast::new(1, 1, 1, 0, 0).unwrap(); // 3
        let a = BlastAssessment::assess(&p, Env::Prod, Some(Some(&b)), 4);
        assert_eq!(
            a,
            BlastAssessment::Within {
                worker: 3,
                prior: 4,
                total: 7,
                max: 7
            }
        );
        assert_eq!(a.outcome(), Outcome::Allow);
        let a = BlastAssessment::assess(&p, Env::Prod, Some(Some(&b)), 5);
        assert_eq!(
            a.outcome(),
            Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
        );
        assert!(a.message(Env::Prod).unwrap().contains("chain blast 8"));
        // Same chain, a looser env.
        let a = BlastAssessment::assess(&p, Env::Dev, Some(Some(&b)), 5);
        assert_eq!(a.outcome(), Outcome::Allow);
        // Undeclared and not assessed.
        let a = BlastAssessment::assess(&p, Env::Prod, Some(None), 0);
        assert_eq!(a.outcome(), Outcome::Deny);
        assert_eq!(
            BlastAssessment::assess(&p, Env::Prod, None, 99).outcome(),
            Outcome::Allow
        );
        let deny = policy(OverMaxAction::Deny, UndeclaredAction::Allow);
        let a = BlastAssessment::assess(&deny, Env::Edge, Some(Some(&b)), 2);
        assert_eq!(a.outcome(), Outcome::Deny);
        assert_eq!(
            BlastAssessment::assess(&deny, Env::Edge, Some(None), 0).outcome(),
            Outcome::Allow
        );
    }
}
