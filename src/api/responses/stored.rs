//! The stored-response routes: `GET /v1/responses/{id}` (the Response object as it was
//! saved), `DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items` (a page of the
//! turn's input items), and what they share with the conversation routes: the caller's owner
//! name, the "storage is off" and "not found" answers, the page parameters and the list body.
//!
//! Handlers run on tokio tasks; the store is read on `spawn_blocking` ([`super::super::blocking`]).
//! Another API key's id is answered exactly like an unknown one (404), so that ids cannot be
//! probed. A server without a data directory answers every route 404 `storage_off`.

// The helpers return axum's `Response` as their error, as the handlers do: it is built once,
// on the error path only, and boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::api::auth::ApiKeyName;
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::{blocking, AppState};
use crate::store::{ItemPage, Listing, Order, ResponseStore, StoreError};

/// Items a page holds when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// The owner of what a request stores or reads: its API key's name, `""` on a server without
/// keys.
pub fn owner(key: Option<Extension<ApiKeyName>>) -> String {
    key.map(|Extension(k)| k.name.to_string())
        .unwrap_or_default()
}

/// A 404 in the OpenAI envelope with `code`: [`ApiError::NotFound`] as the handlers'
/// `Response` error.
pub fn not_found_with(message: String, param: Option<&str>, code: &'static str) -> Response {
    ApiError::NotFound {
        message,
        param: param.map(str::to_string),
        code: Some(code),
    }
    .into_response()
}

/// 404 for `what` (`Response`, `Conversation`, `Item`) `id`, unknown or another key's.
pub fn not_found(what: &str, id: &str, param: &str) -> Response {
    not_found_with(
        format!("{what} with id '{id}' not found."),
        Some(param),
        "not_found",
    )
}

/// The store, or the 404 of a server that stores nothing.
pub fn store(state: &AppState) -> Result<ResponseStore, Response> {
    state.responses().cloned().ok_or_else(|| {
        not_found_with(
            "stored responses and conversations are off: this server has no data directory".into(),
            None,
            "storage_off",
        )
    })
}

/// A store failure: 500, logged.
pub fn store_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "the response store failed");
    ApiError::Internal(format!("the response store: {e}"))
}

/// Runs `f` on the store on a blocking thread; a store error is a 500.
pub async fn with_store<T: Send + 'static>(
    store: ResponseStore,
    f: impl FnOnce(&ResponseStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    blocking(move || f(&store).map_err(store_failed))
        .await
        .map_err(IntoResponse::into_response)
}

/// A path parameter, or 400 for one that is not UTF-8 text.
pub fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, Response> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text(), None).into_response())
}

/// `after`, `limit` and `order` of a list route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageParams {
    pub after: Option<String>,
    pub limit: usize,
    pub order: Order,
}

/// The page parameters of `q`; 400 naming a bad one or an unknown one (`include` is taken and
/// ignored: wick has nothing extra to include).
pub fn page_params(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<PageParams, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text(), None))?;
    if let Some(k) = q.keys().find(|k| {
        !matches!(
            k.as_str(),
            "after" | "limit" | "order" | "include" | "include[]"
        )
    }) {
        return Err(ApiError::invalid(
            format!("unknown parameter `{k}`: expected after, limit, order or include"),
            Some(k),
        ));
    }
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    format!("limit must be an integer from 1 to {MAX_LIMIT}, got {l:?}"),
                    Some("limit"),
                )
            })?,
    };
    let order = match q.get("order").map(String::as_str) {
        None => Order::default(),
        Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(o) => {
            return Err(ApiError::invalid(
                format!("order must be `asc` or `desc`, got {o:?}"),
                Some("order"),
            ))
        }
    };
    let after = q.get("after").filter(|a| !a.is_empty()).cloned();
    Ok(PageParams {
        after,
        limit,
        order,
    })
}

/// The list body of `items` (`has_more` false), or of a page.
pub fn list_body(page: ItemPage) -> Value {
    let id = |v: Option<&Value>| v.and_then(|i| i["id"].as_str()).map(str::to_string);
    json!({
        "object": "list",
        "first_id": id(page.data.first()),
        "last_id": id(page.data.last()),
        "has_more": page.has_more,
        "data": page.data,
    })
}

/// A listing as a response: the page, or 404 for the missing parent or the unknown `after`.
pub fn listing(l: Listing, what: &str, id: &str, after: Option<&str>) -> Result<Value, Response> {
    match l {
        Listing::Page(p) => Ok(list_body(p)),
        Listing::Missing => Err(not_found(what, id, "id")),
        Listing::UnknownAfter => Err(not_found("Item", after.unwrap_or_default(), "after")),
    }
}

/// A list of items, for the OpenAPI document (the handlers build it as JSON).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ItemList {
    /// Always `list`.
    object: String,
    /// The items: `message`, `function_call` or `function_call_output` objects, each with
    /// its `id`.
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
    /// The first and the last item's id; null for an empty page.
    first_id: Option<String>,
    last_id: Option<String>,
    /// More items follow the last one in this order (ask again with `after` = `last_id`).
    has_more: bool,
}

/// The body of a delete.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Deleted {
    id: String,
    /// `response`, or `conversation.deleted`.
    object: String,
    /// Always true.
    deleted: bool,
}

/// `GET /v1/responses/{id}`: the stored Response object.
#[utoipa::path(
    get, path = "/v1/responses/{id}", operation_id = "getResponse", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`).")),
    responses(
        (status = 200, description = "The Response object, as it was when saved (a background response: as it is now).", body = Object),
        (status = 404, description = "No such response for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn get_response(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let lookup = id.clone();
    match with_store(store, move |s| s.get(&owner, &lookup)).await? {
        Some(r) => Ok(Json(r.response)),
        None => Err(not_found("Response", &id, "id")),
    }
}

/// `DELETE /v1/responses/{id}`: the response and its items are gone.
#[utoipa::path(
    delete, path = "/v1/responses/{id}", operation_id = "deleteResponse", tag = "openai",
    params(("id" = String, Path, description = "The response's id (`resp_...`).")),
    responses(
        (status = 200, description = "Deleted.", body = Deleted),
        (status = 404, description = "No such response for this key (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn delete_response(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let target = id.clone();
    if with_store(store, move |s| s.delete(&owner, &target)).await? {
        Ok(Json(
            json!({"id": id, "object": "response", "deleted": true}),
        ))
    } else {
        Err(not_found("Response", &id, "id"))
    }
}

/// `GET /v1/responses/{id}/input_items`: a page of the input items the response was made from.
#[utoipa::path(
    get, path = "/v1/responses/{id}/input_items", operation_id = "listInputItems", tag = "openai",
    params(
        ("id" = String, Path, description = "The response's id (`resp_...`)."),
        ("after" = Option<String>, Query, description = "An item id: list the items after it in `order`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Items per page, 1 to 100 (default 20)."),
        ("order" = Option<String>, Query, description = "`asc` or `desc` (default: newest first)."),
        ("include" = Option<Vec<String>>, Query, description = "Accepted and ignored."),
    ),
    responses(
        (status = 200, description = "A page of input items.", body = ItemList),
        (status = 400, description = "A bad parameter, named in `param`.", body = ErrorEnvelope),
        (status = 404, description = "No such response for this key, or no item `after` in it (`not_found`), or the server stores nothing (`storage_off`).", body = ErrorEnvelope),
    ),
)]
pub async fn input_items(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, Response> {
    let (store, id, owner) = (store(&state)?, path(id)?, owner(key));
    let p = page_params(query).map_err(IntoResponse::into_response)?;
    let (target, after) = (id.clone(), p.after.clone());
    let l = with_store(store, move |s| {
        s.input_items(&owner, &target, after.as_deref(), p.limit, p.order)
    })
    .await?;
    listing(l, "Response", &id, p.after.as_deref()).map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Query<HashMap<String, String>>, QueryRejection> {
        Ok(Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn page_parameters_default_and_each_bad_one_is_named() {
        let p = page_params(q(&[])).unwrap();
        assert_eq!((p.after, p.limit, p.order), (None, 20, Order::Desc));
        let p = page_params(q(&[("after", "msg_1"), ("limit", "100"), ("order", "asc")])).unwrap();
        assert_eq!(
            (p.after.as_deref(), p.limit, p.order),
            (Some("msg_1"), 100, Order::Asc)
        );
        for (pairs, param) in [
            (&[("limit", "0")][..], "limit"),
            (&[("limit", "101")][..], "limit"),
            (&[("limit", "ten")][..], "limit"),
            (&[("order", "up")][..], "order"),
            (&[("before", "x")][..], "before"),
        ] {
            let e = page_params(q(pairs)).unwrap_err();
            assert_eq!(e.parts().0.as_u16(), 400, "{pairs:?}");
            assert_eq!(e.body()["error"]["param"], param, "{pairs:?}");
        }
    }

    #[test]
    fn a_list_body_names_its_first_and_last_ids() {
        let page = ItemPage {
            data: vec![json!({"id": "a"}), json!({"id": "b"})],
            has_more: true,
        };
        let b = list_body(page);
        assert_eq!(
            (b["first_id"].as_str(), b["last_id"].as_str()),
            (Some("a"), Some("b"))
        );
        assert_eq!(
            (b["object"].as_str(), b["has_more"].as_bool()),
            (Some("list"), Some(true))
        );
        let b = list_body(ItemPage::default());
        assert!(b["first_id"].is_null() && b["data"] == json!([]));
    }
}
