//! Shadow-rule detection: an earlier rule that matches everything a later rule matches makes the
//! later rule dead. PyHall (`detect_shadow_rules`) recomputes this on every prod/edge request;
//! the Hall computes it once at load and keeps PyHall's per-decision effect
//! (`DENY_SHADOW_RULES_DETECTED` in prod/edge) so decisions agree.
//!
//! Semantics are PyHall's, restricted to the condition forms the Hall accepts:
//! for each pair (earlier E, later L), L is shadowed when the two `match` objects are equal and
//! the ids differ, or when for every key of either rule, E's condition covers L's (an absent E
//! condition or `{"any": true}` covers anything; an `in` list covers a member or a sub-list;
//! equal conditions cover each other; an absent L condition is covered only by an absent or
//! `{"any": true}` E condition). Warnings come in pair order (earlier rule outer loop), so a rule
//! shadowed by several earlier rules appears several times, as in PyHall.

use std::collections::HashMap;

use super::{Condition, Rule};

/// One shadowing pair.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShadowWarning {
    /// The earlier, broader rule.
    pub shadower: String,
    /// The later rule that can never be reached.
    pub shadowed: String,
    /// Human explanation.
    pub reason: String,
}

fn covers(early: Option<&Condition>, late: &Condition) -> bool {
    match (early, late) {
        (None, _) | (Some(Condition::Any), _) => true,
        (Some(e), l) if e == l => true,
        (Some(Condition::In(set)), Condition::Exact(v)) => set.contains(v),
        (Some(Condition::In(set)), Condition::In(sub)) => sub.iter().all(|v| set.contains(v)),
        _ => false,
    }
}

/// Whether `early` shadows `late` under PyHall's rules.
pub fn shadows(early: &Rule, late: &Rule) -> bool {
    let (e, l) = (&early.matcher.conditions, &late.matcher.conditions);
    if e == l {
        return early.rule_id != late.rule_id;
    }
    e.iter().zip(l.iter()).all(|(ec, lc)| match lc {
        None => matches!(ec, None | Some(Condition::Any)),
        Some(lc) => covers(ec.as_ref(), lc),
    })
}

/// All shadow warnings of a rule set, in PyHall's order (earlier rule outer, later rule inner).
///
/// Run once at load. Only pairs that can shadow are compared: a later rule naming capability
/// `c` can only be covered by an earlier rule whose capability condition is a wildcard or names
/// `c`, and a later wildcard-capability rule only by an earlier wildcard. So each rule is
/// compared with the earlier wildcard rules and the earlier rules sharing one of its
/// capabilities — near-linear for real rule sets, where PyHall compares every pair.
pub fn detect(rules: &[Rule]) -> Vec<ShadowWarning> {
    let mut wildcard: Vec<usize> = Vec::new();
    let mut by_capability: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (j, late) in rules.iter().enumerate() {
        let caps: &[String] = match &late.matcher.conditions[0] {
            None | Some(Condition::Any) => &[],
            Some(Condition::Exact(c)) => std::slice::from_ref(c),
            Some(Condition::In(list)) => list,
        };
        candidates.clear();
        candidates.extend_from_slice(&wildcard);
        for cap in caps {
            candidates.extend(by_capability.get(cap.as_str()).into_iter().flatten());
        }
        candidates.sort_unstable();
        candidates.dedup();
        pairs.extend(
            candidates
                .iter()
                .filter(|&&i| shadows(&rules[i], late))
                .map(|&i| (i, j)),
        );
        if caps.is_empty() {
            wildcard.push(j);
        }
        for cap in caps {
            let list = by_capability.entry(cap.as_str()).or_default();
            if list.last() != Some(&j) {
                list.push(j);
            }
        }
    }
    pairs.sort_unstable();
    pairs
        .into_iter()
        .map(|(i, j)| {
            let (early, late) = (&rules[i], &rules[j]);
            let reason = if early.matcher == late.matcher {
                "identical match conditions"
            } else {
                "every request the later rule matches is matched by the earlier rule first"
            };
            ShadowWarning {
                shadower: early.rule_id.clone(),
                shadowed: late.rule_id.clone(),
                reason: reason.to_owned(),
            }
        })
        .collect()
}

/// Every pair, as PyHall compares them: the reference [`detect`] is tested against.
pub fn detect_all_pairs(rules: &[Rule]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, early) in rules.iter().enumerate() {
        for (j, late) in rules.iter().enumerate().skip(i + 1) {
            if shadows(early, late) {
                out.push((i, j));
            }
        }
    }
    out
}
