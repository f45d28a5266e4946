//! The Responses API's WebSocket mode (`GET /v1/responses` with `Upgrade: websocket`), as
//! OpenAI defines it so that the SDKs' `responses.connect()` work unchanged: the handshake
//! takes the same auth as the POST (the router's key middleware has checked it) and an
//! `OpenAI-Beta` header (accepted, not required); then the client sends
//! `{"type": "response.create", ...}` with the POST body's fields and the server answers with
//! the same events as the SSE stream, one JSON text frame each, or an `error` event
//! (`{"type": "error", "status", "error": {...}}`) for what it cannot do. The connection stays
//! usable after every error event.
//!
//! This file owns the handshake and the connection's [`Limits`]; `conn.rs` the loop (one tokio
//! task per socket, spawned by axum after the upgrade); `frames.rs` the pure parts (client
//! frames, error events, the per-connection history cache). Responses themselves are started
//! through [`Start`] (the real one: [`Responses`], over `responses::start`); the loop knows
//! nothing of prompts or the engine.

mod conn;
mod frames;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::types::CreateResponse;
use super::{start, Caller};
use crate::api::access::TurnLog;
use crate::api::auth::ApiKeyName;
use crate::api::error::{ApiError, ErrorEnvelope};
use crate::api::extract::WireRequest;
use crate::api::limits;
use crate::api::serve::ConnSlot;
use crate::api::AppState;

/// The largest client message acted on (the Python client's default frame limit).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Messages up to this size are read and refused with an `error` event; past it the socket
/// is closed with 1009, so that one client cannot make the server buffer without bound.
pub const HARD_MESSAGE_BYTES: usize = 16 << 20;

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger client messages get an `error` event (413 `message_too_large`).
    pub max_message_bytes: usize,
    /// Larger messages close the socket (1009): the read buffer's bound.
    pub hard_message_bytes: usize,
    /// How often the server pings the client.
    pub ping_every: Duration,
    /// How long a connection lives; then `websocket_connection_limit_reached` and close 1000
    /// (after the running response, if any, has ended).
    pub lifetime: Duration,
    /// How many responses' histories the connection keeps for `previous_response_id`.
    pub history_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: MAX_MESSAGE_BYTES,
            hard_message_bytes: HARD_MESSAGE_BYTES,
            ping_every: Duration::from_secs(30),
            lifetime: Duration::from_secs(60 * 60),
            history_entries: 8,
        }
    }
}

/// A started response, as the connection loop sees it.
pub struct Run {
    /// `resp_...`
    pub id: String,
    /// The items the prompt was built from (the prior history and this turn's input).
    pub history: Vec<Value>,
    /// The server events, as JSON, ending with one terminal event. Dropping it cancels the
    /// engine request.
    pub events: BoxStream<'static, Value>,
}

/// Starts one response from a `response.create` body (the POST body's fields) and, when the
/// connection holds the history of its `previous_response_id`, that history as `prior`.
pub trait Start: Send + 'static {
    fn start(
        &self,
        body: Map<String, Value>,
        prior: Option<Vec<Value>>,
    ) -> BoxFuture<'static, Result<Run, ApiError>>;
}

/// The WebSocket mode: upgrades to a connection on which each `response.create` runs one
/// response (its events as JSON text frames). The handshake needs the same key as the POST.
#[utoipa::path(
    get, path = "/v1/responses", operation_id = "connect_responses", tag = "openai",
    params(
        ("OpenAI-Beta" = Option<String>, Header, description = "Accepted, not required \
            (e.g. `responses_websockets=2026-02-06`)."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: send \
            `{\"type\": \"response.create\", ...}` (the POST body's fields without `stream` \
            and `background`), receive the response's events, one JSON text frame each, or \
            `{\"type\": \"error\", \"status\", \"error\"}`."),
        (status = 400, description = "Not a WebSocket handshake.", body = ErrorEnvelope),
        (status = 426, description = "The connection cannot be upgraded.", body = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
    ),
)]
pub async fn connect(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    slot: Option<Extension<ConnSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = state.readiness() {
        return e.into_response();
    }
    let start = Responses {
        state: state.clone(),
        key: key.map(|k| k.0.name.clone()),
        client: client.map(|c| c.0 .0),
        _slot: slot.map(|s| s.0),
    };
    upgrade(ws, start, Limits::default(), state.closing())
}

/// The real [`Start`]: `responses::start` for the connection's key. Each turn is admitted
/// against the key's limits (a concurrency slot and a token reservation, held until its events
/// are done) and writes its own access-log line and usage row ([`TurnLog`]); the socket holds
/// its `--max-connections` place for as long as it is open.
struct Responses {
    state: AppState,
    key: Option<Arc<str>>,
    client: Option<SocketAddr>,
    _slot: Option<ConnSlot>,
}

impl Start for Responses {
    fn start(
        &self,
        body: Map<String, Value>,
        prior: Option<Vec<Value>>,
    ) -> BoxFuture<'static, Result<Run, ApiError>> {
        let state = self.state.clone();
        let mut turn = TurnLog::begin(&state, self.key.clone(), self.client);
        let admitted = limits::admit_turn(&state, self.key.as_ref(), turn.note());
        let caller = Caller {
            owner: self.key.as_deref().unwrap_or_default().to_string(),
            budget: admitted.as_ref().ok().and_then(|s| s.as_ref()?.budget()),
            note: Some(turn.note()),
        };
        async move {
            let started = async {
                let slot = admitted?;
                let req = CreateResponse::from_json(Value::Object(body))?;
                state.check_model(req.model())?;
                Ok::<_, ApiError>((start(&state, caller, req, prior).await?, slot))
            };
            let (run, slot) = started.await.inspect_err(|e| {
                turn.set_status(e.status().as_u16());
            })?;
            // The turn's line and limits end with its events.
            let guard = (slot, turn);
            let events = run
                .events
                .map(move |e| {
                    let _held = &guard;
                    serde_json::to_value(&e).unwrap_or_else(|err| {
                        frames::api_error_event(&ApiError::Internal(format!(
                            "an event did not serialize: {err}"
                        )))
                    })
                })
                .boxed();
            Ok(Run {
                id: run.id,
                history: run.history,
                events,
            })
        }
        .boxed()
    }
}

/// Upgrades `ws` to a connection served with `start` and `limits`, closed with 1001 once
/// `closing` turns true; a request that is not a WebSocket handshake gets the OpenAI envelope
/// with the rejection's status (400, 405 or 426).
pub fn upgrade<S: Start>(
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    start: S,
    limits: Limits,
    closing: watch::Receiver<bool>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            let message = format!(
                "GET /v1/responses is the WebSocket mode: {} (POST /v1/responses for HTTP)",
                rejection.body_text()
            );
            let mut r = ApiError::invalid(message, None).into_response();
            *r.status_mut() = status;
            return r;
        }
    };
    // The web page offers `wick` (and its key as `wick-key.KEY`, read by `auth`): a browser
    // fails a handshake that offered subprotocols unless the server selects one.
    ws.protocols(["wick"])
        .max_message_size(limits.hard_message_bytes)
        .max_frame_size(limits.hard_message_bytes)
        .on_upgrade(move |socket| conn::serve(socket, start, limits, closing))
}
