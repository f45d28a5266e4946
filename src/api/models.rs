//! `GET /v1/models` and `GET /v1/models/{id}`: every served model, with its state beside
//! OpenAI's fields (loading nothing). Handlers on the HTTP tasks.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::registry::{ModelState, ModelStatus};
use super::AppState;

/// A served model, as OpenAI's model object with vLLM's `max_model_len` and wick's `state`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    /// The served name (`--served-model-name`).
    pub id: String,
    #[schema(schema_with = super::openai::schema::model_object)]
    pub object: &'static str,
    pub created: u64,
    #[schema(value_type = String)]
    pub owned_by: &'static str,
    /// The context length; null unless the model is loaded.
    #[schema(required = true)]
    pub max_model_len: Option<usize>,
    /// `loaded`, `loading`, `unloading` (its last requests finishing) or `unloaded` (it loads
    /// on its first request).
    pub state: ModelState,
    /// Requests that omit `model` get this one.
    pub default: bool,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    #[schema(schema_with = super::openai::schema::list_object)]
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

fn card(state: &AppState, m: ModelStatus) -> ModelCard {
    ModelCard {
        default: m.name == state.model_name(),
        id: m.name,
        object: "model",
        created: state.created(),
        owned_by: "wick",
        max_model_len: m.max_context,
        state: m.state,
    }
}

/// Every served model, the default first, whatever its state.
#[utoipa::path(
    get, path = "/v1/models", operation_id = "list_models", tag = "openai",
    responses((status = 200, description = "The served models.", body = ModelList)),
)]
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let data = state.registry().statuses();
    Json(ModelList {
        object: "list",
        data: data.into_iter().map(|m| card(&state, m)).collect(),
    })
}

/// A served model by its name; any other name is a 404 naming the served ones.
#[utoipa::path(
    get, path = "/v1/models/{id}", operation_id = "retrieve_model", tag = "openai",
    params(("id" = String, Path, description = "The served model name (may contain `/`).")),
    responses(
        (status = 200, description = "The served model.", body = ModelCard),
        (status = 400, description = "The id is not UTF-8 once decoded.", body = ErrorEnvelope),
        (status = 404, description = "No such model (`model_not_found`).", body = ErrorEnvelope),
    ),
)]
pub async fn get_one(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    // axum's own rejection (a path that is not UTF-8 once decoded) is plain text: answer in
    // the envelope instead.
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return ApiError::invalid(format!("the model id: {e}"), None).into_response(),
    };
    let status = state
        .registry()
        .statuses()
        .into_iter()
        .find(|m| m.name == id);
    match status {
        Some(m) => Json(card(&state, m)).into_response(),
        None => ApiError::model_not_found(&id, &state.registry().names()).into_response(),
    }
}
