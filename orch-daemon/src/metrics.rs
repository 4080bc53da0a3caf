//! Prometheus metrics: API requests by method and code with latency histograms, open watch
//! streams, and, read at scrape time, the Raft indexes and the objects stored by kind.

use std::sync::Arc;
use std::time::Duration;

use orch_core::Kind;
use orch_raft::ControlPlane;
use orch_raft::control_plane::Consistency;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoopLabels {
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FullRoundLabels {
    name: &'static str,
    reason: &'static str,
}

/// What the leader-only loops count, by loop name: restarts after a loop panicked or returned,
/// commands the state machine refused, proposals that failed, and full rounds by reason
/// (start, resync, too many changes, behind). Clones share the counts.
#[derive(Clone, Debug, Default)]
pub struct LoopCounters {
    restarts: Family<LoopLabels, Counter>,
    rejected: Family<LoopLabels, Counter>,
    failed: Family<LoopLabels, Counter>,
    full_rounds: Family<FullRoundLabels, Counter>,
}

impl LoopCounters {
    /// Loop `name` stopped (panicked or returned) and was started again.
    pub fn restarted(&self, name: &'static str) {
        self.restarts.get_or_create(&LoopLabels { name }).inc();
    }

    /// A command of loop `name` was refused by the state machine.
    pub fn rejected(&self, name: &'static str) {
        self.rejected.get_or_create(&LoopLabels { name }).inc();
    }

    /// A proposal of loop `name` failed (no leader, no quorum, shutting down).
    pub fn failed(&self, name: &'static str) {
        self.failed.get_or_create(&LoopLabels { name }).inc();
    }

    /// Loop `name` ran a full round, for `why`.
    pub fn full_round(&self, name: &'static str, why: orch_raft::leader::FullRound) {
        self.full_rounds.get_or_create(&FullRoundLabels { name, reason: why.as_str() }).inc();
    }

    /// (restarts, rejected commands, failed proposals) of loop `name` so far.
    pub fn counts(&self, name: &'static str) -> (u64, u64, u64) {
        let labels = LoopLabels { name };
        (
            self.restarts.get_or_create(&labels).get(),
            self.rejected.get_or_create(&labels).get(),
            self.failed.get_or_create(&labels).get(),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Watch streams open now.
    pub watches: Gauge,
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    snapshot_index: Gauge,
    objects: Family<KindLabels, Gauge>,
    /// The leader-only loops' counts.
    pub loops: LoopCounters,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orch");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let watches = Gauge::default();
        let (term, leader, is_leader) = (Gauge::default(), Gauge::default(), Gauge::default());
        let (commit_index, applied_index) = (Gauge::default(), Gauge::default());
        let (last_log_index, snapshot_index) = (Gauge::default(), Gauge::default());
        let objects = Family::<KindLabels, Gauge>::default();
        registry.register("api_requests", "API requests by method and gRPC code", requests.clone());
        registry.register("api_request_duration_seconds", "API request latency by method", latency.clone());
        registry.register("watch_streams", "Watch streams open", watches.clone());
        registry.register("raft_term", "The current Raft term", term.clone());
        registry.register("raft_leader", "The leader's node id (0: unknown)", leader.clone());
        registry.register("raft_is_leader", "1 when this node leads", is_leader.clone());
        registry.register("raft_commit_index", "The last committed log index known here", commit_index.clone());
        registry.register("raft_applied_index", "The last log index applied here", applied_index.clone());
        registry.register("raft_last_log_index", "The last index in this node's log", last_log_index.clone());
        registry.register("raft_snapshot_index", "The index of this node's latest snapshot", snapshot_index.clone());
        registry.register("objects", "Objects stored, by kind", objects.clone());
        let loops = LoopCounters::default();
        registry.register(
            "leader_loop_restarts",
            "Leader-only loops restarted after a panic or return",
            loops.restarts.clone(),
        );
        registry.register(
            "leader_loop_rejected_commands",
            "Leader-only loop commands the state machine refused",
            loops.rejected.clone(),
        );
        registry.register(
            "leader_loop_full_rounds",
            "Leader-only loop rounds that looked at everything, by reason",
            loops.full_rounds.clone(),
        );
        registry.register(
            "leader_loop_failed_proposals",
            "Leader-only loop proposals that failed",
            loops.failed.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            watches,
            term,
            leader,
            is_leader,
            commit_index,
            applied_index,
            last_log_index,
            snapshot_index,
            objects,
            loops,
        }
    }

    /// Counts one finished request.
    pub fn observe(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { method, code: code_name(code) }).inc();
        self.latency.get_or_create(&MethodLabels { method }).observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the Raft and object figures read now.
    pub async fn render(&self, cp: &ControlPlane) -> String {
        let m = cp.metrics();
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.term, m.term);
        set(&self.leader, m.leader.unwrap_or(0));
        set(&self.is_leader, u64::from(m.leader == Some(m.id)));
        set(&self.commit_index, m.commit_index);
        set(&self.applied_index, m.applied_index);
        set(&self.last_log_index, m.last_log_index);
        set(&self.snapshot_index, m.snapshot_index);
        if let Ok(counts) = cp.read(Consistency::Stale, count_objects).await {
            for (kind, n) in counts {
                set(&self.objects.get_or_create(&KindLabels { kind: kind.as_str() }), n);
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The number of stored objects of each kind.
pub fn count_objects(state: &orch_core::State) -> Vec<(Kind, u64)> {
    Kind::ALL.iter().map(|k| (*k, state.list(*k, None).count() as u64)).collect()
}

/// Shared by the API service and the HTTP endpoints.
pub type SharedMetrics = Arc<Metrics>;

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
