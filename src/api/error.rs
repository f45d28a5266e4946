//! `ApiError` and the ONE table that turns an error into `(status, type, code)` and the OpenAI
//! envelope `{"error":{"message","type","param","code"}}`. Runs on the HTTP tasks.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::validate::ValidationError;
use crate::engine::SubmitError;

/// Seconds a client is told to wait after a 429.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Every error the HTTP layer returns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a wrong type or an out-of-range value; `param` names the field.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    /// The input plus the output asked for does not fit the context (or the KV cache).
    /// `param` is the request field holding the input (`messages`, `prompt`, `input`).
    #[error("{message}")]
    ContextLength {
        message: String,
        param: &'static str,
    },
    /// No API key, a malformed one, or one that is not configured (the message never repeats
    /// the key).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid key without the right for this route (an admin route, a non-admin key).
    #[error("{0}")]
    Forbidden(String),
    /// The request names a model this server does not serve; the message (see
    /// [`ApiError::model_not_found`]) names the served ones.
    #[error("{0}")]
    ModelNotFound(String),
    /// A stored object (a response, a conversation) the caller's key has none of; `param`
    /// names the field that named it, `code` is OpenAI's for it.
    #[error("{message}")]
    NotFound {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// The body is over the limit.
    #[error("{0}")]
    BodyTooLarge(String),
    /// The admission queue is full.
    #[error("{0}")]
    QueueFull(String),
    /// The request's API key is past one of its limits; `kind` is OpenAI's error type for it
    /// (`requests` or `tokens`); `retry_after`: when a retry can pass (`None`: never as sent).
    #[error("{message}")]
    RateLimited {
        message: String,
        kind: &'static str,
        retry_after: Option<std::time::Duration>,
    },
    /// The model is still loading.
    #[error("the model is loading; retry shortly")]
    Loading,
    /// The server is draining (shutting down).
    #[error("the server is shutting down")]
    Draining,
    /// The request ran past `--request-timeout`.
    #[error("the request took longer than the server's limit of {0:?}")]
    Timeout(std::time::Duration),
    /// Our fault.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// 404 `model_not_found` for `model`, naming the `served` ones.
    pub fn model_not_found(model: &str, served: &[String]) -> Self {
        ApiError::ModelNotFound(format!(
            "the model `{model}` does not exist; this server serves: {}",
            served.join(", ")
        ))
    }

    /// THE table: status, error type, code.
    pub fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            ApiError::InvalidRequest { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ApiError::ContextLength { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ApiError::Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                Some("insufficient_permissions"),
            ),
            ApiError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ApiError::NotFound { code, .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", *code)
            }
            ApiError::BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
            ),
            ApiError::QueueFull(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("queue_full"),
            ),
            ApiError::RateLimited { kind, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                kind,
                Some("rate_limit_exceeded"),
            ),
            ApiError::Loading => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("model_loading"),
            ),
            ApiError::Draining => (
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                Some("shutting_down"),
            ),
            ApiError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "server_error", Some("timeout")),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    /// The HTTP status of this error (what a WebSocket turn's error event and log line carry).
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The `{"error": {...}}` envelope.
    pub fn envelope(&self) -> ErrorEnvelope {
        let (_, kind, code) = self.parts();
        let param = match self {
            ApiError::InvalidRequest { param, .. } => param.clone(),
            ApiError::ContextLength { param, .. } => Some(param.to_string()),
            ApiError::ModelNotFound(_) => Some("model".to_string()),
            ApiError::NotFound { param, .. } => param.clone(),
            _ => None,
        };
        ErrorEnvelope {
            error: ErrorBody {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }

    /// The envelope as JSON (what a failed stream's last `data:` event carries).
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!(self.envelope())
    }
}

/// The OpenAI error envelope: the body of every error response, and the last event of a
/// stream that fails after its first byte.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, utoipa::ToResponse)]
#[response(description = "An error, in the OpenAI envelope.")]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// What went wrong: `type` and `code` from the error table, `param` the request field at
/// fault where there is one.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error` (a full queue), `requests` or `tokens` (past
    /// a key's limit, as OpenAI names them), `service_unavailable` or `server_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    #[schema(required = true)]
    pub param: Option<String>,
    /// `context_length_exceeded`, `invalid_api_key`, `model_not_found`, `request_too_large`,
    /// `queue_full`, `model_loading`, `shutting_down`, `timeout`, or null.
    #[schema(required = true, value_type = Option<String>)]
    pub code: Option<&'static str>,
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(q) => ApiError::QueueFull(q.to_string()),
            SubmitError::ShuttingDown | SubmitError::Stopped => ApiError::Draining,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::Invalid { message, param } => ApiError::InvalidRequest {
                message,
                param: Some(param),
            },
            ValidationError::ContextLength { message, param } => {
                ApiError::ContextLength { message, param }
            }
            ValidationError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        let mut resp = (status, axum::Json(self.envelope())).into_response();
        let retry = match &self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            _ if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE =>
            {
                Some(std::time::Duration::from_secs(RETRY_AFTER_SECS))
            }
            _ => None,
        };
        if let Some(d) = retry {
            // Whole seconds (rounded up) for HTTP; milliseconds for the OpenAI clients, which
            // read `retry-after-ms` first.
            let ms = d.as_millis().max(1) as u64;
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
            h.insert("retry-after-ms", HeaderValue::from(ms));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::QueueFull;

    #[test]
    fn the_table_maps_each_row() {
        let rows = [
            (ApiError::invalid("x", Some("n")), 400, None),
            (
                ApiError::ContextLength {
                    message: "x".into(),
                    param: "messages",
                },
                400,
                Some("context_length_exceeded"),
            ),
            (
                ApiError::Unauthorized("x".into()),
                401,
                Some("invalid_api_key"),
            ),
            (
                ApiError::Forbidden("x".into()),
                403,
                Some("insufficient_permissions"),
            ),
            (
                ApiError::ModelNotFound("m".into()),
                404,
                Some("model_not_found"),
            ),
            (
                ApiError::NotFound {
                    message: "x".into(),
                    param: Some("previous_response_id".into()),
                    code: Some("previous_response_not_found"),
                },
                404,
                Some("previous_response_not_found"),
            ),
            (
                ApiError::BodyTooLarge("x".into()),
                413,
                Some("request_too_large"),
            ),
            (ApiError::QueueFull("x".into()), 429, Some("queue_full")),
            (
                ApiError::RateLimited {
                    message: "x".into(),
                    kind: "tokens",
                    retry_after: None,
                },
                429,
                Some("rate_limit_exceeded"),
            ),
            (ApiError::Loading, 503, Some("model_loading")),
            (ApiError::Draining, 503, Some("shutting_down")),
            (
                ApiError::Timeout(std::time::Duration::from_secs(1)),
                504,
                Some("timeout"),
            ),
            (ApiError::Internal("x".into()), 500, None),
        ];
        for (e, status, code) in rows {
            let (s, _, c) = e.parts();
            assert_eq!(s.as_u16(), status, "{e:?}");
            assert_eq!(c, code, "{e:?}");
            assert!(e.body()["error"]["message"].is_string());
        }
    }

    #[test]
    fn submit_and_validation_errors_map_through_the_table() {
        let e: ApiError = ValidationError::ContextLength {
            message: "prompt has 5000 tokens + max_tokens 100 > context 4096".into(),
            param: "prompt",
        }
        .into();
        assert_eq!(e.parts().2, Some("context_length_exceeded"));
        assert_eq!(e.body()["error"]["param"], "prompt");
        let e: ApiError = ValidationError::invalid("n must be between 1 and 16, got 0", "n").into();
        assert_eq!(e.parts().0.as_u16(), 400);
        assert_eq!(e.body()["error"]["param"], "n");
        let e: ApiError = SubmitError::QueueFull(QueueFull("full".into())).into();
        assert_eq!(e.parts().0.as_u16(), 429);
        let e: ApiError = SubmitError::ShuttingDown.into();
        assert_eq!(e.parts().0.as_u16(), 503);
    }
}
