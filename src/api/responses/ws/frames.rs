//! The pure pieces of a WebSocket connection: what a client frame asks for ([`parse`]), the
//! error events the server answers with ([`WsError`], [`error_event`]) and the per-connection
//! [`History`] cache. No I/O here; the connection loop (`conn.rs`) drives them.

use std::collections::VecDeque;

use serde_json::{json, Map, Value};

use crate::api::error::ApiError;

/// The event type a client sends to start a response.
pub const CREATE: &str = "response.create";

/// Fields of `POST /v1/responses` that have no meaning over the socket: every response is
/// streamed as frames, and a background response would outlive the turn it belongs to.
const REFUSED_FIELDS: [(&str, &str); 3] = [
    (
        "stream",
        "`stream` is implicit over the WebSocket; leave it out",
    ),
    (
        "background",
        "`background` is not supported over the WebSocket; use POST /v1/responses",
    ),
    (
        "stream_id",
        "`stream_id` lanes are not supported: one response at a time per connection",
    ),
];

/// A frame the connection cannot act on. Each becomes one `error` event; the connection stays
/// open.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WsError {
    #[error("a message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("binary messages are not supported: send each event as one JSON text message")]
    Binary,
    #[error("the message is not valid JSON: {0}")]
    NotJson(String),
    #[error("the message must be a JSON object with a `type`")]
    NotAnEvent,
    #[error("unknown event type `{0}`; this server accepts `response.create`")]
    UnknownType(String),
    #[error("{message}")]
    Refused {
        param: &'static str,
        message: &'static str,
    },
    /// A `response.create` while another response of this connection runs (OpenAI's Realtime
    /// API names the same refusal `conversation_already_has_active_response`).
    #[error("a response is already in progress on this connection ({0}); wait for its terminal event before sending another `response.create`")]
    Busy(String),
}

impl WsError {
    /// HTTP status, error type, code and param of the error event.
    fn parts(&self) -> (u16, Option<&'static str>, Option<&'static str>) {
        match self {
            WsError::TooLarge { .. } => (413, Some("message_too_large"), None),
            WsError::Binary | WsError::NotJson(_) => (400, Some("invalid_json"), None),
            WsError::NotAnEvent => (400, Some("invalid_event"), Some("type")),
            WsError::UnknownType(_) => (400, Some("unknown_event_type"), Some("type")),
            WsError::Refused { param, .. } => (400, Some("unsupported_parameter"), Some(param)),
            WsError::Busy(_) => (400, Some("conversation_already_has_active_response"), None),
        }
    }

    /// The `error` event for this refusal.
    pub fn event(&self) -> Value {
        let (status, code, param) = self.parts();
        error_event(
            status,
            "invalid_request_error",
            code,
            &self.to_string(),
            param,
        )
    }
}

/// `{"type": "error", "status": N, "error": {"type", "code", "message", "param"}}`: the shape
/// of the SDK's `ResponseWsError`.
pub fn error_event(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Value {
    json!({
        "type": "error",
        "status": status,
        "error": {"type": kind, "code": code, "message": message, "param": param},
    })
}

/// The `error` event for a response that could not start (validation, limits, a draining
/// server): the same status, type, code and param as the HTTP route's answer.
pub fn api_error_event(e: &ApiError) -> Value {
    let (status, _, _) = e.parts();
    let envelope = e.envelope().error;
    error_event(
        status.as_u16(),
        envelope.kind,
        envelope.code,
        &envelope.message,
        envelope.param.as_deref(),
    )
}

/// A client frame's text: a `response.create` body (the POST body's fields, `type` removed).
pub fn parse(text: &str, limit: usize) -> Result<Map<String, Value>, WsError> {
    if text.len() > limit {
        return Err(WsError::TooLarge {
            size: text.len(),
            limit,
        });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| WsError::NotJson(e.to_string()))?;
    let Value::Object(mut body) = value else {
        return Err(WsError::NotAnEvent);
    };
    match body.remove("type") {
        Some(Value::String(t)) if t == CREATE => {}
        Some(Value::String(t)) => return Err(WsError::UnknownType(t)),
        _ => return Err(WsError::NotAnEvent),
    }
    for (param, message) in REFUSED_FIELDS {
        // `null` or `false` asks for nothing the socket lacks.
        if body
            .get(param)
            .is_some_and(|v| !v.is_null() && *v != Value::Bool(false))
        {
            return Err(WsError::Refused { param, message });
        }
        body.remove(param);
    }
    Ok(body)
}

/// Whether a server event ends its response, and with it the connection's turn.
pub fn is_terminal(event: &Value) -> bool {
    matches!(
        event.get("type").and_then(Value::as_str),
        Some("response.completed" | "response.incomplete" | "response.failed")
    )
}

/// The conversation state after a terminal event: the items the prompt was built from plus the
/// response's output items. `None` for a failed response, which a follow-up cannot continue.
pub fn continued(history: &[Value], terminal: &Value) -> Option<Vec<Value>> {
    let kind = terminal.get("type").and_then(Value::as_str)?;
    if kind != "response.completed" && kind != "response.incomplete" {
        return None;
    }
    let output = terminal
        .pointer("/response/output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut items = history.to_vec();
    items.extend(output);
    Some(items)
}

/// The last few responses of one connection, by id, with the items a follow-up continues:
/// what lets `previous_response_id` work with `store: false` on the same socket. Bounded by a
/// count (the oldest goes first); it lives and dies with the connection.
#[derive(Debug)]
pub struct History {
    entries: VecDeque<(String, Vec<Value>)>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, id: &str) -> Option<Vec<Value>> {
        self.entries
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&mut self, id: String, items: Vec<Value>) {
        self.entries.retain(|(k, _)| *k != id);
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((id, items));
    }

    /// `body`'s `previous_response_id`, when this connection holds its history.
    pub fn prior(&self, body: &Map<String, Value>) -> Option<Vec<Value>> {
        body.get("previous_response_id")
            .and_then(Value::as_str)
            .and_then(|id| self.get(id))
    }
}
