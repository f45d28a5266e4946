//! `GET /health`: 200 when ready, 503 while loading or draining.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::AppState;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match state.served() {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": e.parts().2.unwrap_or("unavailable")})),
        ),
    }
}
