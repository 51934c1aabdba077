//! Every case of PyHall's routing vectors (tests/vectors/routing.json) must agree with the Hall.

use wcp_hall::conformance::run_routing_vectors;

#[test]
fn all_routing_vectors_agree_with_pyhall() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/routing.json"
    ))
    .expect("tests/vectors/routing.json is part of the repository");
    let results = run_routing_vectors(&text).expect("vector file runs");
    assert_eq!(results.len(), 600, "the vector file has 600 cases");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed())
        .map(|r| format!("{}:\n    {}", r.id, r.mismatches.join("\n    ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases disagree with PyHall:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}
