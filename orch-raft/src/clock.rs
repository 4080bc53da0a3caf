//! The wall clock a control plane stamps its entries with, behind a seam: production reads the
//! system clock, a simulation drives its own (one per node, so that a node's clock can run fast
//! or slow).

/// Milliseconds since the Unix epoch, as a node's proposer reads them. The state machine's own
/// clock is the largest stamp applied, so a clock that runs fast moves it forward for good.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Now, in milliseconds since the epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }
}
