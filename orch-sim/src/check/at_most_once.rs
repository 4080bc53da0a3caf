//! No write is applied twice: a request (client, serial) is applied afresh at one log index at
//! most; every other time it comes back it is answered from the session table.

use std::collections::BTreeMap;

use super::Checker;
use crate::history::History;

/// The at-most-once checker.
#[derive(Debug, Default)]
pub struct AtMostOnce;

impl Checker for AtMostOnce {
    fn name(&self) -> &'static str {
        "at-most-once"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        let mut applied: BTreeMap<(u128, u64), u64> = BTreeMap::new();
        for (index, a) in super::first_applications(history) {
            for request in &a.fresh {
                if let Some(first) = applied.insert(*request, index) {
                    found.push(format!(
                        "client {:x} request {} was applied at index {first} and again at {index}",
                        request.0, request.1
                    ));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Application;

    fn application(node: u64, index: u64, fresh: Vec<(u128, u64)>) -> Application {
        Application { node, index, digest: [0; 32], fresh, requests: Vec::new(), changes: Vec::new() }
    }

    #[test]
    fn a_request_applied_at_two_indexes_fails() {
        // The same index applied by two replicas is one application.
        let applications = vec![application(1, 3, vec![(7, 1)]), application(2, 3, vec![(7, 1)])];
        let mut h = History { applications, ..History::default() };
        h.applications.push(application(1, 4, vec![(7, 2), (8, 1)]));
        assert!(AtMostOnce.check(&h).is_empty());
        h.applications.push(application(2, 9, vec![(7, 1)]));
        let found = AtMostOnce.check(&h);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("applied at index 3 and again at 9"), "{found:?}");
    }
}
