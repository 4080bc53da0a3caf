//! After every fault healed, a write completes within a bounded simulated time.

use super::Checker;
use crate::history::History;

/// The liveness checker.
#[derive(Debug)]
pub struct Liveness {
    /// The bound, in simulated milliseconds.
    pub bound_ms: u64,
}

impl Checker for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        if history.probes.is_empty() {
            found.push("no liveness probe ran".to_owned());
        }
        for p in &history.probes {
            match p.done_ms {
                Some(done) if done.saturating_sub(p.healed_ms) <= self.bound_ms => {}
                Some(done) => found.push(format!(
                    "a write took {} ms after the faults healed at {} ms (bound {} ms)",
                    done - p.healed_ms,
                    p.healed_ms,
                    self.bound_ms
                )),
                None => found.push(format!("no write completed after the faults healed at {} ms", p.healed_ms)),
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Probe;

    #[test]
    fn a_probe_that_never_or_late_completed_fails() {
        let check = Liveness { bound_ms: 1000 };
        let mut h = History::default();
        assert_eq!(check.check(&h).len(), 1, "no probe at all fails");
        h.probes = vec![Probe { healed_ms: 10, done_ms: Some(900) }];
        assert!(check.check(&h).is_empty());
        h.probes.push(Probe { healed_ms: 10, done_ms: Some(1200) });
        h.probes.push(Probe { healed_ms: 10, done_ms: None });
        assert_eq!(check.check(&h).len(), 2);
    }
}
