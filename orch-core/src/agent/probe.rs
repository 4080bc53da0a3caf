//! One probe of one container run, as the kubelet's prober worker: the first try
//! `initialDelaySeconds` after the container started, then one every `periodSeconds` (a try
//! still out when the next is due skips that one); the verdict turns to passing after
//! `successThreshold` successes in a row and to failing after `failureThreshold` failures in
//! a row. The try itself (and its `timeoutSeconds`) is the adapter's.

use crate::core_v1::Probe;

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProbeKind {
    /// Holds the other two back until it passes once; failing, it restarts the container.
    Startup,
    /// Failing, it restarts the container.
    Liveness,
    /// Drives the container's `ready`, and so the pod's Ready condition and its endpoints.
    Readiness,
}

impl ProbeKind {
    /// The name Kubernetes' events give it (`Liveness probe failed: ...`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// Seconds from the model as ms, at least `floor` seconds.
fn ms(seconds: Option<i32>, default: i32, floor: i32) -> i64 {
    i64::from(seconds.unwrap_or(default).max(floor)) * 1_000
}

/// A probe's state for one run of its container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeState {
    pub(crate) kind: ProbeKind,
    pub(crate) probe: Probe,
    /// When the next try is due (ms).
    pub(crate) next_at: i64,
    /// A try is out.
    pub(crate) in_flight: bool,
    successes: i32,
    failures: i32,
    /// Passing, failing, or none yet.
    pub(crate) verdict: Option<bool>,
}

impl ProbeState {
    /// The probe of a run that started at `started_ms`.
    pub(crate) fn new(kind: ProbeKind, probe: &Probe, started_ms: i64) -> Self {
        Self {
            kind,
            probe: probe.clone(),
            next_at: started_ms.saturating_add(ms(probe.initial_delay_seconds, 0, 0)),
            in_flight: false,
            successes: 0,
            failures: 0,
            verdict: None,
        }
    }

    /// The time a try may take (ms).
    pub(crate) fn timeout_ms(&self) -> i64 {
        ms(self.probe.timeout_seconds, 1, 1)
    }

    /// Whether a try is due at `now`.
    pub(crate) fn due(&self, now: i64) -> bool {
        !self.in_flight && now >= self.next_at
    }

    /// A try goes out at `now`.
    pub(crate) fn begin(&mut self, now: i64) {
        self.in_flight = true;
        let period = ms(self.probe.period_seconds, 10, 1);
        self.next_at = self.next_at.saturating_add(period);
        if self.next_at <= now {
            // Late (the owner was not stepped for a while): no burst of catch-up tries.
            self.next_at = now.saturating_add(period);
        }
    }

    /// A try came back; the new verdict if it changed.
    pub(crate) fn result(&mut self, ok: bool) -> Option<bool> {
        self.in_flight = false;
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) && self.verdict != Some(true) {
                self.verdict = Some(true);
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) && self.verdict != Some(false) {
                self.verdict = Some(false);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(initial: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(initial),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Probe::default()
        }
    }

    #[test]
    fn tries_start_after_the_initial_delay_and_follow_the_period() {
        let mut p = ProbeState::new(ProbeKind::Readiness, &probe(5, 2, 1, 3), 1_000);
        assert!(!p.due(5_999));
        assert!(p.due(6_000));
        p.begin(6_000);
        // Out: the next is not due while this one is.
        assert!(!p.due(8_000));
        p.result(true);
        assert!(p.due(8_000));
        p.begin(8_500);
        assert_eq!(p.next_at, 10_000);
        p.result(true);
        // Late by far: the next is a period from now, not a burst.
        p.begin(60_000);
        assert_eq!(p.next_at, 62_000);
    }

    #[test]
    fn the_verdict_turns_after_the_thresholds_in_a_row() {
        let mut p = ProbeState::new(ProbeKind::Readiness, &probe(0, 1, 2, 3), 0);
        assert_eq!(p.result(true), None);
        assert_eq!(p.result(false), None);
        assert_eq!(p.result(true), None);
        assert_eq!(p.result(true), Some(true));
        assert_eq!(p.result(true), None);
        assert_eq!(p.result(false), None);
        assert_eq!(p.result(false), None);
        assert_eq!(p.result(true), None);
        assert_eq!(p.result(false), None);
        assert_eq!(p.result(false), None);
        assert_eq!(p.result(false), Some(false));
        assert_eq!(p.result(false), None);
        assert_eq!(p.verdict, Some(false));
    }
}
