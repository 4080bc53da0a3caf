//! Each object's history is linearizable (Wing and Gong's search with the memoization of
//! Lowe's and porcupine's checkers): there is an order of the operations, each placed between
//! its call and its return, in which a register with create, compare-and-set, delete and read
//! gives every result the clients saw. A write whose outcome is unknown may take effect at any
//! point after its call, or never: it is never counted as absent. Because every write writes
//! a value of its own, an acknowledged write lost by a crash, or a write applied twice, shows
//! here as a read no order explains.
//!
//! The replicas' applications resolve most unknown outcomes first: a create, update or status
//! write whose value appears in a committed change was applied (it succeeded, at some point
//! after its call), and one whose value never appears changed nothing (never applied, or
//! refused). Only unknown deletes stay open. This keeps the search small, and stricter.

use std::collections::{BTreeMap, HashSet};

use super::Checker;
use crate::history::{History, Op, OpKind, OpResult, Value};

/// The most search states per object before the checker gives up (and says so: a history it
/// could not decide is reported, never passed).
pub const SEARCH_STATES_MAX: usize = 2_000_000;

/// The linearizability checker.
#[derive(Debug)]
pub struct Linearizable {
    /// The most search states per object.
    pub states_max: usize,
}

impl Default for Linearizable {
    fn default() -> Self {
        Self { states_max: SEARCH_STATES_MAX }
    }
}

impl Checker for Linearizable {
    fn name(&self) -> &'static str {
        "linearizable"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let ops = resolve_unknown(history);
        let mut by_key: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
        for op in &ops {
            by_key.entry(op.key).or_default().push(op);
        }
        by_key
            .into_iter()
            .filter_map(|(key, ops)| check_object(&ops, self.states_max).err().map(|e| format!("object k{key}: {e}")))
            .collect()
    }
}

/// The history's operations with the unknown outcomes of creates, updates and status writes
/// resolved by the committed changes: applied (`Ok`, still without a return) or dropped.
pub fn resolve_unknown(history: &History) -> Vec<Op> {
    // Each write's id first appears on its own object, in the change it made.
    let mut applied = std::collections::BTreeSet::new();
    for a in super::first_applications(history).values() {
        for change in &a.changes {
            applied.insert((change.key, change.value.spec));
            applied.insert((change.key, change.value.status));
        }
    }
    history
        .ops
        .iter()
        .filter_map(|op| {
            let id = match op.kind {
                _ if op.result != OpResult::Unknown => return Some(op.clone()),
                OpKind::Create(v) => v.spec,
                OpKind::Update { spec, .. } => spec,
                OpKind::Status { status, .. } => status,
                OpKind::Delete | OpKind::Get => return Some(op.clone()),
            };
            applied.contains(&(op.key, id)).then(|| Op { result: OpResult::Ok, ..op.clone() })
        })
        .collect()
}

/// The register: what `kind` does to `state`, and what it answers.
pub fn step(state: Option<Value>, kind: OpKind) -> (Option<Value>, OpResult) {
    match (kind, state) {
        (OpKind::Create(v), None) => (Some(v), OpResult::Ok),
        (OpKind::Create(_), Some(_)) => (state, OpResult::AlreadyExists),
        (OpKind::Update { .. } | OpKind::Status { .. } | OpKind::Delete, None) => (None, OpResult::NotFound),
        (OpKind::Update { spec, expect }, Some(s)) if s == expect => (Some(Value { spec, ..s }), OpResult::Ok),
        (OpKind::Status { status, expect }, Some(s)) if s == expect => (Some(Value { status, ..s }), OpResult::Ok),
        (OpKind::Update { .. } | OpKind::Status { .. }, Some(_)) => (state, OpResult::Conflict),
        (OpKind::Delete, Some(_)) => (None, OpResult::Ok),
        (OpKind::Get, _) => (state, OpResult::Read(state)),
    }
}

/// A set of operations linearized so far.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }
}

/// One level of the search: the state reached, the operations that may go next, and which of
/// them is being tried.
struct Frame {
    state: Option<Value>,
    candidates: Vec<usize>,
    next: usize,
}

/// Whether one object's operations (starting from an absent object) are linearizable.
///
/// # Errors
/// Why not: the longest prefix of operations found linearizable and the first that could not
/// follow it, or that the search gave up after `states_max` states.
pub fn check_object(ops: &[&Op], states_max: usize) -> Result<(), String> {
    let mut ops: Vec<&Op> = ops.to_vec();
    ops.sort_by_key(|op| op.call);
    let n = ops.len();
    let definite = |i: usize| ops[i].result != OpResult::Unknown;
    let mut remaining = (0..n).filter(|i| definite(*i)).count();
    let mut linearized = Bits::new(n);
    // The operations that may be linearized next: not yet linearized, called before the
    // earliest return among the definite ones left.
    let candidates = |linearized: &Bits| {
        let earliest =
            (0..n).filter(|i| !linearized.get(*i) && definite(*i)).filter_map(|i| ops[i].ret).min().unwrap_or(u64::MAX);
        (0..n).filter(|i| !linearized.get(*i) && ops[*i].call < earliest).collect::<Vec<_>>()
    };
    let mut seen: HashSet<(Bits, Option<Value>)> = HashSet::new();
    let mut stack = vec![Frame { state: None, candidates: candidates(&linearized), next: 0 }];
    let mut deepest: (usize, Option<usize>) = (0, None);
    loop {
        if remaining == 0 {
            return Ok(());
        }
        let depth = stack.len();
        let Some(top) = stack.last_mut() else {
            let (depth, stuck) = deepest;
            let stuck = stuck.map_or_else(String::new, |i| format!("; no order explains {:?}", ops[i]));
            return Err(format!("not linearizable: at most {depth} of {n} operations could be ordered{stuck}"));
        };
        if top.next >= top.candidates.len() {
            stack.pop();
            if let Some(parent) = stack.last() {
                let undone = parent.candidates[parent.next - 1];
                linearized.set(undone, false);
                if definite(undone) {
                    remaining += 1;
                }
            }
            continue;
        }
        let i = top.candidates[top.next];
        top.next += 1;
        let (after, result) = step(top.state, ops[i].kind);
        if definite(i) && result != ops[i].result {
            if depth >= deepest.0 {
                deepest = (depth, Some(i));
            }
            continue;
        }
        linearized.set(i, true);
        if !seen.insert((linearized.clone(), after)) {
            linearized.set(i, false);
            continue;
        }
        if seen.len() > states_max {
            return Err(format!("undecided: the search gave up after {states_max} states ({n} operations)"));
        }
        if definite(i) {
            remaining -= 1;
        }
        stack.push(Frame { state: after, candidates: candidates(&linearized), next: 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(spec: u64) -> Value {
        Value { spec, status: 0 }
    }

    fn op(client: u64, kind: OpKind, call: u64, ret: Option<u64>, result: OpResult) -> Op {
        Op { client, key: 0, kind, call, ret, result }
    }

    fn check(ops: &[Op]) -> Result<(), String> {
        check_object(&ops.iter().collect::<Vec<_>>(), 10_000)
    }

    #[test]
    fn sequential_and_concurrent_histories_that_a_register_explains_pass() {
        let ops = [
            op(1, OpKind::Create(v(1)), 1, Some(2), OpResult::Ok),
            op(2, OpKind::Get, 3, Some(4), OpResult::Read(Some(v(1)))),
            // Concurrent: the read may see either.
            op(1, OpKind::Update { spec: 2, expect: v(1) }, 5, Some(8), OpResult::Ok),
            op(2, OpKind::Get, 6, Some(7), OpResult::Read(Some(v(1)))),
            op(2, OpKind::Get, 9, Some(10), OpResult::Read(Some(v(2)))),
            op(1, OpKind::Delete, 11, Some(12), OpResult::Ok),
            op(2, OpKind::Get, 13, Some(14), OpResult::Read(None)),
        ];
        assert_eq!(check(&ops), Ok(()));
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let ops = [
            op(1, OpKind::Create(v(1)), 1, Some(2), OpResult::Ok),
            // Acknowledged, then gone.
            op(2, OpKind::Get, 3, Some(4), OpResult::Read(None)),
        ];
        let e = check(&ops).expect_err("a lost write is not linearizable");
        assert!(e.contains("not linearizable"), "{e}");
    }

    #[test]
    fn a_stale_read_fails() {
        let ops = [
            op(1, OpKind::Create(v(1)), 1, Some(2), OpResult::Ok),
            op(1, OpKind::Update { spec: 2, expect: v(1) }, 3, Some(4), OpResult::Ok),
            op(2, OpKind::Get, 5, Some(6), OpResult::Read(Some(v(1)))),
        ];
        assert!(check(&ops).is_err());
    }

    #[test]
    fn an_unknown_write_may_apply_late_or_never_but_not_twice() {
        // Unknown: may take effect after the read that did not see it.
        let late = [
            op(1, OpKind::Create(v(1)), 1, None, OpResult::Unknown),
            op(2, OpKind::Get, 2, Some(3), OpResult::Read(None)),
            op(2, OpKind::Get, 4, Some(5), OpResult::Read(Some(v(1)))),
        ];
        assert_eq!(check(&late), Ok(()));
        // Or never.
        let never = [
            op(1, OpKind::Create(v(1)), 1, None, OpResult::Unknown),
            op(2, OpKind::Get, 4, Some(5), OpResult::Read(None)),
        ];
        assert_eq!(check(&never), Ok(()));
        // A write seen, overwritten, then seen again was applied twice.
        let twice = [
            op(1, OpKind::Update { spec: 2, expect: v(1) }, 0, None, OpResult::Unknown),
            op(3, OpKind::Create(v(1)), 1, Some(2), OpResult::Ok),
            op(2, OpKind::Get, 3, Some(4), OpResult::Read(Some(v(2)))),
            op(3, OpKind::Update { spec: 3, expect: v(2) }, 5, Some(6), OpResult::Ok),
            op(2, OpKind::Get, 7, Some(8), OpResult::Read(Some(v(2)))),
        ];
        assert!(check(&twice).is_err());
    }

    #[test]
    fn a_wrong_answer_to_a_compare_and_set_fails() {
        let ops = [
            op(1, OpKind::Create(v(1)), 1, Some(2), OpResult::Ok),
            op(2, OpKind::Status { status: 5, expect: v(1) }, 3, Some(4), OpResult::Conflict),
        ];
        assert!(check(&ops).is_err());
    }

    #[test]
    fn unknown_writes_are_resolved_by_the_committed_changes() {
        use crate::history::{Application, Change};
        let change = |spec| Change { event: orch_core::EventType::Added, key: 0, value: v(spec) };
        let application = Application {
            node: 1,
            index: 2,
            digest: [0; 32],
            fresh: Vec::new(),
            requests: Vec::new(),
            changes: vec![change(1)],
        };
        let ops = vec![
            op(1, OpKind::Create(v(1)), 1, None, OpResult::Unknown),
            op(2, OpKind::Create(v(2)), 2, None, OpResult::Unknown),
            op(3, OpKind::Get, 3, Some(4), OpResult::Read(Some(v(1)))),
        ];
        let history = History { ops, applications: vec![application], ..History::default() };
        let resolved = resolve_unknown(&history);
        assert_eq!(resolved.len(), 2, "the write never seen committed is dropped");
        assert_eq!(resolved[0].result, OpResult::Ok, "the one seen committed succeeded");
        assert!(Linearizable::default().check(&history).is_empty());
        // A read of the value of an unknown write that no replica ever applied: unresolved,
        // the write could explain it; resolved, nothing does.
        let phantom = History {
            ops: vec![
                op(1, OpKind::Create(v(2)), 1, None, OpResult::Unknown),
                op(2, OpKind::Get, 2, Some(3), OpResult::Read(Some(v(2)))),
            ],
            ..History::default()
        };
        assert_eq!(check(&phantom.ops), Ok(()), "the unknown write alone explains the read");
        assert_eq!(Linearizable::default().check(&phantom).len(), 1, "resolved, it never happened");
    }

    #[test]
    fn the_search_says_when_it_gives_up() {
        // Many concurrent unknown writes: more orders than a tiny budget covers.
        let mut ops: Vec<Op> = (0..12).map(|i| op(i, OpKind::Create(v(i + 1)), i, None, OpResult::Unknown)).collect();
        ops.push(op(99, OpKind::Get, 100, Some(101), OpResult::Read(Some(v(77)))));
        let e = check_object(&ops.iter().collect::<Vec<_>>(), 50).expect_err("undecided");
        assert!(e.contains("gave up"), "{e}");
    }
}
