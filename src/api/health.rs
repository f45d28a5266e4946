//! `GET /health` and `GET /health/ready`: 200 when ready, 503 while loading or draining;
//! `GET /health/live`: 200 whenever the process answers. All public (see `auth`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::AppState;

/// Liveness: the process answers, loading, serving or draining.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness (also `/health`): the model is loaded and the server is not draining.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.served() {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": e.parts().2.unwrap_or("unavailable")})),
        ),
    }
}
