use super::*;

pub(crate) fn schema_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/cedar/wcp.cedarschema"
    ))
    .unwrap()
}

pub(crate) fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        rel: name.to_owned(),
        display: format!("set/{name}"),
        text: text.to_owned(),
    }
}

pub(crate) fn sources(files: &[(&str, &str)]) -> PolicySetSources {
    PolicySetSources {
        name: "test".into(),
        version: "1".into(),
        schema: file("wcp.cedarschema", &schema_text()),
        policies: files.iter().map(|(n, t)| file(n, t)).collect(),
        golden: None,
    }
}

const ALLOW_DEV: &str = r#"@id("pol.dev.allow")
@reason("dev allows")
permit (principal, action == Wcp::Action::"dispatch", resource)
when { context.env == Wcp::Env::"dev" };
"#;

fn diagnostics(src: &PolicySetSources) -> Vec<Diagnostic> {
    match compile(src) {
        Ok(_) => panic!("expected the set to be refused"),
        Err(e) => e.diagnostics().to_vec(),
    }
}

#[test]
fn the_bundled_policy_set_compiles() {
    let src = read_sources(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/cedar"
    )))
    .unwrap();
    let set = compile(&src).unwrap();
    assert_eq!(set.name(), "wcp-default");
    assert!(set.len() >= 12, "{}", set.len());
    let v = set.policy_version();
    assert!(v.starts_with("wcp-default@1.0.0+"), "{v}");
    assert_eq!(v.len(), "wcp-default@1.0.0+".len() + 16);
    assert!(set.content_hash().starts_with(&v[v.len() - 16..]));
    // Every level and both effects are represented, with their own file positions.
    let levels: std::collections::BTreeSet<_> =
        set.policies().filter_map(|p| p.require_human).collect();
    assert_eq!(levels.len(), 4, "{levels:?}");
    let routine = set.policy("pol.prod.routine").unwrap();
    assert_eq!(routine.effect, Effect::Permit);
    assert!(routine.file.ends_with("production.cedar"));
    let text = &src.policies[2].text;
    let (line, _) = line_col(text, text.find("@id(\"pol.prod.routine\")").unwrap());
    assert_eq!(routine.line, line);
    assert!(src.golden.is_some());
}

#[test]
fn syntax_errors_point_at_file_line_and_column() {
    let bad = "@id(\"pol.dev.allow\")\n@reason(\"r\")\npermit (principal, action, resource)\nwhen { context.env == };\n";
    let d = diagnostics(&sources(&[("good.cedar", ALLOW_DEV), ("bad.cedar", bad)]));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].kind, DiagnosticKind::Syntax);
    assert_eq!(d[0].file, "set/bad.cedar");
    assert_eq!((d[0].line, d[0].column), (4, 23), "{}", d[0]);
    let shown = d[0].to_string();
    assert!(
        shown.starts_with("set/bad.cedar:4:23: syntax error: unexpected token `}`"),
        "{shown}"
    );
    assert!(d[0].help.is_some() || shown.contains("expected"), "{shown}");
}

#[test]
fn schema_violations_point_at_the_offending_expression() {
    let bad = r#"@id("pol.dev.typos")
@reason("typos")
forbid (principal, action == Wcp::Action::"dispatch", resource)
when {
  context.env == Wcp::Env::"production" ||
  context.envv == Wcp::Env::"dev" ||
  context.worker.species == "wrk.x" ||
  context.chain_blast_prior == "high"
};
"#;
    let d = diagnostics(&sources(&[("a.cedar", ALLOW_DEV), ("typos.cedar", bad)]));
    assert!(
        d.iter().all(|x| x.kind == DiagnosticKind::Validation),
        "{d:?}"
    );
    assert!(
        d.iter()
            .all(|x| x.policy_id.as_deref() == Some("pol.dev.typos"))
    );
    assert!(d.iter().all(|x| x.file == "set/typos.cedar"));
    let find = |needle: &str| {
        d.iter()
            .find(|x| x.message.contains(needle))
            .unwrap_or_else(|| panic!("no diagnostic mentions {needle}: {d:#?}"))
    };
    let e = find("production");
    assert_eq!((e.line, e.column), (5, 18), "{e}");
    assert!(e.help.as_deref().unwrap().contains("\"prod\""), "{e}");
    let e = find("envv");
    assert_eq!((e.line, e.column), (6, 3), "{e}");
    assert!(e.help.as_deref().unwrap().contains("env"), "{e}");
    let e = find("worker");
    assert_eq!(e.line, 7, "{e}");
    assert!(
        d.iter().any(|x| x.line == 8),
        "string compared with Long: {d:#?}"
    );
    assert!(!e.message.starts_with("for policy"), "{e}");
}

#[test]
fn validator_warnings_are_errors() {
    let impossible = r#"@id("pol.dev.never")
@reason("never")
forbid (principal, action == Wcp::Action::"dispatch", resource)
when { context.env == Wcp::Env::"dev" && false };
"#;
    let d = diagnostics(&sources(&[("a.cedar", ALLOW_DEV), ("b.cedar", impossible)]));
    assert_eq!(d[0].kind, DiagnosticKind::Validation, "{d:?}");
    assert_eq!(d[0].policy_id.as_deref(), Some("pol.dev.never"));
    assert!(d[0].help.is_some());
}

#[test]
fn annotation_rules_are_enforced_with_locations() {
    let text = r#"// comment; with a semicolon
@id("pol.dev.allow")
@reason("ok; semicolons in strings do not split statements")
permit (principal, action, resource);

@reason("no id")
permit (principal, action, resource);

@id("pol.Dev_bad")
@reason("bad id")
permit (principal, action, resource);

@id("pol.dev.allow")
@reason("duplicate")
permit (principal, action, resource);

@id("pol.dev.no-reason")
permit (principal, action, resource);

@id("pol.dev.forbid-human")
@reason("r")
@require_human("gatekeeper")
forbid (principal, action, resource);

@id("pol.dev.bad-level")
@reason("r")
@require_human("boss")
permit (principal, action, resource);

@id("pol.dev.typo")
@reason("r")
@require_humans("gatekeeper")
permit (principal, action, resource);
"#;
    let d = diagnostics(&sources(&[("ann.cedar", text)]));
    let at = |needle: &str| {
        d.iter()
            .find(|x| x.message.contains(needle))
            .map(|x| (x.line, x.column))
            .unwrap_or_else(|| panic!("{needle}: {d:#?}"))
    };
    assert!(d.iter().all(|x| x.kind == DiagnosticKind::Annotation));
    assert_eq!(at("no @id"), (6, 1));
    assert_eq!(at("not a WCP policy id"), (9, 1));
    assert_eq!(at("already used"), (13, 1));
    assert!(
        d.iter()
            .find(|x| x.message.contains("already used"))
            .unwrap()
            .help
            .as_deref()
            .unwrap()
            .contains("set/ann.cedar:2:1")
    );
    assert_eq!(at("no @reason"), (17, 1));
    assert_eq!(at("on a forbid"), (22, 1));
    assert_eq!(at("not a WCP supervisor level"), (27, 1));
    assert_eq!(at("unknown annotation @require_humans"), (32, 1));
    assert_eq!(d.len(), 7, "{d:#?}");
}

#[test]
fn templates_and_empty_files_are_refused() {
    let tpl =
        "@id(\"pol.t.x\")\n@reason(\"r\")\npermit (principal == ?principal, action, resource);\n";
    let d = diagnostics(&sources(&[("t.cedar", tpl)]));
    assert!(d[0].message.contains("templates"), "{d:?}");
    let d = diagnostics(&sources(&[("e.cedar", "// nothing here\n")]));
    assert!(d[0].message.contains("no policy"), "{d:?}");
}

#[test]
fn a_schema_that_does_not_match_the_hall_context_is_refused() {
    let mut src = sources(&[("a.cedar", ALLOW_DEV)]);
    src.schema.text = src.schema.text.replace("      worker?: Worker,\n", "");
    let d = diagnostics(&src);
    assert_eq!(d[0].kind, DiagnosticKind::Schema);
    assert!(
        d[0].message.contains("does not accept the request"),
        "{}",
        d[0]
    );
    // A schema syntax error is located in the schema file.
    let mut src = sources(&[("a.cedar", ALLOW_DEV)]);
    src.schema.text = src
        .schema
        .text
        .replace("entity CapabilityGroup;", "entity CapabilityGroup");
    let d = diagnostics(&src);
    assert_eq!(d[0].kind, DiagnosticKind::Schema);
    assert_eq!(d[0].file, "set/wcp.cedarschema");
    assert!(d[0].line > 30, "{}", d[0]);
}

#[test]
fn manifest_errors_are_located() {
    let bad = "name = \"Wcp Default\"\nversion = \"1\"\nschema = \"s\"\npolicies = []\n";
    let Err(PolicyLoadError::Invalid(d)) = parse_manifest(bad, "policyset.toml") else {
        panic!()
    };
    assert_eq!((d[0].line, d[0].kind), (1, DiagnosticKind::Manifest));
    assert_eq!(d[1].line, 4);
    let Err(PolicyLoadError::Invalid(d)) = parse_manifest(
        "name = \"x\"\nversion = \"1\"\nschema = \"s\"\npolicies = [\"a\"]\npolicy = \"b\"\n",
        "m.toml",
    ) else {
        panic!()
    };
    assert_eq!(d[0].line, 5, "{}", d[0]);
    assert!(d[0].message.contains("unknown field"), "{}", d[0]);
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_sources(dir.path()),
        Err(PolicyLoadError::Read { .. })
    ));
}

#[test]
fn the_version_changes_with_the_content() {
    let a = compile(&sources(&[("a.cedar", ALLOW_DEV)])).unwrap();
    let b = compile(&sources(&[(
        "a.cedar",
        &ALLOW_DEV.replace("dev allows", "dev allows!"),
    )]))
    .unwrap();
    let a2 = compile(&sources(&[("a.cedar", ALLOW_DEV)])).unwrap();
    assert_ne!(a.policy_version(), b.policy_version());
    assert_eq!(a.policy_version(), a2.policy_version());
    assert!(a.policy_version().starts_with("test@1+"));
}

#[test]
fn statement_spans_skip_strings_and_comments() {
    let text = "// a; b\n@id(\"x;y\") permit(principal, action, resource) when { \"\\\";\" == \"\" };\n\n  forbid(principal, action, resource);";
    let spans = statement_spans(text);
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(text[spans[0].clone()].starts_with("@id(\"x;y\")"));
    assert!(text[spans[1].clone()].starts_with("forbid"));
}
