//! What a create request reads from and writes to the store (`crate::store::ResponseStore`):
//! the history a follow-up continues (`previous_response_id`'s chain, or a conversation's
//! items), and the response saved (with this turn's input items, and appended to its
//! conversation) before its terminal event goes out, so that a GET right after it finds it.
//! `store: false` writes nothing. The store's calls block: they run on `spawn_blocking`.

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value as Json;

use super::stored::store_failed;
use super::types::{
    CreateResponse, EventKind, ResponseError, ResponseEvent, ResponseObject, Status,
};
use crate::api::error::ApiError;
use crate::api::{blocking, AppState};
use crate::store::{ResponseStore, StoredResponse};

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

/// The store, or the 404 a request naming stored state gets on a server without one.
fn store_for(state: &AppState, what: &str, param: &str) -> Result<ResponseStore, ApiError> {
    state.responses().cloned().ok_or_else(|| {
        not_found(
            format!("{what}: this server stores nothing (start it with a data directory)"),
            param,
            Some("storage_off"),
        )
    })
}

/// The items `req` continues: `previous_response_id`'s chain, or its conversation's items.
pub async fn history(
    state: &AppState,
    owner: &str,
    req: &CreateResponse,
    conversation: Option<&str>,
) -> Result<Vec<Json>, ApiError> {
    if let (Some(_), Some(_)) = (&req.previous_response_id, conversation) {
        return Err(ApiError::invalid(
            "previous_response_id and conversation cannot be used together",
            Some("previous_response_id"),
        ));
    }
    let owner = owner.to_string();
    if let Some(id) = req.previous_response_id.clone() {
        let what = format!("Previous response with id '{id}' not found.");
        let store = store_for(state, &what, "previous_response_id")?;
        let found = blocking(move || store.history(&owner, &id).map_err(store_failed)).await?;
        return found.ok_or_else(|| {
            not_found(
                what,
                "previous_response_id",
                Some("previous_response_not_found"),
            )
        });
    }
    if let Some(id) = conversation.map(str::to_string) {
        let what = format!("Conversation with id '{id}' not found.");
        let store = store_for(state, &what, "conversation")?;
        let found =
            blocking(move || store.conversation_items(&owner, &id).map_err(store_failed)).await?;
        return found.ok_or_else(|| not_found(what, "conversation", None));
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

/// Writes `response` (any status; a final one is appended to its conversation); `Ok` without
/// a store or with `store: false`.
pub async fn save(
    state: &AppState,
    save: &Save,
    response: &ResponseObject,
) -> Result<(), ApiError> {
    let Some(store) = state.responses().filter(|_| save.store).cloned() else {
        return Ok(());
    };
    let body = serde_json::to_value(response)
        .map_err(|e| ApiError::Internal(format!("the response did not serialize: {e}")))?;
    let finished = !matches!(response.status, Status::Queued | Status::InProgress);
    let appended: Vec<Json> = save
        .input
        .iter()
        .chain(body["output"].as_array().into_iter().flatten())
        .cloned()
        .collect();
    let row = StoredResponse {
        id: response.id.clone(),
        owner: save.owner.clone(),
        created_at: i64::try_from(response.created_at).unwrap_or(i64::MAX),
        status: response.status.name().to_string(),
        previous_response_id: response.previous_response_id.clone(),
        conversation_id: save.conversation.clone(),
        response: body,
        input_items: save.input.clone(),
    };
    let conversation = save.conversation.clone().filter(|_| finished);
    let written = blocking(move || {
        store.save(&row).map_err(store_failed)?;
        match conversation {
            Some(c) => store
                .append_items(&row.owner, &c, &appended)
                .map_err(store_failed),
            None => Ok(()),
        }
    })
    .await;
    if let Err(e) = &written {
        tracing::error!(id = %response.id, "the response was not stored: {e}");
    }
    written
}

/// The terminal event `e` as `response.failed` because its response could not be stored:
/// a client that asked for storage must not be told it has a response that a later
/// `previous_response_id` or GET cannot find. The output generated so far stays on it.
fn unstored(e: ResponseEvent, err: &ApiError) -> ResponseEvent {
    let Some(mut response) = e.response().cloned() else {
        return e;
    };
    response.status = Status::Failed;
    response.error = Some(ResponseError {
        code: "server_error",
        message: format!(
            "the response was generated but could not be stored ({}); retry, or send \
             store: false",
            err.envelope().error.message
        ),
    });
    ResponseEvent {
        kind: EventKind::Failed {
            response: Box::new(response),
        },
        sequence_number: e.sequence_number,
    }
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
                    if let Err(err) = self::save(&state, &save, r).await {
                        return unstored(e, &err);
                    }
                }
                e
            }
        })
        .boxed()
}

/// Whether `owner` has a stored response `id`.
pub async fn exists(state: &AppState, owner: &str, id: &str) -> Result<bool, ApiError> {
    let Some(store) = state.responses().cloned() else {
        return Ok(false);
    };
    let (owner, id) = (owner.to_string(), id.to_string());
    blocking(move || {
        store
            .get(&owner, &id)
            .map(|r| r.is_some())
            .map_err(store_failed)
    })
    .await
}
