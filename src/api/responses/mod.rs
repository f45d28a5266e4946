//! `POST /v1/responses` (OpenAI's Responses API) and `POST /v1/responses/{id}/cancel`.
//!
//! A create request goes: [`start`] resolves the history it continues (`previous_response_id`
//! or `conversation` from the store, or the WebSocket connection's own cache), turns history +
//! input into chat messages and validates them as a chat request (`input.rs`, then
//! `Validator::chat` on `spawn_blocking`: the same template, tools and grammar path), submits
//! it, and returns a [`ResponseRun`]: the [`events::ResponsesStream`] machine's events over the
//! engine's, with the response saved to the store before its terminal event goes out
//! (`storage.rs`). The handler writes those events as named SSE, or returns the terminal
//! event's response as JSON; `background: true` runs them on a tokio task instead
//! (`background.rs`). Dropping the events cancels the engine request.

pub mod background;
pub mod events;
pub mod input;
mod storage;
pub mod stored;
pub mod types;
pub mod ws;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::{json, Value as Json};

use super::access::AccessNote;
use super::auth::ApiKeyName;
use super::error::{ApiError, ErrorEnvelope};
use super::extract::{OpenAiJson, WireRequest};
use super::limits::{self, Budget};
use super::metrics::ResponseRecorder;
use super::stream::{self, Deadline};
use super::validate::{ValidChat, ValidationError, Validator};
use super::{unix_now, AppState};
pub use crate::store::new_id;
use events::{ResponsesStream, StreamSetup};
use types::*;

pub use background::{cancel, Running};

impl WireRequest for CreateResponse {
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
}

/// Who asks: the key that owns what the response stores, its token budget and the request's
/// access-log record.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The API key's name; `""` when the server has no keys.
    pub owner: String,
    pub budget: Option<Budget>,
    pub note: Option<AccessNote>,
}

impl Caller {
    /// The caller of an HTTP request, from what the middlewares put in its extensions.
    pub fn of(key: Option<&ApiKeyName>, budget: Option<Budget>, note: Option<AccessNote>) -> Self {
        Self {
            owner: key.map(|k| k.name.to_string()).unwrap_or_default(),
            budget,
            note,
        }
    }
}

/// A started response.
pub struct ResponseRun {
    /// `resp_...`.
    pub id: String,
    /// Every item the prompt was built from (the history, then this input), oldest first.
    pub history: Vec<Json>,
    /// Its events, `response.created` first, exactly one terminal event last. Dropping the
    /// stream cancels the engine request.
    pub events: BoxStream<'static, ResponseEvent>,
}

/// A response: JSON (the terminal response), or with `stream` server-sent events
/// (`event: <type>` and `data: <event JSON>`, no `[DONE]`); with `background` the queued
/// response at once (poll it with `GET /v1/responses/{id}`).
#[utoipa::path(
    post, path = "/v1/responses", operation_id = "create_response", tag = "openai",
    request_body(content = CreateResponse, example = json!({
        "input": "Hi!", "max_output_tokens": 8, "temperature": 0,
    })),
    responses(
        (status = 200, description = "The response; with `stream`, its events as named \
            server-sent events.", content(
            (ResponseObject = "application/json"),
            (ResponseEvent = "text/event-stream"),
        )),
        (status = 400, response = ErrorEnvelope),
        (status = 404, response = ErrorEnvelope),
        (status = 413, response = ErrorEnvelope),
        (status = 429, response = ErrorEnvelope),
        (status = 503, response = ErrorEnvelope),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    key: Option<Extension<ApiKeyName>>,
    note: Option<Extension<AccessNote>>,
    budget: Option<Extension<Budget>>,
    OpenAiJson(req): OpenAiJson<CreateResponse>,
) -> Result<Response, ApiError> {
    let caller = Caller::of(
        key.as_ref().map(|k| &k.0),
        budget.map(|b| b.0),
        note.map(|n| n.0),
    );
    if req.background == Some(true) {
        return background::create(state, caller, req).await;
    }
    let streamed = req.stream == Some(true);
    let run = start(&state, caller, req, None).await?;
    if streamed {
        return Ok(stream::sse_named(run.events, ResponseEvent::name));
    }
    Ok(axum::Json(terminal(run.events).await?).into_response())
}

/// The response the events end with; a failed one is the HTTP error.
async fn terminal(
    mut events: BoxStream<'static, ResponseEvent>,
) -> Result<ResponseObject, ApiError> {
    let mut last = None;
    while let Some(e) = events.next().await {
        if e.is_terminal() {
            last = Some(e);
            break;
        }
    }
    match last.map(|e| e.kind) {
        Some(EventKind::Completed { response } | EventKind::Incomplete { response }) => {
            Ok(*response)
        }
        Some(EventKind::Failed { response }) => Err(ApiError::Internal(
            response.error.map(|e| e.message).unwrap_or_default(),
        )),
        Some(EventKind::Error { message, .. }) => Err(ApiError::Internal(message)),
        _ => Err(ApiError::Internal(
            "the response ended without a terminal event".into(),
        )),
    }
}

/// What validation made of a request.
struct Prepared {
    valid: ValidChat,
    /// This turn's input items, normalized (what the store keeps as its input items).
    input: Vec<Json>,
    /// The history and the input the prompt was built from (after truncation).
    history: Vec<Json>,
}

/// Validates `req`, resolves its history (`prior` if given: the WebSocket's per-connection
/// cache; else the store), submits it and returns its events.
pub async fn start(
    state: &AppState,
    caller: Caller,
    mut req: CreateResponse,
    prior: Option<Vec<Json>>,
) -> Result<ResponseRun, ApiError> {
    let deadline = Deadline::after(state.options().request_timeout);
    let served = state.served_for(req.model()).await?;
    let generate = req.generate != Some(false);
    if !generate {
        // The warm-up prefills the prompt; one token is the least the engine generates.
        req.max_output_tokens = Some(1);
    }
    let conversation = storage::conversation_id(req.conversation.as_ref())?;
    let history = match prior {
        Some(p) => p,
        None => storage::history(state, &caller.owner, &req, conversation.as_deref()).await?,
    };
    let validator = served.validator.clone();
    let r = req.clone();
    let prepared = super::blocking(move || prepare(&validator, &r, history)).await?;
    if let Some(note) = &caller.note {
        note.update(|r| r.max_tokens = Some(prepared.valid.request.max_tokens));
    }
    limits::reserve(
        caller.budget.as_ref(),
        prepared.valid.request.token_budget(),
    )?;
    let id = new_id("resp_");
    let setup = StreamSetup {
        base: ResponseObject {
            model: served.name().to_string(),
            ..base_response(state, &id, &req, conversation.clone())
        },
        tokenizer: served.validator.tokenizer().clone(),
        logprobs: prepared.valid.reply.logprobs,
        rules: prepared.valid.text.clone(),
        generate,
        prompt_tokens: prepared.valid.request.prompt.len(),
        new_id,
    };
    let engine_events = stream::merge(vec![served.engine.submit(prepared.valid.request)?]);
    let recorder = ResponseRecorder::new(state.metrics().clone()).with_note(caller.note.clone());
    let events = stream::chunks(
        ResponsesStream::new(setup),
        engine_events,
        deadline,
        recorder,
    )
    .map(|r| r.unwrap_or_else(|e| error_event(&e)))
    .boxed();
    let save = storage::Save {
        owner: caller.owner,
        store: req.store != Some(false),
        conversation,
        input: prepared.input,
    };
    Ok(ResponseRun {
        id,
        history: prepared.history,
        events: storage::saving(state, save, events),
    })
}

/// An `error` event (the fallback for a failure the machine did not end itself).
fn error_event(e: &ApiError) -> ResponseEvent {
    let env = e.envelope();
    ResponseEvent {
        kind: EventKind::Error {
            code: env.error.code.map(str::to_string),
            message: env.error.message,
            param: env.error.param,
        },
        sequence_number: 0,
    }
}

/// `req` checked and rendered: the input items, the history joined, the chat validation;
/// with `truncation: auto` the oldest items are dropped until the prompt fits.
fn prepare(
    v: &Validator,
    req: &CreateResponse,
    history: Vec<Json>,
) -> Result<Prepared, ValidationError> {
    input::check_metadata(req.metadata.as_ref())?;
    let auto = match req.truncation.as_deref() {
        None | Some("disabled") => false,
        Some("auto") => true,
        Some(other) => {
            return Err(ValidationError::invalid(
                format!("truncation must be \"auto\" or \"disabled\", got {other:?}"),
                "truncation",
            ))
        }
    };
    let input = input::input_items(req.input.as_ref(), &new_id)?;
    let input = input::resolve_references(input, &history)?;
    let mut all: Vec<Json> = history.into_iter().chain(input.iter().cloned()).collect();
    if all.is_empty() {
        return Err(ValidationError::invalid("input is required", "input"));
    }
    loop {
        let messages = input::messages(req.instructions.as_deref(), &all);
        let chat = input::chat_request(req, messages)?;
        match v.chat(chat).map_err(input::renamed) {
            Err(ValidationError::ContextLength { .. }) if auto && drop_oldest(&mut all) => continue,
            Err(e) => return Err(e),
            Ok(valid) => {
                return Ok(Prepared {
                    valid,
                    input,
                    history: all,
                })
            }
        }
    }
}

/// Drops the oldest item that is not a system or developer message (and the function call
/// outputs it leaves without their call); `false` when only one such item is left.
fn drop_oldest(items: &mut Vec<Json>) -> bool {
    let is_system = |i: &Json| {
        matches!(
            i.get("role").and_then(Json::as_str),
            Some("system" | "developer")
        )
    };
    let rest = items.iter().filter(|i| !is_system(i)).count();
    if rest <= 1 {
        return false;
    }
    if let Some(pos) = items.iter().position(|i| !is_system(i)) {
        items.remove(pos);
    }
    while let Some(pos) = items.iter().position(|i| !is_system(i)) {
        let orphan = items[pos].get("type").and_then(Json::as_str) == Some("function_call_output");
        if !orphan || items.iter().filter(|i| !is_system(i)).count() <= 1 {
            break;
        }
        items.remove(pos);
    }
    true
}

/// The response as created: in progress, no output, the request's fields echoed.
fn base_response(
    state: &AppState,
    id: &str,
    req: &CreateResponse,
    conversation: Option<String>,
) -> ResponseObject {
    ResponseObject {
        id: id.to_string(),
        object: "response",
        created_at: unix_now(),
        status: Status::InProgress,
        background: req.background == Some(true),
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        metadata: req.metadata.clone().unwrap_or_else(|| json!({})),
        model: state.model_name().to_string(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: req.previous_response_id.clone(),
        conversation: conversation.map(|id| ConversationRef { id }),
        store: req.store != Some(false),
        temperature: req.temperature.unwrap_or(1.0),
        text: req
            .text
            .clone()
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: req
            .tools
            .as_ref()
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default(),
        top_logprobs: req.top_logprobs.unwrap_or(0),
        top_p: req.top_p.unwrap_or(1.0),
        truncation: req.truncation.clone().unwrap_or_else(|| "disabled".into()),
        usage: None,
        user: req.user.clone(),
    }
}

#[cfg(test)]
mod tests;
