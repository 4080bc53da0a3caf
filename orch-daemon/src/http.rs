//! The HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` and `/readyz`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use orch_raft::ControlPlane;
use orch_raft::control_plane::Consistency;

use crate::metrics::SharedMetrics;

#[derive(Clone)]
struct Shared {
    cp: ControlPlane,
    metrics: SharedMetrics,
}

/// The router of the HTTP endpoints.
pub fn router(cp: ControlPlane, metrics: SharedMetrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { cp, metrics })
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    let body = s.metrics.render(&s.cp).await;
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

/// Alive: the process answers and Raft runs (not stopped by a fatal storage error): restart
/// it otherwise.
async fn healthz(State(s): State<Shared>) -> (StatusCode, String) {
    match s.cp.health() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Ready: healthy, a leader is known, and this node has caught up far enough to serve reads.
async fn readyz(State(s): State<Shared>) -> (StatusCode, String) {
    if let Err(e) = s.cp.health() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
    }
    let m = s.cp.metrics();
    if m.leader.is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no leader is known (an election is under way)\n".to_owned());
    }
    match s.cp.read(Consistency::Stale, |_| ()).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}
