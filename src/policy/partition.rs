//! Which policies can apply to a request, decided once at load from the policies themselves, so
//! Cedar evaluates only those.
//!
//! Cedar evaluates every policy of a set for every request, and most of a gate decision's time
//! is spent there. But the four closed RouteInput vocabularies (`env`, `data_label`,
//! `tenant_risk`, `qos_class`) split requests into 4 × 3 × 3 × 4 = 144 cells, and most policies
//! start with a test on them (`context.env == Wcp::Env::"prod" && …`). For each cell, the
//! policies whose leading tests are false there are left out of that cell's policy set.
//!
//! # Why this cannot change a decision
//! A Cedar policy holds when its scope and its conditions hold; conditions are `&&`-chains
//! evaluated left to right with short circuit. Only the *leading* conjuncts of the first `when`
//! clause are used, and only while each is a *safe test*: a comparison (`==`, `!=`) between one
//! of the four required context attributes and an entity literal, or `||`, `&&`, `!` of safe
//! tests. A safe test can neither error nor depend on anything but the cell. So if a leading safe
//! test is false in a cell, the whole condition is false there, before any later conjunct could
//! error; the scope cannot error either. Such a policy is neither satisfied nor erroring in that
//! cell: leaving it out gives Cedar the same determining policies, the same errors and the same
//! decision. The first conjunct that is not a safe test ends the analysis (it and everything
//! after it are kept for Cedar to evaluate). A test (`partition_never_changes_a_verdict`) compares
//! partitioned and full evaluation over every cell.

use std::collections::HashMap;

use cedar_policy::{Policy, PolicySet};
use serde_json::Value;

use crate::wcp::{DataLabel, Env, QosClass, TenantRisk};

/// Number of (env, data_label, tenant_risk, qos_class) cells.
pub const CELLS: usize = 4 * 3 * 3 * 4;

/// The cell of a request.
pub fn cell(env: Env, label: DataLabel, risk: TenantRisk, qos: QosClass) -> usize {
    ((env.index() * DataLabel::ALL.len() + label.index()) * TenantRisk::ALL.len() + risk.index())
        * QosClass::ALL.len()
        + qos.index()
}

/// A set of cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Cells([u64; 3]);

impl Cells {
    const ALL: Cells = Cells([u64::MAX, u64::MAX, (1 << (CELLS - 128)) - 1]);
    const NONE: Cells = Cells([0; 3]);

    fn from_fn(f: impl Fn(Env, DataLabel, TenantRisk, QosClass) -> bool) -> Cells {
        let mut c = Cells::NONE;
        for &e in Env::ALL {
            for &l in DataLabel::ALL {
                for &r in TenantRisk::ALL {
                    for &q in QosClass::ALL {
                        if f(e, l, r, q) {
                            let i = cell(e, l, r, q);
                            c.0[i / 64] |= 1 << (i % 64);
                        }
                    }
                }
            }
        }
        c
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn and(self, o: Cells) -> Cells {
        Cells([self.0[0] & o.0[0], self.0[1] & o.0[1], self.0[2] & o.0[2]])
    }
    fn or(self, o: Cells) -> Cells {
        Cells([self.0[0] | o.0[0], self.0[1] | o.0[1], self.0[2] | o.0[2]])
    }
    fn not(self) -> Cells {
        Cells([!self.0[0], !self.0[1], !self.0[2]]).and(Cells::ALL)
    }
}

/// `context.<attr>` → the attribute name, if `e` is exactly that.
fn context_attr(e: &Value) -> Option<&str> {
    let dot = e.get(".")?;
    if dot.get("left")?.get("Var")?.as_str()? != "context" {
        return None;
    }
    dot.get("attr")?.as_str()
}

/// An entity literal → (type, id).
fn entity_literal(e: &Value) -> Option<(&str, &str)> {
    let ent = e.get("Value")?.get("__entity")?;
    Some((ent.get("type")?.as_str()?, ent.get("id")?.as_str()?))
}

/// The cells where `context.<attr> == <type>::"<id>"` holds, when that is a safe test.
fn equality(attr: &str, ty: &str, id: &str) -> Option<Cells> {
    Some(match (attr, ty) {
        ("env", "Wcp::Env") => Cells::from_fn(|e, _, _, _| e.as_str() == id),
        ("data_label", "Wcp::DataLabel") => Cells::from_fn(|_, l, _, _| l.as_str() == id),
        ("tenant_risk", "Wcp::TenantRisk") => Cells::from_fn(|_, _, r, _| r.as_str() == id),
        ("qos_class", "Wcp::QosClass") => Cells::from_fn(|_, _, _, q| q.as_str() == id),
        _ => return None,
    })
}

/// The cells where a safe test holds, or `None` when `e` is not a safe test.
fn safe_test(e: &Value) -> Option<Cells> {
    let obj = e.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    let (op, body) = obj.iter().next()?;
    match op.as_str() {
        "==" | "!=" => {
            let (l, r) = (body.get("left")?, body.get("right")?);
            let (attr, (ty, id)) = match (context_attr(l), entity_literal(r)) {
                (Some(a), Some(lit)) => (a, lit),
                _ => (context_attr(r)?, entity_literal(l)?),
            };
            let eq = equality(attr, ty, id)?;
            Some(if op == "==" { eq } else { eq.not() })
        }
        "||" => Some(safe_test(body.get("left")?)?.or(safe_test(body.get("right")?)?)),
        "&&" => Some(safe_test(body.get("left")?)?.and(safe_test(body.get("right")?)?)),
        "!" => Some(safe_test(body.get("arg")?)?.not()),
        _ => None,
    }
}

/// Flattens an `&&` chain in evaluation order.
fn conjuncts<'a>(e: &'a Value, out: &mut Vec<&'a Value>) {
    match e.get("&&") {
        Some(and) if e.as_object().is_some_and(|o| o.len() == 1) => {
            if let (Some(l), Some(r)) = (and.get("left"), and.get("right")) {
                conjuncts(l, out);
                conjuncts(r, out);
            } else {
                out.push(e);
            }
        }
        _ => out.push(e),
    }
}

/// The cells where `policy` may hold (every cell when nothing can be concluded).
fn applicable(policy: &Policy) -> Cells {
    let Ok(est) = policy.to_json() else {
        return Cells::ALL;
    };
    let Some(first) = est
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Cells::ALL;
    };
    if first.get("kind").and_then(Value::as_str) != Some("when") {
        return Cells::ALL;
    }
    let Some(body) = first.get("body") else {
        return Cells::ALL;
    };
    let mut list = Vec::new();
    conjuncts(body, &mut list);
    let mut cells = Cells::ALL;
    for c in list {
        match safe_test(c) {
            Some(t) => cells = cells.and(t),
            None => break,
        }
    }
    cells
}

/// One policy set per distinct group of applicable policies, and the cell → set table.
#[derive(Debug, Clone)]
pub struct Partition {
    sets: Vec<PolicySet>,
    by_cell: Vec<u16>,
}

impl Partition {
    /// Splits `policies` by cell. Never fails: a set that cannot be split stays whole.
    pub fn new(policies: &PolicySet) -> Self {
        let all: Vec<(Policy, Cells)> = policies
            .policies()
            .map(|p| (p.clone(), applicable(p)))
            .collect();
        let mut sets = Vec::new();
        let mut index: HashMap<Vec<usize>, u16> = HashMap::new();
        let mut by_cell = Vec::with_capacity(CELLS);
        for i in 0..CELLS {
            let members: Vec<usize> = (0..all.len()).filter(|&k| all[k].1.contains(i)).collect();
            let slot = match index.get(&members) {
                Some(&s) => s,
                None => {
                    let set = PolicySet::from_policies(members.iter().map(|&k| all[k].0.clone()));
                    let Ok(set) = set else {
                        // Cannot happen (the policies come from one valid set); stay whole.
                        return Partition {
                            sets: vec![policies.clone()],
                            by_cell: vec![0; CELLS],
                        };
                    };
                    let s = sets.len() as u16;
                    sets.push(set);
                    index.insert(members, s);
                    s
                }
            };
            by_cell.push(slot);
        }
        Partition { sets, by_cell }
    }

    /// The policies that may apply in `cell`.
    pub fn for_cell(&self, cell: usize) -> &PolicySet {
        &self.sets[usize::from(self.by_cell[cell])]
    }

    /// How many policies may apply in `cell`.
    pub fn size(&self, cell: usize) -> usize {
        self.for_cell(cell).num_of_policies()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn partition(text: &str) -> Partition {
        Partition::new(&PolicySet::from_str(text).unwrap())
    }

    #[test]
    fn cells_are_dense_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for &e in Env::ALL {
            for &l in DataLabel::ALL {
                for &r in TenantRisk::ALL {
                    for &q in QosClass::ALL {
                        assert!(seen.insert(cell(e, l, r, q)));
                    }
                }
            }
        }
        assert_eq!(seen.len(), CELLS);
        assert_eq!(seen.iter().max(), Some(&(CELLS - 1)));
        assert_eq!(Cells::ALL.not(), Cells::NONE);
    }

    #[test]
    fn leading_safe_tests_select_cells() {
        let p = partition(
            r#"
permit (principal, action, resource)
when { (context.env == Wcp::Env::"dev" || Wcp::Env::"stage" == context.env) && context.data_label != Wcp::DataLabel::"RESTRICTED" && context.dry_run };
permit (principal, action, resource)
when { context.dry_run && context.env == Wcp::Env::"dev" };
permit (principal, action, resource)
unless { context.env == Wcp::Env::"dev" };
permit (principal, action, resource)
when { !(context.qos_class == Wcp::QosClass::"P0") && context.tenant_risk == Wcp::TenantRisk::"high" };
"#,
        );
        let c = |e, l, r, q| p.size(cell(e, l, r, q));
        use {DataLabel as L, Env as E, QosClass as Q, TenantRisk as R};
        // Policy 1 applies in dev/stage non-RESTRICTED; 2 and 3 are kept everywhere (no leading
        // safe test); 4 applies for high risk outside P0.
        assert_eq!(c(E::Dev, L::Internal, R::Low, Q::P2), 3);
        assert_eq!(c(E::Dev, L::Restricted, R::Low, Q::P2), 2);
        assert_eq!(c(E::Prod, L::Internal, R::High, Q::P2), 3);
        assert_eq!(c(E::Prod, L::Internal, R::High, Q::P0), 2);
        assert_eq!(c(E::Stage, L::Public, R::High, Q::P1), 4);
    }

    #[test]
    fn analysis_stops_at_the_first_unsafe_conjunct() {
        // The env test comes after a conjunct that could error: the policy is kept everywhere.
        let p = partition(
            r#"permit (principal, action, resource)
when { context.chain_blast_prior * 4611686018427387904 > 0 && context.env == Wcp::Env::"dev" };"#,
        );
        assert_eq!(
            p.size(cell(
                Env::Prod,
                DataLabel::Public,
                TenantRisk::Low,
                QosClass::P3
            )),
            1
        );
        // Comparisons with other attributes or literal types are not safe tests.
        let p = partition(
            r#"permit (principal, action, resource)
when { context.worker.risk_tier == Wcp::Env::"dev" && context.env == Wcp::Env::"dev" };"#,
        );
        assert_eq!(
            p.size(cell(
                Env::Prod,
                DataLabel::Public,
                TenantRisk::Low,
                QosClass::P3
            )),
            1
        );
    }
}
