use super::*;
use crate::policy::request::WorkerFacts;
use crate::policy::source::tests::{file, sources};
use crate::registry::RiskTier;
use crate::wcp::{DataLabel, Env, QosClass, TenantRisk};

const SET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/cedar");

fn req(env: Env, label: DataLabel, risk: TenantRisk) -> PolicyRequest {
    PolicyRequest::new("acme", "cap.doc.summarize", env, label, risk, QosClass::P2)
}

fn engine(files: &[(&str, &str)]) -> CedarEngine {
    CedarEngine::new(compile(&sources(files)).unwrap()).unwrap()
}

const MIXED: &str = r#"
@id("pol.t.allow-dev")
@reason("dev is open")
permit (principal, action == Wcp::Action::"dispatch", resource)
when { context.env == Wcp::Env::"dev" };

@id("pol.t.no-restricted")
@reason("no RESTRICTED data")
forbid (principal, action, resource)
when { context.data_label == Wcp::DataLabel::"RESTRICTED" };

@id("pol.t.prod-gate")
@reason("prod needs a gatekeeper")
@require_human("gatekeeper")
permit (principal, action, resource)
when { context.env == Wcp::Env::"prod" };

@id("pol.t.prod-p0")
@reason("P0 in prod needs an incident commander")
@require_human("incident_commander")
permit (principal, action, resource)
when { context.env == Wcp::Env::"prod" && context.qos_class == Wcp::QosClass::"P0" };

@id("pol.t.stage-advisory")
@reason("stage notifies")
@require_human("advisory")
permit (principal, action, resource)
when { context.env == Wcp::Env::"stage" };

@id("pol.t.stage-open")
@reason("stage is open")
permit (principal, action, resource)
when { context.env == Wcp::Env::"stage" };

@id("pol.t.db")
@reason("db group")
@require_human("executor")
permit (principal, action, resource in Wcp::CapabilityGroup::"cap.db")
when { context.env == Wcp::Env::"edge" };
"#;

#[test]
fn the_bundled_set_reproduces_its_golden_decisions() {
    let (engine, report) = CedarEngine::load(Path::new(SET)).unwrap();
    let report = report.expect("the bundled set names a golden file");
    assert!(report.results.len() >= 15, "{}", report.results.len());
    assert_eq!(report.failed(), 0, "{:#?}", report.failure_diagnostics());
    assert_eq!(report.policy_version, engine.policy_version());
    // The golden file covers every outcome and every supervisor level.
    let outcomes: HashSet<&str> = report.results.iter().map(|r| r.actual.as_str()).collect();
    for o in [
        "ALLOW",
        "DENY",
        "REQUIRE_HUMAN(advisory)",
        "REQUIRE_HUMAN(gatekeeper)",
        "REQUIRE_HUMAN(executor)",
        "REQUIRE_HUMAN(incident_commander)",
    ] {
        assert!(outcomes.contains(o), "no golden case yields {o}");
    }
}

#[test]
fn allow_names_the_permits_and_their_reasons() {
    let e = engine(&[("t.cedar", MIXED)]);
    let v = e
        .evaluate(&req(Env::Dev, DataLabel::Internal, TenantRisk::Low))
        .unwrap();
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.policy_ids(), vec!["pol.t.allow-dev"]);
    assert_eq!(v.determining[0].reason, "dev is open");
    assert_eq!(v.determining[0].effect, Effect::Permit);
    assert_eq!(v.summary(), "pol.t.allow-dev: dev is open");
    assert_eq!(v.policy_version, e.policy_set().policy_version());
}

#[test]
fn forbid_overrides_permit_and_human_review() {
    let e = engine(&[("t.cedar", MIXED)]);
    for env in [Env::Dev, Env::Prod, Env::Stage] {
        let v = e
            .evaluate(&req(env, DataLabel::Restricted, TenantRisk::Low))
            .unwrap();
        assert_eq!(v.outcome, Outcome::Deny, "{env}");
        assert_eq!(v.policy_ids(), vec!["pol.t.no-restricted"], "{env}");
        assert_eq!(v.summary(), "pol.t.no-restricted: no RESTRICTED data");
    }
}

#[test]
fn require_human_takes_the_highest_level_of_the_determining_permits() {
    let e = engine(&[("t.cedar", MIXED)]);
    let v = e
        .evaluate(&req(Env::Prod, DataLabel::Internal, TenantRisk::Low))
        .unwrap();
    assert_eq!(
        v.outcome,
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    assert_eq!(
        v.summary(),
        "gatekeeper review required by pol.t.prod-gate: prod needs a gatekeeper"
    );
    let mut p0 = req(Env::Prod, DataLabel::Internal, TenantRisk::Low);
    p0.qos_class = QosClass::P0;
    let v = e.evaluate(&p0).unwrap();
    assert_eq!(
        v.outcome,
        Outcome::RequireHuman(SupervisorLevel::IncidentCommander)
    );
    assert_eq!(v.policy_ids(), vec!["pol.t.prod-gate", "pol.t.prod-p0"]);
    // A plain permit matching as well does not waive the review.
    let v = e
        .evaluate(&req(Env::Stage, DataLabel::Public, TenantRisk::Low))
        .unwrap();
    assert_eq!(v.outcome, Outcome::RequireHuman(SupervisorLevel::Advisory));
    assert_eq!(
        v.policy_ids(),
        vec!["pol.t.stage-advisory", "pol.t.stage-open"]
    );
    assert_eq!(
        v.summary(),
        "advisory review required by pol.t.stage-advisory: stage notifies"
    );
}

#[test]
fn no_permit_is_a_default_deny_with_a_reason() {
    let e = engine(&[("t.cedar", MIXED)]);
    let v = e
        .evaluate(&req(Env::Edge, DataLabel::Public, TenantRisk::Low))
        .unwrap();
    assert_eq!(v.outcome, Outcome::Deny);
    assert!(v.determining.is_empty());
    assert_eq!(v.summary(), DEFAULT_DENY_REASON);
}

#[test]
fn capabilities_belong_to_their_prefix_groups() {
    let e = engine(&[("t.cedar", MIXED)]);
    let mut r = req(Env::Edge, DataLabel::Public, TenantRisk::Low);
    for (cap, in_group) in [
        ("cap.db.write", true),
        ("cap.db.pg.migrate", true),
        ("cap.dbx.write", false),
        ("cap.db", false),
        ("cap", false),
        ("", false),
    ] {
        r.capability_id = cap.to_owned();
        let v = e.evaluate(&r).unwrap();
        let expect = if in_group {
            Outcome::RequireHuman(SupervisorLevel::Executor)
        } else {
            Outcome::Deny
        };
        assert_eq!(v.outcome, expect, "{cap:?}");
    }
}

#[test]
fn hostile_capability_ids_have_a_bounded_group_count() {
    let ty = |s: &str| EntityTypeName::from_str(s).unwrap();
    let id = "cap.".to_owned() + &"a.".repeat(5_000) + "z";
    let entity = capability_entity(&ty(CAPABILITY_TYPE), &ty(CAPABILITY_GROUP_TYPE), &id);
    let entities = Entities::from_entities([entity], None).unwrap();
    let uid = EntityUid::from_type_name_and_id(ty(CAPABILITY_TYPE), EntityId::new(&id));
    assert_eq!(
        entities.ancestors(&uid).unwrap().count(),
        MAX_CAPABILITY_GROUPS
    );
    // And the engine answers for it.
    let e = engine(&[("t.cedar", MIXED)]);
    let mut r = req(Env::Dev, DataLabel::Public, TenantRisk::Low);
    r.capability_id = id;
    assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Allow);
}

#[test]
fn evaluation_errors_fail_closed_even_where_cedar_would_allow() {
    // Valid under the schema, but overflows at run time when chain_blast_prior >= 2: Cedar skips
    // the erroring forbid and would allow through the permit.
    let text = r#"
@id("pol.t.allow")
@reason("open")
permit (principal, action, resource);

@id("pol.t.overflow")
@reason("overflows")
forbid (principal, action, resource)
when { context.chain_blast_prior * 4611686018427387904 > 0 };
"#;
    let e = engine(&[("t.cedar", text)]);
    let mut r = req(Env::Dev, DataLabel::Public, TenantRisk::Low);
    assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Allow);
    r.chain_blast_prior = 2;
    let v = e.evaluate(&r).unwrap();
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(v.errors.len(), 1, "{v:?}");
    assert!(v.errors[0].contains("pol.t.overflow"), "{v:?}");
    assert!(
        v.summary().starts_with("policy evaluation failed"),
        "{}",
        v.summary()
    );
}

#[test]
fn every_context_attribute_reaches_the_policies() {
    let text = r#"
@id("pol.t.all")
@reason("every attribute")
permit (principal == Wcp::Tenant::"acme", action, resource == Wcp::Capability::"cap.doc.summarize")
when {
  context.dry_run &&
  context has caller && context.caller.uid == 1000 && context.caller.gid == 100 && context.caller.pid == 7 &&
  context has pyhall_blast_score && context.pyhall_blast_score == 42 &&
  context.chain_blast_prior == 3 &&
  context has chain_blast_total && context.chain_blast_total == 8 &&
  context has worker &&
  context.worker.species == "wrk.doc.summarizer" &&
  context.worker.risk_tier == Wcp::RiskTier::"high" &&
  context.worker has blast && context.worker.blast.total == 5 && context.worker.blast.reversibility == 2 &&
  context.worker has envelope &&
  context.worker.envelope.network_egress &&
  context.worker.envelope.egress_hosts.contains("example.org:443") &&
  context.worker.envelope.secrets_access.contains("k") &&
  context.worker.envelope.filesystem_writes.contains("/out") &&
  context.worker.envelope.tools.contains("curl") &&
  context.env == Wcp::Env::"stage" && context.data_label == Wcp::DataLabel::"INTERNAL" &&
  context.tenant_risk == Wcp::TenantRisk::"medium" && context.qos_class == Wcp::QosClass::"P1"
};
"#;
    let e = engine(&[("t.cedar", text)]);
    let mut r = PolicyRequest::new(
        "acme",
        "cap.doc.summarize",
        Env::Stage,
        DataLabel::Internal,
        TenantRisk::Medium,
        QosClass::P1,
    );
    r.dry_run = true;
    r.caller = Some(super::super::CallerIdentity {
        uid: 1000,
        gid: 100,
        pid: 7,
    });
    r.pyhall_blast_score = Some(42);
    r.chain_blast_prior = 3;
    r.worker = Some(WorkerFacts {
        species: "wrk.doc.summarizer".into(),
        risk_tier: RiskTier::High,
        envelope: Some(EnvelopeSummary {
            network_egress: true,
            egress_hosts: vec!["example.org:443".into()],
            secrets_access: vec!["k".into()],
            filesystem_writes: vec!["/out".into()],
            tools: vec!["curl".into()],
        }),
        blast: Some(crate::policy::WcpBlast::new(1, 1, 0, 1, 2).unwrap()),
    });
    assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Allow);
    // Flip any one fact and the permit no longer matches.
    let mut other = r.clone();
    other.tenant_id = "acme2".into();
    assert_eq!(e.evaluate(&other).unwrap().outcome, Outcome::Deny);
    let mut other = r.clone();
    other.chain_blast_prior = 4;
    assert_eq!(e.evaluate(&other).unwrap().outcome, Outcome::Deny);
    let mut other = r;
    other.caller = None;
    assert_eq!(e.evaluate(&other).unwrap().outcome, Outcome::Deny);
}

#[test]
fn the_entity_cache_is_bounded() {
    let e = engine(&[("t.cedar", MIXED)]);
    let mut r = req(Env::Dev, DataLabel::Public, TenantRisk::Low);
    for i in 0..ENTITY_CACHE_CAPACITY + 50 {
        r.capability_id = format!("cap.bulk.c{i}");
        assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Allow);
    }
    assert_eq!(e.cache.read().unwrap().len, ENTITY_CACHE_CAPACITY);
}

#[test]
fn outcomes_combine_deny_first_then_the_highest_level() {
    use SupervisorLevel::*;
    let h = Outcome::RequireHuman;
    assert_eq!(Outcome::Allow.combine(Outcome::Allow), Outcome::Allow);
    assert_eq!(Outcome::Allow.combine(h(Executor)), h(Executor));
    assert_eq!(h(Advisory).combine(h(Gatekeeper)), h(Gatekeeper));
    assert_eq!(
        h(IncidentCommander).combine(h(Gatekeeper)),
        h(IncidentCommander)
    );
    assert_eq!(h(IncidentCommander).combine(Outcome::Deny), Outcome::Deny);
    assert_eq!(Outcome::Deny.combine(Outcome::Allow), Outcome::Deny);
    assert_eq!(
        serde_json::to_value(h(Gatekeeper)).unwrap(),
        serde_json::json!({"decision": "REQUIRE_HUMAN", "supervisor_level": "gatekeeper"})
    );
}

fn copy_bundled_set(dir: &Path) {
    for name in [
        "policyset.toml",
        "wcp.cedarschema",
        "baseline.cedar",
        "nonprod.cedar",
        "production.cedar",
        "golden.toml",
    ] {
        std::fs::copy(Path::new(SET).join(name), dir.join(name)).unwrap();
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Asserts the store still answers with `version` and the bundled decisions.
fn still_active(store: &PolicyStore, version: &str) {
    assert_eq!(store.policy_version(), version);
    let v = store
        .evaluate(&req(Env::Prod, DataLabel::Internal, TenantRisk::High))
        .unwrap();
    assert_eq!(
        v.outcome,
        Outcome::RequireHuman(SupervisorLevel::Gatekeeper)
    );
    assert_eq!(v.policy_version, version);
}

#[test]
fn reload_keeps_previous_set_on_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundled_set(dir.path());
    let store = PolicyStore::open(dir.path()).unwrap();
    let v1 = store.policy_version();
    edit(
        &dir.path().join("production.cedar"),
        "context.tenant_risk == Wcp::TenantRisk::\"high\" &&\n  context.data_label",
        "context.tenant_risk == && \n  context.data_label",
    );
    let err = store.reload().unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.kind, crate::policy::source::DiagnosticKind::Syntax);
    assert!(d.file.ends_with("production.cedar"), "{d}");
    assert!(d.line > 1 && d.column > 1, "{d}");
    assert!(err.to_string().contains("production.cedar:"), "{err}");
    still_active(&store, &v1);
}

#[test]
fn reload_keeps_previous_set_on_schema_violation() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundled_set(dir.path());
    let store = PolicyStore::open(dir.path()).unwrap();
    let v1 = store.policy_version();
    edit(
        &dir.path().join("baseline.cedar"),
        "context.chain_blast_total > 40",
        "context.chain_blast_totl > 40",
    );
    let err = store.reload().unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(d.kind, crate::policy::source::DiagnosticKind::Validation);
    assert_eq!(d.policy_id.as_deref(), Some("pol.chain.runaway"));
    assert!(d.message.contains("chain_blast_totl"), "{d}");
    still_active(&store, &v1);
}

#[test]
fn reload_keeps_previous_set_when_golden_decisions_change() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundled_set(dir.path());
    let store = PolicyStore::open(dir.path()).unwrap();
    let v1 = store.policy_version();
    // Valid Cedar, but it turns the gatekeeper review of high-risk tenants into a plain allow.
    edit(
        &dir.path().join("production.cedar"),
        "@require_human(\"gatekeeper\")\npermit (principal, action == Wcp::Action::\"dispatch\", resource)\nwhen {\n  context.env == Wcp::Env::\"prod\" &&\n  context.tenant_risk",
        "permit (principal, action == Wcp::Action::\"dispatch\", resource)\nwhen {\n  context.env == Wcp::Env::\"prod\" &&\n  context.tenant_risk",
    );
    let err = store.reload().unwrap_err();
    assert!(
        err.diagnostics()
            .iter()
            .all(|d| d.kind == crate::policy::source::DiagnosticKind::Golden)
    );
    assert!(err.to_string().contains("golden.toml:"), "{err}");
    assert!(
        err.to_string()
            .contains("expected REQUIRE_HUMAN(gatekeeper), got ALLOW"),
        "{err}"
    );
    still_active(&store, &v1);
}

#[test]
fn reload_activates_a_valid_change_and_reports_versions() {
    let dir = tempfile::tempdir().unwrap();
    copy_bundled_set(dir.path());
    let store = PolicyStore::open(dir.path()).unwrap();
    let v1 = store.policy_version();
    let snapshot = store.current();
    edit(
        &dir.path().join("policyset.toml"),
        "version = \"1.0.0\"",
        "version = \"1.0.1\"",
    );
    let report = store.reload().unwrap();
    assert_eq!(report.previous_version, v1);
    assert!(
        report.version.starts_with("wcp-default@1.0.1+"),
        "{report:?}"
    );
    assert!(report.golden_passed.unwrap() >= 15);
    assert_eq!(store.policy_version(), report.version);
    // A snapshot taken before the reload keeps answering with the old set.
    assert_eq!(snapshot.policy_version(), v1);
    // An unreadable source is also an error that keeps the set.
    std::fs::remove_file(dir.path().join("nonprod.cedar")).unwrap();
    assert!(matches!(store.reload(), Err(PolicyLoadError::Read { .. })));
    assert_eq!(store.policy_version(), report.version);
    // A store built in memory has nothing to reload.
    let mem = PolicyStore::new(engine(&[("t.cedar", MIXED)]));
    assert!(mem.reload().is_err());
}

#[test]
fn replace_with_refuses_invalid_sources() {
    let store = PolicyStore::new(engine(&[("t.cedar", MIXED)]));
    let v1 = store.policy_version();
    let mut bad = sources(&[("t.cedar", "permit (principal, action, resource)")]);
    bad.policies.push(file("u.cedar", MIXED));
    assert!(store.replace_with(&bad).is_err());
    assert_eq!(store.policy_version(), v1);
}

#[test]
fn engines_are_shareable_across_threads() {
    fn check<T: Send + Sync>() {}
    check::<CedarEngine>();
    check::<PolicyStore>();
    let store = Arc::new(PolicyStore::new(engine(&[("t.cedar", MIXED)])));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut r = req(Env::Dev, DataLabel::Public, TenantRisk::Low);
                r.capability_id = format!("cap.t.c{i}");
                s.evaluate(&r).unwrap().outcome
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), Outcome::Allow);
    }
}

#[test]
fn partition_never_changes_a_verdict() {
    let overflow = r#"
@id("pol.t.allow")
@reason("open")
permit (principal, action, resource);

@id("pol.t.overflow")
@reason("overflows")
forbid (principal, action, resource)
when { context.chain_blast_prior * 4611686018427387904 > 0 && context.env == Wcp::Env::"dev" };
"#;
    let (bundled, _) = CedarEngine::load(Path::new(SET)).unwrap();
    let engines = [
        bundled,
        engine(&[("t.cedar", MIXED)]),
        engine(&[("o.cedar", overflow)]),
    ];
    let workers = [
        None,
        Some(WorkerFacts {
            species: "wrk.a.b".into(),
            risk_tier: RiskTier::Low,
            envelope: None,
            blast: None,
        }),
        Some(WorkerFacts {
            species: "wrk.a.c".into(),
            risk_tier: RiskTier::Critical,
            envelope: Some(EnvelopeSummary {
                network_egress: true,
                egress_hosts: vec!["h:443".into()],
                secrets_access: vec!["k".into()],
                ..EnvelopeSummary::default()
            }),
            blast: Some(crate::policy::WcpBlast::new(5, 5, 5, 5, 5).unwrap()),
        }),
        Some(WorkerFacts {
            species: "wrk.a.d".into(),
            risk_tier: RiskTier::High,
            envelope: Some(EnvelopeSummary::default()),
            blast: Some(crate::policy::WcpBlast::new(1, 0, 0, 1, 0).unwrap()),
        }),
    ];
    let mut compared = 0;
    let mut skipped = 0;
    for e in &engines {
        for &env in Env::ALL {
            for &label in DataLabel::ALL {
                for &risk in TenantRisk::ALL {
                    for &qos in QosClass::ALL {
                        for w in &workers {
                            for prior in [0, 2, 38] {
                                for cap in ["cap.doc.summarize", "cap.db.write"] {
                                    let mut r =
                                        PolicyRequest::new("acme", cap, env, label, risk, qos);
                                    r.worker = w.clone();
                                    r.chain_blast_prior = prior;
                                    let part = e.evaluate(&r).unwrap();
                                    let full = e.evaluate_unpartitioned(&r).unwrap();
                                    assert_eq!(part, full, "{r:?}");
                                    compared += 1;
                                    skipped += e.policy_set().len() - e.policies_evaluated(&r);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(compared, 3 * 144 * 4 * 3 * 2);
    assert!(
        skipped > compared,
        "the partition leaves policies out: {skipped}"
    );
}

#[test]
fn the_bundled_set_evaluates_few_policies_per_cell() {
    let (e, _) = CedarEngine::load(Path::new(SET)).unwrap();
    let n = |env, label, risk, qos| {
        e.policies_evaluated(&PolicyRequest::new("a", "cap.x.y", env, label, risk, qos))
    };
    assert_eq!(e.policy_set().len(), 15);
    // Routine prod: routine, db-writes, critical-worker, envelope-declared, chain.runaway.
    assert_eq!(
        n(
            Env::Prod,
            DataLabel::Internal,
            TenantRisk::Low,
            QosClass::P2
        ),
        5
    );
    // Dev: nonprod.allow and chain.runaway.
    assert_eq!(
        n(Env::Dev, DataLabel::Internal, TenantRisk::Low, QosClass::P2),
        2
    );
}

#[test]
fn cached_worker_entities_follow_the_worker_facts() {
    // The same species re-enrolled with other facts must not reuse the cached entity.
    let (e, _) = CedarEngine::load(Path::new(SET)).unwrap();
    let cached = e.cache.read().unwrap().len;
    let mut r = req(Env::Prod, DataLabel::Internal, TenantRisk::Low);
    let mut w = WorkerFacts {
        species: "wrk.test.fresh".into(),
        risk_tier: RiskTier::Low,
        envelope: Some(EnvelopeSummary::default()),
        blast: None,
    };
    r.worker = Some(w.clone());
    assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Allow);
    w.risk_tier = RiskTier::Critical;
    r.worker = Some(w.clone());
    assert_eq!(
        e.evaluate(&r).unwrap().outcome,
        Outcome::RequireHuman(SupervisorLevel::Executor)
    );
    w.risk_tier = RiskTier::Low;
    w.envelope = None;
    r.worker = Some(w);
    assert_eq!(e.evaluate(&r).unwrap().outcome, Outcome::Deny);
    assert_eq!(
        e.cache.read().unwrap().len,
        cached + 3,
        "one store per distinct facts"
    );
}
