use super::*;
use std::time::{Duration, UNIX_EPOCH};

pub(crate) fn dispatch(correlation: &str) -> Dispatch {
    Dispatch {
        correlation_id: correlation.to_owned(),
        dispatched_at: "2026-11-24T19:36:01.274Z".into(),
        tenant_id: "acme-corp".into(),
        env: "prod".into(),
        capability_id: "cap.doc.summarize".into(),
        worker_id: Some("org.example.summarizer".into()),
        worker_species_id: Some("wrk.doc.summarizer".into()),
        policy_decision: "ALLOW".into(),
        controls_verified: vec!["ctrl.obs.audit-log-append-only".into()],
        artifact_hash: Some("ab".repeat(32)),
        decision: DecisionSummary {
            decision_id: "d-1".into(),
            matched_rule_id: "rr_doc_summarize".into(),
            denied: false,
            deny_code: None,
            deny_detail: None,
            policy_version: Some("policy.v1".into()),
        },
        caller: Caller {
            uid: 1000,
            gid: 1000,
            pid: 4242,
        },
        package: Some(PackageRef {
            digest: "sha256:".to_owned() + &"cd".repeat(32),
            manifest_digest: None,
            signer_key_ids: vec!["ef".repeat(32)],
        }),
        registry_service: None,
        envelope: Some(serde_json::json!({"network": {"requested": "none", "effective": "none"}})),
        trace: None,
    }
}

pub(crate) fn header(seq: u64, prev: Option<Hash>, key: &KeyPair) -> Header {
    Header {
        log: "hall.test/receipts".into(),
        seq,
        receipt_id: uuid::Uuid::now_v7().to_string(),
        prev_receipt_hash: prev,
        signing_key: key.public(),
        time: "2026-11-24T19:36:01.274Z".into(),
        hall: HallInfo {
            version: "0.1.0".into(),
            host_id: "host".into(),
        },
    }
}

fn execution() -> Execution {
    Execution {
        exit_code: Some(0),
        failure: None,
        signal: None,
        timed_out: false,
        truncated: false,
        stdout_sha256: "00".repeat(32),
        stderr_sha256: "11".repeat(32),
        stdout_bytes: 12,
        stderr_bytes: 0,
        timings: Timings {
            started_at: "2026-11-24T19:36:01.300Z".into(),
            wall_ms: 25,
            cpu_user_ms: Some(3),
            cpu_system_ms: None,
        },
    }
}

#[test]
fn payloads_round_trip_in_one_canonical_encoding() {
    let key = KeyPair::from_seed(&[3; 32]);
    let p = ReceiptPayload::new(
        &header(5, Some([1; 32]), &key),
        Body::Executed {
            intent_seq: 4,
            dispatch: dispatch("c-1"),
            execution: execution(),
        },
    )
    .unwrap();
    let bytes = p.encode().unwrap();
    assert!(canonical::is_canonical(&bytes));
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"abort\":null"), "{text}");
    assert!(
        text.starts_with("{\"abort\":null,\"approval\":null,\"checkpoint\":null,\"dispatch\":{")
    );
    assert_eq!(ReceiptPayload::decode(&bytes).unwrap(), p);
    // The same receipt with a key left out, spaces added or keys reordered is refused.
    let omitted = text.replace("\"abort\":null,", "");
    assert_eq!(
        ReceiptPayload::decode(omitted.as_bytes()),
        Err(ModelError::NotCanonical)
    );
    let spaced = text.replacen("{", "{ ", 1);
    assert_eq!(
        ReceiptPayload::decode(spaced.as_bytes()),
        Err(ModelError::NotCanonical)
    );
    let dup = text.replacen("{\"abort\":null,", "{\"abort\":null,\"abort\":null,", 1);
    assert!(ReceiptPayload::decode(dup.as_bytes()).is_err());
    let unknown = text.replacen("{\"abort\":null,", "{\"a\":1,\"abort\":null,", 1);
    assert!(matches!(
        ReceiptPayload::decode(unknown.as_bytes()),
        Err(ModelError::Json(_))
    ));
    let float = text.replacen("\"wall_ms\":25", "\"wall_ms\":25.0", 1);
    assert!(ReceiptPayload::decode(float.as_bytes()).is_err());
}

/// `execution.failure` is written only when set, so an outcome receipt from before the
/// field existed still decodes to exactly its bytes; a failed run's receipt names its code.
#[test]
fn the_failure_code_is_optional_and_canonical() {
    let key = KeyPair::from_seed(&[3; 32]);
    let executed = |execution: Execution| {
        ReceiptPayload::new(
            &header(5, Some([1; 32]), &key),
            Body::Executed {
                intent_seq: 4,
                dispatch: dispatch("c-1"),
                execution,
            },
        )
    };
    let old = executed(execution()).unwrap().encode().unwrap();
    let text = String::from_utf8(old.clone()).unwrap();
    assert!(!text.contains("failure"), "{text}");
    assert_eq!(ReceiptPayload::decode(&old).unwrap().encode().unwrap(), old);

    let mut failed = execution();
    failed.exit_code = Some(3);
    failed.failure = Some("exit_status".into());
    let p = executed(failed.clone()).unwrap();
    let bytes = p.encode().unwrap();
    assert!(canonical::is_canonical(&bytes));
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.contains("\"exit_code\":3,\"failure\":\"exit_status\",\"signal\":null"),
        "{text}"
    );
    assert_eq!(ReceiptPayload::decode(&bytes).unwrap(), p);
    // `null` is a second spelling of "absent": refused.
    let with_null = String::from_utf8(old).unwrap().replacen(
        "\"exit_code\":0,",
        "\"exit_code\":0,\"failure\":null,",
        1,
    );
    assert_eq!(
        ReceiptPayload::decode(with_null.as_bytes()),
        Err(ModelError::NotCanonical)
    );
    // Only the documented codes.
    failed.failure = Some("made_up".into());
    assert!(
        executed(failed)
            .unwrap_err()
            .to_string()
            .contains("execution.failure")
    );
}

/// `dispatch.trace` is written only when there is a trace, so a receipt from before the field
/// existed still decodes to exactly its bytes; its ids must have the W3C form.
#[test]
fn the_trace_is_optional_and_canonical() {
    let key = KeyPair::from_seed(&[3; 32]);
    let intent = |dispatch: Dispatch| {
        ReceiptPayload::new(&header(5, Some([1; 32]), &key), Body::Intent(dispatch))
    };
    let old = intent(dispatch("c-1")).unwrap().encode().unwrap();
    assert!(!String::from_utf8(old.clone()).unwrap().contains("trace"));
    assert_eq!(ReceiptPayload::decode(&old).unwrap().encode().unwrap(), old);

    let mut traced = dispatch("c-1");
    traced.trace = Some(TraceRef {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        span_id: "00f067aa0ba902b7".into(),
    });
    let p = intent(traced.clone()).unwrap();
    let bytes = p.encode().unwrap();
    assert!(canonical::is_canonical(&bytes));
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.contains(r#""trace":{"span_id":"00f067aa0ba902b7","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#),
        "{text}"
    );
    assert_eq!(ReceiptPayload::decode(&bytes).unwrap(), p);
    // `null` is a second spelling of "absent": refused.
    let with_null = text.replacen(
        r#""trace":{"span_id":"00f067aa0ba902b7","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#,
        r#""trace":null"#,
        1,
    );
    assert_eq!(
        ReceiptPayload::decode(with_null.as_bytes()),
        Err(ModelError::NotCanonical)
    );
    for (trace_id, span_id) in [
        ("4BF92F3577B34DA6A3CE929D0E0E4736", "00f067aa0ba902b7"),
        ("00000000000000000000000000000000", "00f067aa0ba902b7"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "0000000000000000"),
    ] {
        let mut bad = dispatch("c-1");
        bad.trace = Some(TraceRef {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
        });
        let e = intent(bad).unwrap_err().to_string();
        assert!(e.contains("dispatch.trace."), "{e}");
    }
}

/// The fast encoding (serde_json with fields declared in byte order) must be the canonical
/// one for every type: a field declared out of order would make valid receipts undecodable.
#[test]
fn serde_output_is_the_canonical_encoding_for_every_type() {
    let key = KeyPair::from_seed(&[3; 32]);
    let mut p = ReceiptPayload::new(
        &header(5, Some([1; 32]), &key),
        Body::Executed {
            intent_seq: 4,
            dispatch: dispatch("c-\"é\\"),
            execution: execution(),
        },
    )
    .unwrap();
    // Escapes: a control character where validation would refuse it anyway.
    p.hall.host_id = "h\u{1}\u{1f}\t\u{7f}".into();
    // Every section populated at once (not a valid receipt; only the encoding matters).
    p.approval = Some(Approval {
        pending_approval_id: "a".into(),
        approval_expires_at: "t".into(),
        supervisor_level: Some("gatekeeper".into()),
    });
    p.abort = Some(Abort {
        reason: "r\n".into(),
    });
    p.recovery = Some(Recovery {
        segment: "s".into(),
        offset: 1,
        discarded_bytes: 2,
        discarded_sha256: "h".into(),
        saved_as: "x".into(),
    });
    p.rotation = Some(Rotation::new(
        &key.public(),
        &KeyPair::from_seed(&[4; 32]).public(),
    ));
    p.checkpoint = Some(CheckpointRecord {
        size: 5,
        root: "r".into(),
        note: "n\n\n\u{2014} k x\n".into(),
    });
    p.execution.as_mut().unwrap().signal = Some(9);
    p.execution.as_mut().unwrap().failure = Some("killed_by_signal".into());
    p.dispatch
        .as_mut()
        .unwrap()
        .package
        .as_mut()
        .unwrap()
        .manifest_digest = Some("m".into());
    assert_eq!(
        serde_json::to_vec(&p).unwrap(),
        canonical::to_canonical_from(&p).unwrap()
    );
    let sealed = seal(
        ReceiptPayload::new(&header(0, None, &key), Body::Intent(dispatch("c"))).unwrap(),
        &[&key],
    )
    .unwrap();
    let line = LogLine::parse(&sealed.line[..sealed.line.len() - 1]).unwrap();
    let mut want = canonical::to_canonical_from(&line).unwrap();
    want.push(b'\n');
    assert_eq!(sealed.line, want);
}

#[test]
fn an_unsorted_envelope_report_is_sorted_when_built() {
    let key = KeyPair::from_seed(&[3; 32]);
    let mut d = dispatch("c");
    let mut m = serde_json::Map::new();
    m.insert("z".into(), serde_json::json!(1));
    m.insert("a".into(), serde_json::json!({"y": 1, "b": 2}));
    d.envelope = Some(Value::Object(m));
    let p = ReceiptPayload::new(&header(0, None, &key), Body::Intent(d.clone())).unwrap();
    let bytes = p.encode().unwrap();
    assert!(canonical::is_canonical(&bytes));
    assert!(
        String::from_utf8(bytes.clone())
            .unwrap()
            .contains(r#""envelope":{"a":{"b":2,"y":1},"z":1}"#)
    );
    assert_eq!(ReceiptPayload::decode(&bytes).unwrap(), p);
    // A hand-built payload with an unsorted report still encodes canonically.
    let mut hand = p.clone();
    hand.dispatch = Some(d);
    assert_eq!(hand.encode().unwrap(), bytes);
}

#[test]
fn kinds_require_exactly_their_sections() {
    let key = KeyPair::from_seed(&[3; 32]);
    let h = header(2, Some([1; 32]), &key);
    let mut p = ReceiptPayload::new(&h, Body::Intent(dispatch("c"))).unwrap();
    p.execution = Some(execution());
    assert!(
        p.validate()
            .unwrap_err()
            .to_string()
            .contains("must be null for kind intent")
    );
    let mut p = ReceiptPayload::new(&h, Body::Intent(dispatch("c"))).unwrap();
    p.kind = Kind::Executed;
    assert!(
        p.validate()
            .unwrap_err()
            .to_string()
            .contains("intent_seq: is required")
    );
    // A denied receipt must carry a denied decision with its code, and the reverse.
    let mut d = dispatch("c");
    assert!(ReceiptPayload::new(&h, Body::Denied(d.clone())).is_err());
    d.decision.denied = true;
    d.decision.deny_code = Some("DENY_NO_MATCHING_RULE".into());
    d.policy_decision = "DENY".into();
    assert!(ReceiptPayload::new(&h, Body::Denied(d.clone())).is_ok());
    assert!(ReceiptPayload::new(&h, Body::Intent(d)).is_err());
    // An outcome must point back, never forward.
    let bad = Body::Executed {
        intent_seq: 2,
        dispatch: dispatch("c"),
        execution: execution(),
    };
    assert!(
        ReceiptPayload::new(&h, bad)
            .unwrap_err()
            .to_string()
            .contains("earlier record")
    );
}

#[test]
fn header_fields_are_checked() {
    let key = KeyPair::from_seed(&[3; 32]);
    let body = || Body::Intent(dispatch("c"));
    assert!(ReceiptPayload::new(&header(0, Some([0; 32]), &key), body()).is_err());
    assert!(ReceiptPayload::new(&header(1, None, &key), body()).is_err());
    let mut h = header(0, None, &key);
    h.receipt_id = uuid::Uuid::new_v4().to_string();
    assert!(
        ReceiptPayload::new(&h, body())
            .unwrap_err()
            .to_string()
            .contains("UUIDv7")
    );
    let mut h = header(0, None, &key);
    h.time = "yesterday".into();
    assert!(ReceiptPayload::new(&h, body()).is_err());
    let mut h = header(0, None, &key);
    h.log = "has space".into();
    assert!(ReceiptPayload::new(&h, body()).is_err());
    let mut p = ReceiptPayload::new(&header(0, None, &key), body()).unwrap();
    p.signing_key_id = KeyPair::from_seed(&[4; 32]).id().0.clone();
    assert!(
        p.validate()
            .unwrap_err()
            .to_string()
            .contains("signing_key_id")
    );
    let mut d = dispatch("c");
    d.envelope = Some(serde_json::json!({"ratio": 0.5}));
    assert!(ReceiptPayload::new(&header(0, None, &key), Body::Intent(d)).is_err());
    let mut d = dispatch("c\n");
    d.correlation_id.push('\u{7}');
    assert!(ReceiptPayload::new(&header(0, None, &key), Body::Intent(d)).is_err());
}

#[test]
fn a_denial_without_tenant_or_correlation_id_is_recordable_but_not_one_without_capability() {
    // Such requests reach routing (DENY_MISSING_TENANT_ID / _CORRELATION_ID): their denial
    // must be recordable. A capability is required before routing, so never empty here.
    let key = KeyPair::from_seed(&[3; 32]);
    let mut d = dispatch("");
    d.tenant_id = String::new();
    d.decision.denied = true;
    d.decision.deny_code = Some("DENY_MISSING_CORRELATION_ID".into());
    d.policy_decision = "DENY".into();
    assert!(ReceiptPayload::new(&header(0, None, &key), Body::Denied(d.clone())).is_ok());
    d.capability_id = String::new();
    let err = ReceiptPayload::new(&header(0, None, &key), Body::Denied(d)).unwrap_err();
    assert!(err.to_string().contains("dispatch.capability_id"), "{err}");
}

#[test]
fn rotations_must_be_signed_by_the_retiring_key() {
    let (old, new) = (KeyPair::from_seed(&[3; 32]), KeyPair::from_seed(&[4; 32]));
    let h = header(7, Some([1; 32]), &old);
    assert!(
        ReceiptPayload::new(
            &h,
            Body::KeyRotation(Rotation::new(&old.public(), &new.public()))
        )
        .is_ok()
    );
    let h2 = header(7, Some([1; 32]), &new);
    assert!(
        ReceiptPayload::new(
            &h2,
            Body::KeyRotation(Rotation::new(&old.public(), &new.public()))
        )
        .is_err()
    );
    assert!(
        ReceiptPayload::new(
            &h,
            Body::KeyRotation(Rotation::new(&old.public(), &old.public()))
        )
        .is_err()
    );
}

#[test]
fn sealed_lines_parse_back_and_hash_the_payload_bytes() {
    let key = KeyPair::from_seed(&[3; 32]);
    let p = ReceiptPayload::new(&header(0, None, &key), Body::Intent(dispatch("c"))).unwrap();
    let sealed = seal(p.clone(), &[&key]).unwrap();
    assert_eq!(*sealed.line.last().unwrap(), b'\n');
    assert_eq!(sealed.line.iter().filter(|&&b| b == b'\n').count(), 1);
    let line = LogLine::parse(&sealed.line[..sealed.line.len() - 1]).unwrap();
    assert_eq!(line.seq, 0);
    let bytes = line.payload_bytes().unwrap();
    assert_eq!(bytes, sealed.payload_bytes);
    assert_eq!(line.receipt_hash, hash_string(&receipt_hash(&bytes)));
    let v = line
        .envelope
        .verify(PAYLOAD_TYPE, &[key.public()], 1)
        .unwrap();
    assert_eq!(ReceiptPayload::decode(&v.payload).unwrap(), p);
}

#[test]
fn times_are_rfc3339_utc_millis() {
    let t = UNIX_EPOCH + Duration::from_micros(1_795_548_961_274_627);
    assert_eq!(rfc3339_millis(t), "2026-11-24T19:36:01.274Z");
    assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert!(timestamp("t", "2026-11-24T19:36:01.274627+00:00").is_ok());
    assert!(timestamp("t", "2026-11-24 19:36:01Z").is_err());
}

#[test]
fn the_registry_service_record_is_canonical_optional_and_closed() {
    let key = KeyPair::from_seed(&[3; 32]);
    let mut d = dispatch("c-reg");
    d.registry_service = Some(crate::registry_service::RegistryEvidence {
        ban_list_fetched_at: Some("2026-11-24T19:36:00.000Z".into()),
        status: "active".into(),
        status_fetched_at: Some("2026-11-24T19:35:59.000Z".into()),
        warning: Some("registry service data is stale".into()),
    });
    let executed = |dispatch| Body::Executed {
        intent_seq: 4,
        dispatch,
        execution: execution(),
    };
    let p = ReceiptPayload::new(&header(5, Some([1; 32]), &key), executed(d)).unwrap();
    let bytes = p.encode().unwrap();
    assert!(canonical::is_canonical(&bytes));
    assert_eq!(ReceiptPayload::decode(&bytes).unwrap(), p);
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        text.contains("\"registry_service\":{\"ban_list_fetched_at\""),
        "{text}"
    );
    let extra = text.replace("\"status\":\"active\"", "\"extra\":1,\"status\":\"active\"");
    assert!(ReceiptPayload::decode(extra.as_bytes()).is_err());
    // Absent when the service is off: receipts without it are unchanged.
    let plain =
        ReceiptPayload::new(&header(5, Some([1; 32]), &key), executed(dispatch("c-reg"))).unwrap();
    assert!(
        !String::from_utf8(plain.encode().unwrap())
            .unwrap()
            .contains("registry_service")
    );
}
