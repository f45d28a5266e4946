//! The Conversations API: `POST /v1/conversations` (metadata and first items), `GET
//! /v1/conversations` (a page of this key's conversations, with `search`: a wick extension),
//! `GET`/`POST`/`DELETE /v1/conversations/{conversation_id}` (read, replace the metadata,
//! delete), and its items: `POST`/`GET /v1/conversations/{conversation_id}/items` (add, list a
//! page) and `GET`/`DELETE .../items/{item_id}`. Bodies are checked by [`items`] (400 naming
//! the field); everything is stored per API key in the [`ResponseStore`] and read on
//! `spawn_blocking`; another key's conversation is a 404, as is every route on a server that
//! stores nothing (`storage_off`, the same answer as the stored-response routes).

// The helpers return axum's `Response` as their error, as the handlers do: it is built once,
// on the error path only, and boxing it would buy nothing.
#![allow(clippy::result_large_err)]

pub mod items;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use super::auth::ApiKeyName;
use super::error::{ApiError, ErrorEnvelope};
use super::responses::stored::{
    list_body, listing, not_found, not_found_with, owner, page_params, path, store, with_store,
    Deleted, ItemList,
};
use super::AppState;
use crate::store::{new_id, ItemPage, Listing};

/// The `conversation` object, for the OpenAPI document (built by `Conversation::to_json`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConversationObject {
    /// `conv_...`.
    id: String,
    /// Always `conversation`.
    object: String,
    /// Unix seconds.
    created_at: i64,
    metadata: HashMap<String, String>,
}

/// `POST /v1/conversations`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CreateConversation {
    /// Up to 16 pairs; keys up to 64 characters, values up to 512.
    metadata: Option<HashMap<String, String>>,
    /// Up to 20 first items: `message` (`role` user, assistant, system or developer; `content`
    /// a string or `input_text` / `output_text` parts), `function_call`,
    /// `function_call_output`.
    #[schema(value_type = Option<Vec<Object>>)]
    items: Option<Vec<Value>>,
}

/// `POST /v1/conversations/{conversation_id}`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UpdateConversation {
    /// Replaces the metadata; up to 16 pairs, keys up to 64 characters, values up to 512.
    metadata: HashMap<String, String>,
}

/// `POST /v1/conversations/{conversation_id}/items`'s body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AddItems {
    /// Up to 20 items, of the kinds `CreateConversation.items` takes.
    #[schema(value_type = Vec<Object>)]
    items: Vec<Value>,
}

/// A JSON object body (an empty body is `{}`); 413 past the limit, 400 for anything else.
fn body(bytes: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Response> {
    let bytes = bytes.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(format!("the request body is over the limit: {e}"))
        } else {
            ApiError::invalid(format!("reading the body: {e}"), None)
        }
        .into_response()
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match super::extract::parse::<Value>(&bytes).map_err(IntoResponse::into_response)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::invalid("the body must be a JSON object", None).into_response()),
    }
}

fn bad(e: ApiError) -> Response {
    e.into_response()
}

/// `POST /v1/conversations`: a new conversation.
#[utoipa::path(
    post, path = "/v1/conversations", operation_id = "createConversation", tag = "openai",
    request_body = CreateConversation,
    responses(
        (status = 200, description = "The new conversation.", body = ConversationObject),
        (status = 400, description = "Bad metadata or a bad item, named in `param`.", body = ErrorEnvelope),
        (status = 404, description = "The server stores nothing (`storage_off`).", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Response> {
    let store = store(&state)?;
    let b = body(bytes)?;
    let metadata = items::metadata(b.get("metadata"), "metadata").map_err(bad)?;
    let first = items::items(b.get("items"), "items").map_err(bad)?;
    let owner = owner(key);
    let id = new_id("conv_");
    let c = with_store(store, move |s| {
        s.create_conversation(&owner, &id, &metadata, &first)
    })
    .await?;
    Ok(Json(c.to_json()))
}

/// `GET /v1/conversations`: a page of this key's conversations (a wick extension: OpenAI
/// has no list route).
#[utoipa::path(
    get, path = "/v1/conversations", operation_id = "listConversations", tag = "wick",
    params(
        ("after" = Option<String>, Query, description = "A conversation id: list the conversations after it in `order`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Conversations per page, 1 to 100 (default 20)."),
        ("order" = Option<String>, Query, description = "`desc` (default: last changed first) or `asc`."),
        ("search" = Option<String>, Query, description = "Keep the conversations with a metadata value (the title) containing this text, ASCII case folded."),
    ),
    responses(
        (status = 200, description = "A page of conversations (`object`: `list`).", body = ConversationList),
        (status = 400, description = "A bad parameter, named in `param`.", body = ErrorEnvelope),
        (status = 404, description = "No conversation `after` for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, Response> {
    let (store, owner) = (store(&state)?, owner(key));
    let Query(mut q) = query.map_err(|e| bad(ApiError::invalid(e.body_text(), None)))?;
    let search = q.remove("search");
    if q.contains_key("include") || q.contains_key("include[]") {
        return Err(bad(ApiError::invalid(
            "unknown parameter `include`: expected after, limit, order or search",
            Some("include"),
        )));
    }
    let p = page_params(Ok(Query(q))).map_err(bad)?;
    let after = p.after.clone();
    let l = with_store(store, move |s| {
        s.list_conversations(
            &owner,
            search.as_deref(),
            after.as_deref(),
            p.limit,
            p.order,
        )
    })
    .await?;
    match l {
        Listing::UnknownAfter => Err(not_found_with(
            format!(
                "No conversation found with id '{}'.",
                p.after.unwrap_or_default()
            ),
            Some("after"),
            "not_found",
        )),
        other => listing(other, "Conversation", "", None).map(Json),
    }
}

/// A page of conversations, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ConversationList {
    /// Always `list`.
    object: String,
    data: Vec<ConversationObject>,
    /// The first and the last conversation's id; null for an empty page.
    first_id: Option<String>,
    last_id: Option<String>,
    /// More follow the last one in this order (ask again with `after` = `last_id`).
    has_more: bool,
}

/// `GET /v1/conversations/{conversation_id}`.
#[utoipa::path(
    get, path = "/v1/conversations/{conversation_id}", operation_id = "getConversation", tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's id (`conv_...`).")),
    responses(
        (status = 200, description = "The conversation.", body = ConversationObject),
        (status = 404, description = "No such conversation for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn get_one(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let target = id.clone();
    match with_store(store, move |s| s.conversation(&owner, &target)).await? {
        Some(c) => Ok(Json(c.to_json())),
        None => Err(not_found("Conversation", &id, "conversation_id")),
    }
}

/// `POST /v1/conversations/{conversation_id}`: replaces the metadata.
#[utoipa::path(
    post, path = "/v1/conversations/{conversation_id}", operation_id = "updateConversation", tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's id (`conv_...`).")),
    request_body = UpdateConversation,
    responses(
        (status = 200, description = "The conversation, with its new metadata.", body = ConversationObject),
        (status = 400, description = "Bad or missing metadata, named in `param`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let b = body(bytes)?;
    let metadata = match b.get("metadata") {
        Some(m @ Value::Object(_)) => items::metadata(Some(m), "metadata").map_err(bad)?,
        _ => {
            return Err(bad(ApiError::invalid(
                "metadata (an object of string values) is required",
                Some("metadata"),
            )))
        }
    };
    let target = id.clone();
    match with_store(store, move |s| {
        s.update_conversation(&owner, &target, &metadata)
    })
    .await?
    {
        Some(c) => Ok(Json(c.to_json())),
        None => Err(not_found("Conversation", &id, "conversation_id")),
    }
}

/// `DELETE /v1/conversations/{conversation_id}`: the conversation and its items are gone.
#[utoipa::path(
    delete, path = "/v1/conversations/{conversation_id}", operation_id = "deleteConversation", tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's id (`conv_...`).")),
    responses(
        (status = 200, description = "Deleted (`object`: `conversation.deleted`).", body = Deleted),
        (status = 404, description = "No such conversation for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let target = id.clone();
    if with_store(store, move |s| s.delete_conversation(&owner, &target)).await? {
        Ok(Json(
            json!({"id": id, "object": "conversation.deleted", "deleted": true}),
        ))
    } else {
        Err(not_found("Conversation", &id, "conversation_id"))
    }
}

/// `POST /v1/conversations/{conversation_id}/items`: appends items; returns them as a list.
#[utoipa::path(
    post, path = "/v1/conversations/{conversation_id}/items", operation_id = "createConversationItems", tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's id (`conv_...`).")),
    request_body = AddItems,
    responses(
        (status = 200, description = "The added items, in order, with their ids.", body = ItemList),
        (status = 400, description = "A bad item, named in `param` (`items[1].role`).", body = ErrorEnvelope),
        (status = 404, description = "No such conversation for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
        (status = 413, description = "The body is over the limit.", body = ErrorEnvelope),
    ),
)]
pub async fn add_items(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let b = body(bytes)?;
    let Some(list @ Value::Array(_)) = b.get("items") else {
        return Err(bad(ApiError::invalid(
            "items (an array of items) is required",
            Some("items"),
        )));
    };
    let added = items::items(Some(list), "items").map_err(bad)?;
    let (target, stored) = (id.clone(), added.clone());
    if with_store(store, move |s| s.add_items(&owner, &target, &stored)).await? {
        Ok(Json(list_body(ItemPage {
            data: added,
            has_more: false,
        })))
    } else {
        Err(not_found("Conversation", &id, "conversation_id"))
    }
}

/// `GET /v1/conversations/{conversation_id}/items`: a page of the items.
#[utoipa::path(
    get, path = "/v1/conversations/{conversation_id}/items", operation_id = "listConversationItems", tag = "openai",
    params(
        ("conversation_id" = String, Path, description = "The conversation's id (`conv_...`)."),
        ("after" = Option<String>, Query, description = "An item id: list the items after it in `order`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Items per page, 1 to 100 (default 20)."),
        ("order" = Option<String>, Query, description = "`asc` or `desc` (default: newest first)."),
        ("include" = Option<Vec<String>>, Query, description = "Accepted and ignored."),
    ),
    responses(
        (status = 200, description = "A page of items.", body = ItemList),
        (status = 400, description = "A bad parameter, named in `param`.", body = ErrorEnvelope),
        (status = 404, description = "No such conversation for this key, or no item `after` in it (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn list_items(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let p = page_params(query).map_err(bad)?;
    let (target, after) = (id.clone(), p.after.clone());
    let l = with_store(store, move |s| {
        s.list_items(&owner, &target, after.as_deref(), p.limit, p.order)
    })
    .await?;
    listing(l, "Conversation", &id, p.after.as_deref()).map(Json)
}

/// `GET /v1/conversations/{conversation_id}/items/{item_id}`: one item.
#[utoipa::path(
    get, path = "/v1/conversations/{conversation_id}/items/{item_id}", operation_id = "getConversationItem", tag = "openai",
    params(
        ("conversation_id" = String, Path, description = "The conversation's id (`conv_...`)."),
        ("item_id" = String, Path, description = "The item's id."),
    ),
    responses(
        (status = 200, description = "The item.", body = Object),
        (status = 404, description = "No such conversation for this key or no such item in it (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn get_item(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, (conv, item), owner) = (store(&state)?, path(ids)?, owner(key));
    let (c, i) = (conv.clone(), item.clone());
    match with_store(store, move |s| s.conversation_item(&owner, &c, &i)).await? {
        Some(v) => Ok(Json(v)),
        None => Err(not_found("Item", &item, "item_id")),
    }
}

/// `DELETE /v1/conversations/{conversation_id}/items/{item_id}`: returns the conversation.
#[utoipa::path(
    delete, path = "/v1/conversations/{conversation_id}/items/{item_id}", operation_id = "deleteConversationItem", tag = "openai",
    params(
        ("conversation_id" = String, Path, description = "The conversation's id (`conv_...`)."),
        ("item_id" = String, Path, description = "The item's id."),
    ),
    responses(
        (status = 200, description = "The conversation the item was deleted from.", body = ConversationObject),
        (status = 404, description = "No such conversation for this key or no such item in it (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn delete_item(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, (conv, item), owner) = (store(&state)?, path(ids)?, owner(key));
    let (c, i) = (conv.clone(), item.clone());
    match with_store(store, move |s| s.delete_item(&owner, &c, &i)).await? {
        Some((c, true)) => Ok(Json(c.to_json())),
        Some((_, false)) => Err(not_found("Item", &item, "item_id")),
        None => Err(not_found("Conversation", &conv, "conversation_id")),
    }
}
