use super::*;
use crate::policy::blast::{ChainBlast, WcpBlast};
use crate::policy::profile::ProfileSet;
use crate::policy::request::{EnvelopeSummary, WorkerFacts};
use crate::registry::RiskTier;
use crate::wcp::{DataLabel, QosClass, TenantRisk};
use std::path::Path;

const PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/profiles");

fn gate() -> HallGate {
    let set = ProfileSet::load_dir(Path::new(PROFILES)).unwrap();
    let sel = EnvProfiles::select(
        &set,
        [
            (Env::Dev, "prof.dev.permissive"),
            (Env::Prod, "prof.prod.strict"),
            (Env::Edge, "prof.edge.isolated"),
        ],
    )
    .unwrap();
    HallGate::load(&sel).unwrap()
}

fn worker(tier: RiskTier, blast: Option<WcpBlast>) -> WorkerFacts {
    WorkerFacts {
        species: "wrk.doc.summarizer".into(),
        risk_tier: tier,
        envelope: Some(EnvelopeSummary::default()),
        blast,
    }
}

fn req(env: Env, risk: TenantRisk, w: Option<WorkerFacts>, prior: u32) -> PolicyRequest {
    let mut r = PolicyRequest::new(
        "acme",
        "cap.doc.summarize",
        env,
        DataLabel::Internal,
        risk,
        QosClass::P2,
    );
    r.worker = w;
    r.chain_blast_prior = prior;
    r
}

fn blast(total: u8) -> Option<WcpBlast> {
    // Spread `total` over the dimensions, at most 5 each.
    let mut left = total;
    let mut take = || {
        let v = left.min(5);
        left -= v;
        v
    };
    Some(WcpBlast::new(take(), take(), take(), take(), take()).unwrap())
}

#[test]
fn one_policy_set_is_opened_once_for_several_profiles() {
    let g = gate();
    assert_eq!(g.stores.len(), 1, "all three profiles share ../cedar");
    assert!(g.gates_every_dispatch(Env::Prod));
    assert!(!g.gates_every_dispatch(Env::Dev));
    assert!(
        g.gates_every_dispatch(Env::Stage),
        "no profile: the gate runs (and denies)"
    );
    assert_eq!(g.profile(Env::Edge).unwrap().id, "prof.edge.isolated");
}

#[test]
fn within_the_maximum_the_policy_verdict_stands() {
    let d = gate()
        .decide(&req(
            Env::Prod,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, blast(3))),
            7,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(
        d.blast,
        BlastAssessment::Within {
            worker: 3,
            prior: 7,
            total: 10,
            max: 10
        }
    );
    assert_eq!(d.reasons.len(), 1);
    assert_eq!(d.reasons[0].id, "pol.prod.routine");
    assert_eq!(d.profile_id.as_deref(), Some("prof.prod.strict"));
    assert!(d.policy_version.starts_with("wcp-default@1.0.0+"));
    let answer = d.to_gate_answer();
    assert_eq!(answer.decision, "ALLOW");
    assert!(
        answer
            .reason
            .starts_with("pol.prod.routine: routine production work"),
        "{}",
        answer.reason
    );
}

#[test]
fn over_the_maximum_the_profile_asks_for_a_human_or_denies() {
    let g = gate();
    // prod: over 10 → gatekeeper, although Cedar allows.
    let d = g
        .decide(&req(
            Env::Prod,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, blast(3))),
            8,
        ))
        .unwrap();
    assert_eq!(
        d.outcome,
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    assert_eq!(
        d.summary,
        "gatekeeper review required by prof.prod.strict: chain blast 11 (this worker 3, earlier in the chain 8) exceeds the prod maximum 10"
    );
    let p = d
        .reasons
        .iter()
        .find(|r| r.source == ReasonSource::Profile)
        .unwrap();
    assert_eq!(
        p.outcome,
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    // edge: over 6 → deny.
    let d = g
        .decide(&req(
            Env::Edge,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, blast(7))),
            0,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(
        d.summary.starts_with("prof.edge.isolated: chain blast 7"),
        "{}",
        d.summary
    );
    // dev: over 25 → advisory only.
    let d = g
        .decide(&req(
            Env::Dev,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, blast(5))),
            22,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::RequireHuman(SupervisorLevel::Advisory));
}

#[test]
fn undeclared_blast_follows_the_profile() {
    let g = gate();
    let d = g
        .decide(&req(
            Env::Prod,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, None)),
            0,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(
        d.summary.contains("declares no blast_radius"),
        "{}",
        d.summary
    );
    let d = g
        .decide(&req(
            Env::Dev,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, None)),
            0,
        ))
        .unwrap();
    assert_eq!(
        d.outcome,
        Outcome::Allow,
        "prof.dev.permissive allows undeclared"
    );
    // No worker selected yet: the blast check is not assessed.
    let d = g
        .decide(&req(Env::Prod, TenantRisk::Low, None, 99))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.blast, BlastAssessment::NotAssessed);
}

#[test]
fn policy_and_blast_reviews_combine_to_the_highest_level() {
    let g = gate();
    // Cedar: executor (critical worker). Blast: gatekeeper. → executor, both named.
    let d = g
        .decide(&req(
            Env::Prod,
            TenantRisk::Low,
            Some(worker(RiskTier::Critical, blast(9))),
            5,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::RequireHuman(SupervisorLevel::Executor));
    assert!(
        d.summary
            .starts_with("executor review required by pol.prod.critical-worker:"),
        "{}",
        d.summary
    );
    assert!(
        d.summary.contains("; prof.prod.strict: chain blast 14"),
        "{}",
        d.summary
    );
    // Cedar: gatekeeper (high-risk tenant). Blast within. → gatekeeper from the policy only.
    let d = g
        .decide(&req(
            Env::Prod,
            TenantRisk::High,
            Some(worker(RiskTier::Low, blast(1))),
            0,
        ))
        .unwrap();
    assert_eq!(
        d.outcome,
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    assert_eq!(
        d.summary,
        "gatekeeper review required by pol.prod.high-risk-tenant: a high-risk tenant's production dispatch needs a gatekeeper's approval"
    );
    // Cedar denies (no permit at the edge for high risk) and blast is over: deny, both named.
    let d = g
        .decide(&req(
            Env::Edge,
            TenantRisk::High,
            Some(worker(RiskTier::Low, blast(8))),
            0,
        ))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert!(
        d.summary
            .starts_with("no permit matched (default deny); prof.edge.isolated: chain blast 8"),
        "{}",
        d.summary
    );
    // Blast asks for a human, Cedar forbids: deny wins, and the human request is not in the summary.
    let mut r = req(
        Env::Prod,
        TenantRisk::Low,
        Some(worker(RiskTier::Low, blast(12))),
        0,
    );
    r.data_label = DataLabel::Restricted;
    if let Some(w) = r.worker.as_mut() {
        w.envelope = Some(EnvelopeSummary {
            network_egress: true,
            ..EnvelopeSummary::default()
        });
    }
    let d = g.decide(&r).unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(
        d.summary,
        "pol.data.restricted-no-egress: RESTRICTED data never goes to a worker that declares network egress"
    );
    assert_eq!(
        d.reasons.len(),
        2,
        "the blast reason is still recorded: {:?}",
        d.reasons
    );
}

#[test]
fn an_env_without_a_profile_is_denied() {
    let d = gate()
        .decide(&req(Env::Stage, TenantRisk::Low, None, 0))
        .unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.policy_version, NO_POLICY_VERSION);
    assert_eq!(d.reasons[0].id, "gate.no-profile");
    assert!(d.summary.contains("[profiles]"), "{}", d.summary);
}

#[test]
fn chain_blast_accumulates_across_a_correlation_id_through_the_gate() {
    // The daemon's loop: ask with the prior total, record only what really ran.
    let g = gate();
    let mut chains = ChainBlast::new(16);
    let step = |cid: &str, score: u8, dry_run: bool, chains: &mut ChainBlast| {
        let mut r = req(
            Env::Prod,
            TenantRisk::Low,
            Some(worker(RiskTier::Low, blast(score))),
            chains.prior(cid),
        );
        r.dry_run = dry_run;
        let d = g.decide(&r).unwrap();
        if d.outcome == Outcome::Allow && !dry_run {
            chains.record(cid, u32::from(score), 0).unwrap();
        }
        d.outcome
    };
    assert_eq!(step("c1", 3, false, &mut chains), Outcome::Allow); // 3
    assert_eq!(step("c1", 4, false, &mut chains), Outcome::Allow); // 7
    assert_eq!(step("c1", 3, true, &mut chains), Outcome::Allow); // dry run: 10, not recorded
    assert_eq!(chains.prior("c1"), 7);
    assert_eq!(step("c1", 3, false, &mut chains), Outcome::Allow); // 10 = max
    assert_eq!(
        step("c1", 1, false, &mut chains),
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    ); // 11 > 10
    assert_eq!(chains.prior("c1"), 10);
    // Another correlation id starts from zero.
    assert_eq!(step("c2", 5, false, &mut chains), Outcome::Allow);
    assert_eq!(chains.prior("c2"), 5);
}

#[test]
fn the_router_adapter_answers_from_the_gate_context() {
    let g = gate();
    let ctx = GateContext {
        capability_id: "cap.db.write",
        tenant_id: "acme",
        env: Env::Prod,
        data_label: DataLabel::Internal,
        tenant_risk: TenantRisk::Low,
        qos_class: QosClass::P2,
        policy_version: "policy.v0",
        selected_worker_species: None,
        pyhall_blast_score: None,
        dry_run: false,
    };
    let a = g.evaluate(&ctx).unwrap();
    assert_eq!(a.decision, "REQUIRE_HUMAN");
    assert!(
        a.reason
            .starts_with("gatekeeper review required by pol.prod.db-writes:"),
        "{}",
        a.reason
    );
    assert!(a.policy_version.starts_with("wcp-default@1.0.0+"));
    let a = g
        .evaluate(&GateContext {
            env: Env::Stage,
            ..ctx.clone()
        })
        .unwrap();
    assert_eq!(a.decision, "DENY");
    assert_eq!(a.policy_version, NO_POLICY_VERSION);
    // The single-engine adapter gives Cedar's verdict without profile checks.
    let set = g
        .stores
        .values()
        .next()
        .unwrap()
        .current()
        .policy_set()
        .clone();
    let single = EngineGate(crate::policy::CedarEngine::new(set).unwrap());
    let a = single
        .evaluate(&GateContext {
            capability_id: "cap.doc.summarize",
            env: Env::Dev,
            ..ctx
        })
        .unwrap();
    assert_eq!(a.decision, "ALLOW");
    assert_eq!(
        a.reason,
        "pol.nonprod.allow: dev and stage run PUBLIC and INTERNAL work without review"
    );
}

#[test]
fn gate_reload_reports_per_policy_set() {
    let g = gate();
    let results = g.reload();
    assert_eq!(results.len(), 1);
    let (path, report) = &results[0];
    assert!(path.ends_with("profiles/../cedar"));
    let report = report.as_ref().unwrap();
    assert_eq!(
        report.previous_version, report.version,
        "unchanged files, same version"
    );
}
