//! `GET /v1/usage?start=&end=&group_by=key|model|day`: the usage totals from `wick.db`, for an
//! admin key (a server without keys is open, this route too: there is no admin to ask for).
//! The parameters are checked on the handler's task; the database is read on a
//! `spawn_blocking` thread through a connection of its own, which in WAL mode neither waits
//! for the usage writer nor holds it up.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::auth::ApiKeyName;
use super::error::{ApiError, ErrorEnvelope};
use super::AppState;
use crate::store::usage::{self, GroupBy, Range, UsageReport};
use crate::store::StoreError;

/// What the query string asks for, checked; each error names its parameter.
pub fn parse_params(q: &HashMap<String, String>, now: i64) -> Result<(Range, GroupBy), ApiError> {
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "start" | "end" | "group_by"))
    {
        return Err(ApiError::invalid(
            format!("unknown parameter `{k}`: expected start, end or group_by"),
            Some(k),
        ));
    }
    let range = Range::resolve(
        q.get("start").map(String::as_str),
        q.get("end").map(String::as_str),
        now,
    )
    .map_err(|e| ApiError::invalid(e.to_string(), Some(e.param)))?;
    let group_by = match q.get("group_by") {
        None => GroupBy::default(),
        Some(g) => g
            .parse()
            .map_err(|e| ApiError::invalid(format!("group_by: {e}"), Some("group_by")))?,
    };
    Ok((range, group_by))
}

/// `GET /v1/usage`'s body, for the OpenAPI document only: the handler writes it with
/// `UsageReport::to_json` (whose group field is named after `group_by`), and
/// `tests/e2e/test_openapi.py` checks a real one against this schema.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UsageList {
    /// Always `list`.
    object: String,
    /// `key`, `model` or `day`: the field each total is named by.
    group_by: String,
    /// The range, unix seconds: start inclusive, end exclusive.
    start: i64,
    end: i64,
    data: Vec<UsageTotal>,
}

/// One group's totals; exactly one of `key`, `model`, `day` is present (`key` is null for
/// requests to a server without keys).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UsageTotal {
    key: Option<String>,
    model: Option<String>,
    /// `YYYY-MM-DD` (UTC).
    day: Option<String>,
    requests: u64,
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

/// The handler: 403 for a key that is not an admin's, 400 naming a bad parameter, 404 when
/// the server records no usage.
#[utoipa::path(
    get, path = "/v1/usage", operation_id = "usage", tag = "operations",
    params(
        ("start" = Option<String>, Query, description = "Unix seconds or `YYYY-MM-DD` (UTC), inclusive; default: 29 days before today."),
        ("end" = Option<String>, Query, description = "Unix seconds or `YYYY-MM-DD` (UTC), exclusive; default: tomorrow."),
        ("group_by" = Option<String>, Query, description = "`key` (default), `model` or `day`."),
    ),
    responses(
        (status = 200, description = "Usage totals per group.", body = UsageList),
        (status = 400, description = "A bad parameter, named in `param`.", body = ErrorEnvelope),
        (status = 403, description = "The key is not an admin key (`insufficient_permissions`).", body = ErrorEnvelope),
        (status = 404, description = "This server records no usage.", body = ErrorEnvelope),
    ),
)]
pub async fn handle(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, Response> {
    match key {
        Some(Extension(k)) if !k.admin => {
            return Err(ApiError::Forbidden(format!(
                "the key {:?} is not an admin key: /v1/usage needs one (`admin = true` in \
                 --api-keys-file)",
                &*k.name
            ))
            .into_response())
        }
        // The auth middleware lets a request through without a key only on an open server.
        None if !state.auth().is_open() => {
            return Err(ApiError::Unauthorized("no API key".into()).into_response())
        }
        _ => {}
    }
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text(), None).into_response())?;
    let (range, group_by) =
        parse_params(&q, super::unix_now() as i64).map_err(IntoResponse::into_response)?;
    let Some(log) = state.options().usage.clone() else {
        let mut r = ApiError::invalid("usage statistics are not recorded by this server", None)
            .into_response();
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Err(r);
    };
    let report = super::blocking(move || {
        match usage::read(log.db(), range, group_by) {
            // The writer has not created it yet: nothing used.
            Err(StoreError::Missing(_)) => Ok(UsageReport {
                group_by,
                range,
                data: Vec::new(),
            }),
            other => other.map_err(|e| ApiError::Internal(format!("usage database: {e}"))),
        }
    })
    .await
    .map_err(IntoResponse::into_response)?;
    Ok(Json(report.to_json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let now = 1_733_270_400;
        for (pairs, param) in [
            (&[("start", "soon")][..], "start"),
            (&[("end", "2024-02-30")][..], "end"),
            (
                &[("start", "2024-12-05"), ("end", "2024-12-04")][..],
                "start",
            ),
            (&[("group_by", "week")][..], "group_by"),
            (&[("group-by", "key")][..], "group-by"),
        ] {
            let e = parse_params(&q(pairs), now).unwrap_err();
            assert_eq!(e.parts().0.as_u16(), 400, "{pairs:?}");
            assert_eq!(e.body()["error"]["param"], param, "{pairs:?}");
        }
        let (r, g) = parse_params(&q(&[("group_by", "day"), ("start", "0")]), now).unwrap();
        assert_eq!((r.start, g), (0, GroupBy::Day));
        let (r, g) = parse_params(&q(&[]), now).unwrap();
        assert_eq!((r.end - r.start, g), (30 * 86_400, GroupBy::Key));
    }
}
