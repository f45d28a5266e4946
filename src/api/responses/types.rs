//! The Responses API's wire types, serde only: the create request ([`CreateResponse`]), the
//! `Response` object with its output items, and the streamed events ([`ResponseEvent`]), in
//! the shapes the `openai` SDK's `types/responses` models read. Unknown request fields are
//! ignored; fields whose shape decides a 400 naming an inner field (`input`, `tools`,
//! `tool_choice`, `text`, `conversation`, `metadata`) are kept as JSON and checked in
//! `input.rs`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/responses`'s body.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CreateResponse {
    pub model: Option<String>,
    /// A string (one user message) or a list of input items.
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// A system message put first; not carried over to a follow-up.
    pub instructions: Option<String>,
    pub previous_response_id: Option<String>,
    /// A conversation id, or `{"id": ...}`.
    #[schema(value_type = Object)]
    pub conversation: Option<Value>,
    /// Default true.
    pub store: Option<bool>,
    pub stream: Option<bool>,
    pub background: Option<bool>,
    pub max_output_tokens: Option<u64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    #[schema(maximum = 20)]
    pub top_logprobs: Option<u64>,
    /// `message.output_text.logprobs` is the one value acted on; others are accepted.
    pub include: Option<Vec<String>>,
    /// Up to 16 string pairs (keys up to 64 characters, values up to 512).
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    /// `disabled` (default) or `auto`.
    pub truncation: Option<String>,
    pub user: Option<String>,
    /// Tools in the flat Responses shape (`{"type": "function", "name", ...}`).
    #[schema(value_type = Object)]
    pub tools: Option<Value>,
    #[schema(value_type = Object)]
    pub tool_choice: Option<Value>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    #[schema(value_type = Object)]
    pub text: Option<Value>,
    /// The WebSocket mode's warm-up: `false` prefills the prompt into the prefix cache and
    /// returns a completed response with no output.
    pub generate: Option<bool>,
    pub seed: Option<u64>,
}

/// Where a response stands, as OpenAI names it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Incomplete,
    Failed,
    Cancelled,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete => "incomplete",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// No more change will come.
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::InProgress)
    }
}

/// `error` of a failed response.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ResponseError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct InputTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// Prompt tokens computed for this response (what the prefix cache can keep for the next).
    pub cache_write_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct OutputTokensDetails {
    /// Always 0: wick runs no reasoning models' hidden tokens.
    pub reasoning_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: usize,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: usize,
}

impl ResponseUsage {
    pub fn new(input: usize, output: usize, cached: usize) -> Self {
        Self {
            input_tokens: input,
            input_tokens_details: InputTokensDetails {
                cached_tokens: cached,
                cache_write_tokens: input.saturating_sub(cached),
            },
            output_tokens: output,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: input + output,
        }
    }
}

/// One alternative of a token's logprob.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One generated token's logprob (with `include: ["message.output_text.logprobs"]`).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct Logprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// The `output_text` part of a message.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct OutputText {
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub text: String,
    /// Always empty: wick cites nothing.
    #[schema(value_type = Vec<Object>)]
    pub annotations: Vec<Value>,
    pub logprobs: Vec<Logprob>,
}

impl OutputText {
    pub fn new(text: String, logprobs: Vec<Logprob>) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: Vec::new(),
            logprobs,
        }
    }
}

/// An output item (a message, or a function call).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: Status,
        #[schema(value_type = String)]
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        /// The arguments object as a JSON string.
        arguments: String,
        status: Status,
    },
}

/// `conversation` of a response that belongs to one.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ConversationRef {
    pub id: String,
}

/// The `Response` object: what `POST /v1/responses` returns, what every lifecycle event
/// carries and what the store keeps. Request fields are echoed as OpenAI echoes them.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ResponseObject {
    pub id: String,
    #[schema(value_type = String)]
    pub object: &'static str,
    pub created_at: u64,
    pub status: Status,
    pub background: bool,
    pub completed_at: Option<u64>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u64>,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub conversation: Option<ConversationRef>,
    pub store: bool,
    pub temperature: f32,
    #[schema(value_type = Object)]
    pub text: Value,
    #[schema(value_type = Object)]
    pub tool_choice: Value,
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<Value>,
    pub top_logprobs: u64,
    pub top_p: f32,
    pub truncation: String,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
}

impl ResponseObject {
    /// The concatenated text of every output message (the SDK's `output_text`).
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|i| match i {
                OutputItem::Message { content, .. } => Some(content),
                OutputItem::FunctionCall { .. } => None,
            })
            .flatten()
            .map(|p| p.text.as_str())
            .collect()
    }
}

/// One streamed event: its `type` and fields, and its `sequence_number` (from 0, +1 each).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ResponseEvent {
    #[serde(flatten)]
    pub kind: EventKind,
    pub sequence_number: u64,
}

/// What an event says, tagged with its `type`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(tag = "type")]
pub enum EventKind {
    #[serde(rename = "response.queued")]
    Queued { response: Box<ResponseObject> },
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Logprob>,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Logprob>,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgumentsDone {
        item_id: String,
        output_index: usize,
        /// The function's name (in OpenAI's current reference).
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
    /// A failure outside any response (the WebSocket mode's refusals).
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
    },
}

impl ResponseEvent {
    /// The event's `type`, the SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match &self.kind {
            EventKind::Queued { .. } => "response.queued",
            EventKind::Created { .. } => "response.created",
            EventKind::InProgress { .. } => "response.in_progress",
            EventKind::ItemAdded { .. } => "response.output_item.added",
            EventKind::PartAdded { .. } => "response.content_part.added",
            EventKind::TextDelta { .. } => "response.output_text.delta",
            EventKind::TextDone { .. } => "response.output_text.done",
            EventKind::PartDone { .. } => "response.content_part.done",
            EventKind::ArgumentsDelta { .. } => "response.function_call_arguments.delta",
            EventKind::ArgumentsDone { .. } => "response.function_call_arguments.done",
            EventKind::ItemDone { .. } => "response.output_item.done",
            EventKind::Completed { .. } => "response.completed",
            EventKind::Incomplete { .. } => "response.incomplete",
            EventKind::Failed { .. } => "response.failed",
            EventKind::Error { .. } => "error",
        }
    }

    /// The response a lifecycle event carries.
    pub fn response(&self) -> Option<&ResponseObject> {
        match &self.kind {
            EventKind::Queued { response }
            | EventKind::Created { response }
            | EventKind::InProgress { response }
            | EventKind::Completed { response }
            | EventKind::Incomplete { response }
            | EventKind::Failed { response } => Some(response),
            _ => None,
        }
    }

    /// The last event of a response: completed, incomplete or failed (or an error event).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind,
            EventKind::Completed { .. }
                | EventKind::Incomplete { .. }
                | EventKind::Failed { .. }
                | EventKind::Error { .. }
        )
    }
}
