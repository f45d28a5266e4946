//! [`OpenAiJson`]: the one request preamble. Reads the body (413 over the limit), parses it
//! (400 naming what is wrong) and checks `model` (404 unless absent or the served name), so
//! that a handler starts from a typed request. Runs on the handler's task.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use super::openai::{
    ChatCompletionRequest, CompletionRequest, DetokenizeRequest, EmbeddingRequest,
};
use super::AppState;

/// A request body: which model it names, and how it is read from JSON.
pub trait WireRequest: DeserializeOwned {
    fn model(&self) -> Option<&str>;

    /// The request from its JSON value; by default serde's reading, a 400 with serde's message.
    fn from_json(value: Value) -> Result<Self, ApiError> {
        serde_json::from_value(value)
            .map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))
    }
}

macro_rules! wire_request {
    ($($t:ty => |$r:ident| $e:expr),* $(,)?) => {
        $(impl WireRequest for $t {
            fn model(&self) -> Option<&str> {
                let $r = self;
                $e
            }
        })*
    };
}

wire_request! {
    ChatCompletionRequest => |r| r.common.model.as_deref(),
    CompletionRequest => |r| r.common.model.as_deref(),
    EmbeddingRequest => |r| r.model.as_deref(),
    DetokenizeRequest => |r| r.model.as_deref(),
}

/// A JSON body of type `T`, parsed and checked against the served model name.
pub struct OpenAiJson<T>(pub T);

impl<T: WireRequest> FromRequest<AppState> for OpenAiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::BodyTooLarge(format!("the request body is over the limit: {e}"))
            } else {
                ApiError::invalid(format!("reading the body: {e}"), None)
            }
        })?;
        let value = T::from_json(parse(&bytes)?)?;
        state.check_model(value.model())?;
        Ok(OpenAiJson(value))
    }
}

/// Parses a JSON body: 400 for bad JSON or wrong types.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = match e.classify() {
            serde_json::error::Category::Data => format!("invalid request: {e}"),
            _ => format!("malformed JSON: {e}"),
        };
        ApiError::invalid(msg, None)
    })
}
