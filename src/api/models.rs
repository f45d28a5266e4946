//! `GET /v1/models` and `GET /v1/models/{id}`: the one served model. Handlers on the HTTP
//! tasks.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorEnvelope};
use super::AppState;

/// The served model, as OpenAI's model object with vLLM's `max_model_len`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelCard {
    /// The served name (`--served-model-name`).
    pub id: String,
    #[schema(schema_with = super::openai::schema::model_object)]
    pub object: &'static str,
    pub created: u64,
    #[schema(value_type = String)]
    pub owned_by: &'static str,
    /// The context length; null while the model loads.
    #[schema(required = true)]
    pub max_model_len: Option<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    #[schema(schema_with = super::openai::schema::list_object)]
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

fn card(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.model_name().to_string(),
        object: "model",
        created: state.created(),
        owned_by: "wick",
        max_model_len: state.served().ok().map(|s| s.engine.limits().max_context),
    }
}

/// The served model (also while it loads).
#[utoipa::path(
    get, path = "/v1/models", operation_id = "list_models", tag = "openai",
    responses((status = 200, description = "The served model.", body = ModelList)),
)]
pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![card(&state)],
    })
}

/// The served model by its name; any other name is a 404.
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
    if id != state.model_name() {
        return ApiError::ModelNotFound(id).into_response();
    }
    Json(card(&state)).into_response()
}
