//! Every watcher, across cuts and resumes, sees exactly the committed changes to the simulated
//! objects, in order, each once; or a loud expiry followed by a relist, never a silent gap.
//! What was committed is what the replicas applied (the first application of each index).

use std::collections::BTreeMap;

use super::Checker;
use crate::history::{Change, History, WatchLog};

/// The watch checker.
#[derive(Debug, Default)]
pub struct Watches;

impl Checker for Watches {
    fn name(&self) -> &'static str {
        "watches"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let truth: BTreeMap<u64, &Vec<Change>> = super::first_applications(history)
            .into_iter()
            .filter(|(_, a)| !a.changes.is_empty())
            .map(|(i, a)| (i, &a.changes))
            .collect();
        let mut found = Vec::new();
        for (watcher, log) in &history.watches {
            check_watcher(*watcher, log, &truth, &mut found);
        }
        found
    }
}

fn check_watcher(watcher: u64, log: &[WatchLog], truth: &BTreeMap<u64, &Vec<Change>>, found: &mut Vec<String>) {
    let mut cursor: Option<u64> = None;
    let missed = |from: u64, to: u64| truth.range(from + 1..to).next().map(|(i, _)| *i);
    for (at, item) in log.iter().enumerate() {
        let fail = |what: String| format!("watcher {watcher}, item {at}: {what}");
        match item {
            WatchLog::Relisted(r) => cursor = Some(*r),
            WatchLog::Expired => cursor = None,
            WatchLog::Gap(what) => found.push(fail(format!("the stream reported a gap: {what}"))),
            WatchLog::Resume(from) => {
                if cursor != Some(*from) {
                    found.push(fail(format!("resumed after {from}, but it had reached {cursor:?}")));
                    cursor = Some(*from);
                }
            }
            WatchLog::Events(revision, changes) => {
                let Some(c) = cursor else {
                    found.push(fail(format!("events at {revision} before any list")));
                    continue;
                };
                if *revision <= c {
                    found.push(fail(format!("events at {revision} again, or out of order (had reached {c})")));
                    continue;
                }
                if let Some(skipped) = missed(c, *revision) {
                    found.push(fail(format!("missed the changes at {skipped} (went from {c} to {revision})")));
                }
                match truth.get(revision) {
                    Some(expected) if *expected == changes => {}
                    expected => {
                        found.push(fail(format!("at {revision} saw {changes:?}, committed were {expected:?}")));
                    }
                }
                cursor = Some(*revision);
            }
            WatchLog::Progress(revision) => {
                if let Some(c) = cursor
                    && *revision > c
                {
                    if let Some(skipped) = missed(c, revision + 1) {
                        found.push(fail(format!("progress to {revision} skipped the changes at {skipped}")));
                    }
                    cursor = Some(*revision);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use orch_core::watch::EventType;

    use super::*;
    use crate::history::{Application, Value};

    fn change(key: u32, spec: u64) -> Change {
        Change { event: EventType::Added, key, value: Value { spec, status: 0 } }
    }

    fn committed() -> History {
        let mut h = History::default();
        for (index, key) in [(2, 0), (3, 1), (5, 2)] {
            let changes = vec![change(key, index)];
            h.applications.push(Application {
                node: 1,
                index,
                digest: [0; 32],
                fresh: Vec::new(),
                requests: Vec::new(),
                changes,
            });
        }
        h
    }

    fn check(log: Vec<WatchLog>) -> Vec<String> {
        let mut h = committed();
        h.watches.insert(1, log);
        Watches.check(&h)
    }

    #[test]
    fn a_watch_cut_resumed_and_relisted_passes() {
        let log = vec![
            WatchLog::Relisted(1),
            WatchLog::Resume(1),
            WatchLog::Events(2, vec![change(0, 2)]),
            WatchLog::Resume(2),
            WatchLog::Events(3, vec![change(1, 3)]),
            WatchLog::Progress(4),
            WatchLog::Expired,
            WatchLog::Relisted(5),
            WatchLog::Resume(5),
            WatchLog::Progress(6),
        ];
        assert_eq!(check(log), Vec::<String>::new());
    }

    #[test]
    fn a_silent_gap_fails() {
        let log = vec![WatchLog::Relisted(1), WatchLog::Resume(1), WatchLog::Events(3, vec![change(1, 3)])];
        let found = check(log);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("missed the changes at 2"), "{found:?}");
    }

    #[test]
    fn a_progress_past_undelivered_changes_fails() {
        let log = vec![WatchLog::Relisted(3), WatchLog::Resume(3), WatchLog::Progress(6)];
        assert!(check(log)[0].contains("skipped the changes at 5"));
    }

    #[test]
    fn a_duplicate_or_a_wrong_event_fails() {
        let log = vec![
            WatchLog::Relisted(1),
            WatchLog::Resume(1),
            WatchLog::Events(2, vec![change(0, 2)]),
            WatchLog::Events(2, vec![change(0, 2)]),
            WatchLog::Events(3, vec![change(1, 99)]),
        ];
        let found = check(log);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("again, or out of order"));
        assert!(found[1].contains("committed were"));
    }
}
