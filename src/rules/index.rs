//! The first-match index: a rule lookup whose cost does not depend on the number of rules.
//!
//! Four of the five routed fields are closed vocabularies (4 envs × 3 labels × 3 risks × 4 QoS
//! classes = 144 cells). For every capability id that some rule names, and once for "any other
//! capability", the index stores a table holding, per cell, the position of the first rule
//! (in file order) that matches. A lookup is one hash probe on the capability id and one array
//! read, so first-match semantics are kept exactly while the cost stays flat from 10 to 10,000
//! rules. Build cost is O(distinct capabilities × rules that can match them), paid once at load.

use std::collections::HashMap;

use super::{Condition, Rule};
use crate::wcp::enums::{DataLabel, Env, QosClass, TenantRisk};

const CELLS: usize = 4 * 3 * 3 * 4;
const NONE: u32 = u32::MAX;

type Table = Box<[u32; CELLS]>;

/// Compiled first-match tables.
#[derive(Debug, Clone)]
pub struct RuleIndex {
    by_capability: HashMap<String, Table>,
    /// For capability ids no rule names: only wildcard-capability rules can match.
    other: Table,
}

fn cell(env: usize, label: usize, risk: usize, qos: usize) -> usize {
    ((env * 3 + label) * 3 + risk) * 4 + qos
}

/// Bit mask of the vocabulary values a condition accepts (bit i = value with index i).
fn mask(cond: Option<&Condition>, names: &[&str]) -> u8 {
    let all = (1u8 << names.len()) - 1;
    match cond {
        None | Some(Condition::Any) => all,
        Some(c) => names
            .iter()
            .enumerate()
            .filter(|(_, n)| c.accepts(n))
            .fold(0, |m, (i, _)| m | (1 << i)),
    }
}

/// The cells a rule matches, as a list of cell numbers.
fn rule_cells(rule: &Rule) -> Vec<usize> {
    let c = &rule.matcher.conditions;
    let masks = [
        mask(c[1].as_ref(), Env::NAMES),
        mask(c[2].as_ref(), DataLabel::NAMES),
        mask(c[3].as_ref(), TenantRisk::NAMES),
        mask(c[4].as_ref(), QosClass::NAMES),
    ];
    let mut cells = Vec::new();
    for e in (0..4).filter(|i| masks[0] & (1 << i) != 0) {
        for l in (0..3).filter(|i| masks[1] & (1 << i) != 0) {
            for r in (0..3).filter(|i| masks[2] & (1 << i) != 0) {
                for q in (0..4).filter(|i| masks[3] & (1 << i) != 0) {
                    cells.push(cell(e, l, r, q));
                }
            }
        }
    }
    cells
}

/// Fills empty cells of `table` from rules in the given (ascending) order; stops when full.
fn fill(table: &mut Table, order: impl Iterator<Item = usize>, cells: &[Vec<usize>]) {
    let mut empty = table.iter().filter(|&&v| v == NONE).count();
    for i in order {
        if empty == 0 {
            break;
        }
        for &c in &cells[i] {
            if table[c] == NONE {
                table[c] = i as u32;
                empty -= 1;
            }
        }
    }
}

/// Merges two ascending index lists.
fn merge<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (a.get(i), b.get(j)) {
        (Some(&x), Some(&y)) if x <= y => {
            i += 1;
            Some(x)
        }
        (_, Some(&y)) => {
            j += 1;
            Some(y)
        }
        (Some(&x), None) => {
            i += 1;
            Some(x)
        }
        (None, None) => None,
    })
}

impl RuleIndex {
    /// Builds the tables for `rules` (in file order).
    pub fn build(rules: &[Rule]) -> Self {
        let cells: Vec<Vec<usize>> = rules.iter().map(rule_cells).collect();
        let mut wildcard = Vec::new();
        let mut specific: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.matcher.conditions[0] {
                None | Some(Condition::Any) => wildcard.push(i),
                Some(Condition::Exact(cap)) => specific.entry(cap).or_default().push(i),
                Some(Condition::In(caps)) => {
                    for cap in caps {
                        let list = specific.entry(cap).or_default();
                        // A capability listed twice in one rule must not be pushed twice.
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
            }
        }
        let mut other: Table = Box::new([NONE; CELLS]);
        fill(&mut other, wildcard.iter().copied(), &cells);
        let by_capability = specific
            .into_iter()
            .map(|(cap, list)| {
                let mut table: Table = Box::new([NONE; CELLS]);
                fill(&mut table, merge(&list, &wildcard), &cells);
                (cap.to_owned(), table)
            })
            .collect();
        RuleIndex {
            by_capability,
            other,
        }
    }

    /// Position of the first matching rule, if any.
    pub fn first_match(
        &self,
        capability_id: &str,
        env: Env,
        label: DataLabel,
        risk: TenantRisk,
        qos: QosClass,
    ) -> Option<usize> {
        let table = self.by_capability.get(capability_id).unwrap_or(&self.other);
        let hit = table[cell(env.index(), label.index(), risk.index(), qos.index())];
        (hit != NONE).then_some(hit as usize)
    }
}
