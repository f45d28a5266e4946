//! `GET /health` and `GET /health/ready`: 200 when ready (the default model has loaded), 503
//! while it first loads or while draining;
//! `GET /health/live`: 200 whenever the process answers. All public (see `auth`). Handlers on
//! the HTTP tasks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

/// A health answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthStatus {
    /// `ok`; when not ready `model_loading` or `shutting_down`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// Liveness: the process answers, loading, serving or draining.
#[utoipa::path(
    get, path = "/health/live", operation_id = "health_live", tag = "operations",
    responses((status = 200, description = "The process answers.", body = HealthStatus)),
)]
pub async fn live() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// Readiness: the default model has loaded (an LRU unload since does not count: it reloads on
/// use) and the server is not draining.
#[utoipa::path(
    get, path = "/health", operation_id = "health", tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = HealthStatus),
        (status = 503, description = "Loading or draining.", body = HealthStatus),
    ),
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    match state.readiness() {
        Ok(_) => (StatusCode::OK, Json(HealthStatus { status: "ok" })),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(HealthStatus {
                status: e.parts().2.unwrap_or("unavailable"),
            }),
        ),
    }
}

/// `GET /health/ready`: the same as `/health`.
#[utoipa::path(
    get, path = "/health/ready", operation_id = "health_ready", tag = "operations",
    responses(
        (status = 200, description = "Ready.", body = HealthStatus),
        (status = 503, description = "Loading or draining.", body = HealthStatus),
    ),
)]
pub async fn ready(state: State<AppState>) -> (StatusCode, Json<HealthStatus>) {
    health(state).await
}
