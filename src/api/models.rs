//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::ApiError;
use super::AppState;

fn card(state: &AppState) -> serde_json::Value {
    let max = state.served().ok().map(|s| s.engine.limits().max_context);
    serde_json::json!({
        "id": state.model_name(),
        "object": "model",
        "created": state.created(),
        "owned_by": "wick",
        "max_model_len": max,
    })
}

pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"object": "list", "data": [card(&state)]}))
}

pub async fn get_one(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if id != state.model_name() {
        return ApiError::ModelNotFound(id).into_response();
    }
    Json(card(&state)).into_response()
}
