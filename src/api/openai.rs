//! OpenAI wire types, serde only. Unknown request fields are ignored (never a 400).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields chat and completions share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u64>,
    pub stop: Option<StopField>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Keys are token ids as strings.
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// Keep generating past the model's end-of-turn tokens, up to `max_tokens` (as vLLM and
    /// llama.cpp's server offer; for benchmarks).
    pub ignore_eos: Option<bool>,
    /// Scheduling priority, as vLLM reads its field: lower is handled earlier, first come first
    /// served within a priority. Default 0.
    pub priority: Option<i32>,
}

impl CommonParams {
    /// The stop strings, as a list.
    pub fn stops(&self) -> Vec<String> {
        self.stop
            .clone()
            .map(StopField::into_vec)
            .unwrap_or_default()
    }
}

/// One content part; only `text` parts carry text.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Other fields (name, ...), passed to the template as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Json>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessage>,
    pub max_completion_tokens: Option<u64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`; kept as JSON so that a bad
    /// shape is a 400 naming `response_format`, checked in validation.
    pub response_format: Option<Json>,
    /// Function tools, validated in `tools.rs` (kept as JSON for the same reason).
    pub tools: Option<Json>,
    pub tool_choice: Option<Json>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A prompt: text, texts, token ids, or lists of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    /// Legacy: the number of top alternatives per token.
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `POST /tokenize` in vLLM's fields and llama.cpp's alike; `api::tokenize` resolves the two
/// (every field is optional here, so that a wrong type can be pinned on its field).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    /// The text (vLLM).
    pub prompt: Option<String>,
    /// The text (llama.cpp); give this or `prompt`.
    pub content: Option<String>,
    /// Chat messages, rendered with the chat template as the chat route renders them.
    pub messages: Option<Vec<ChatMessage>>,
    /// Add BOS where the model wants one (vLLM; default true).
    pub add_special_tokens: Option<bool>,
    /// Add BOS where the model wants one (llama.cpp; default false).
    pub add_special: Option<bool>,
    /// Special-token text becomes its id (llama.cpp; default true).
    pub parse_special: Option<bool>,
    /// `tokens` as `{"id", "piece"}` objects (llama.cpp; default false).
    pub with_pieces: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: PromptField,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
}

/// One vector: floats, or base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// Why a choice ended, as OpenAI names it: these three values and nothing else go out.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token or stop string, or the output grammar completed.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// The model called tools (chat only).
    ToolCalls,
}

/// The fields every response and chunk of a request share.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseHeader {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageBody {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl UsageBody {
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Self {
        Self {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLogprobBody {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatLogprobBody {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprobBody>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatLogprobs {
    pub content: Vec<ChatLogprobBody>,
}

/// A function call's name and arguments (a JSON string).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCallBody {
    pub name: String,
    pub arguments: String,
}

/// One call in `message.tool_calls`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallBody {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCallBody,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessageBody {
    pub role: &'static str,
    /// Null when the message is tool calls only.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallBody>>,
}

/// A streamed call fragment: the first for a call carries `id`, `type` and the name with
/// arguments `""`; later ones carry argument text only.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageBody,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatCompletion {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<ChatChoice>,
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatCompletionChunk {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<ChatChunkChoice>,
    pub usage: Option<UsageBody>,
}

/// Legacy completions logprobs.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, Json>>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// A completions response, and (with `object` the same) each of its streamed chunks.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Completion {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<CompletionChoice>,
    pub usage: Option<UsageBody>,
}
