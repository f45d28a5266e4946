//! OpenAI wire types, serde only. Unknown request fields are ignored (never a 400).
//!
//! Each type also derives `utoipa::ToSchema` for `GET /openapi.json` (`api::openapi`): the
//! schema is read from the same serde attributes, and where serde's reading is not what a
//! derive would describe (untagged enums whose variants overlap, fields kept as JSON and
//! checked in validation) the schema is written by hand in [`schema`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields chat and completions share.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f32>,
    /// At most `engine::MAX_N`.
    #[schema(minimum = 1, maximum = 16)]
    pub n: Option<u64>,
    pub stop: Option<StopField>,
    pub seed: Option<u64>,
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f32>,
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f32>,
    /// Keys are token ids as strings.
    #[schema(schema_with = schema::logit_bias)]
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    /// 0 or less: off.
    pub top_k: Option<i64>,
    #[schema(minimum = 0, maximum = 1)]
    pub min_p: Option<f32>,
    #[schema(exclusive_minimum = 0)]
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
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Other fields (name, ...), passed to the template as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    pub max_completion_tokens: Option<u64>,
    pub logprobs: Option<bool>,
    /// At most `sampling::MAX_TOP_LOGPROBS`.
    #[schema(maximum = 20)]
    pub top_logprobs: Option<u64>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}`; kept as JSON so that a bad
    /// shape is a 400 naming `response_format`, checked in validation.
    #[schema(schema_with = schema::response_format)]
    pub response_format: Option<Value>,
    /// Function tools, validated in `tools.rs` (kept as JSON for the same reason).
    #[schema(schema_with = schema::tools)]
    pub tools: Option<Value>,
    #[schema(schema_with = schema::tool_choice)]
    pub tool_choice: Option<Value>,
    /// Legacy function calling: `[{"name", "description", "parameters"}]`, read as `tools`
    /// (not with `tools`); the reply then carries `message.function_call`.
    pub functions: Option<Value>,
    /// Legacy: `"none"`, `"auto"` or `{"name": ...}`, read as `tool_choice`.
    pub function_call: Option<Value>,
    /// `false`: at most one tool call (default `true`: one or more, at most
    /// `tools::MAX_PARALLEL_CALLS` when forced).
    pub parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// A prompt: text, texts, token ids, or lists of token ids. Its schema is
/// [`schema::prompt`]: `[]` reads as `Ids`, and would match three variants of a derived
/// `oneOf`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    /// Legacy: the number of top alternatives per token, at most `sampling::MAX_TOP_LOGPROBS`.
    #[schema(maximum = 20)]
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
    #[serde(flatten)]
    pub common: CommonParams,
}

/// `POST /tokenize` in vLLM's fields and llama.cpp's alike; `api::tokenize` resolves the two
/// (every field is optional here, so that a wrong type can be pinned on its field).
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    /// The text (vLLM).
    pub prompt: Option<String>,
    /// The text (llama.cpp); give this or `prompt`.
    pub content: Option<String>,
    /// Chat messages, rendered with the chat template as the chat route renders them.
    pub messages: Option<Vec<ChatMessage>>,
    /// With `messages`: the tools, in the prompt as the chat route puts them (so the count is
    /// the chat route's).
    #[schema(schema_with = schema::tools)]
    pub tools: Option<Value>,
    /// With `messages`: `none` leaves the tools out of the prompt, as on the chat route.
    #[schema(schema_with = schema::tool_choice)]
    pub tool_choice: Option<Value>,
    /// Add BOS where the model wants one (vLLM; default true).
    pub add_special_tokens: Option<bool>,
    /// Add BOS where the model wants one (llama.cpp; default false).
    pub add_special: Option<bool>,
    /// Special-token text becomes its id (llama.cpp; default true).
    pub parse_special: Option<bool>,
    /// `tokens` as `{"id", "piece"}` objects (llama.cpp; default false).
    pub with_pieces: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    #[schema(schema_with = schema::token_id_list)]
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: PromptField,
    /// `float` (default) or `base64`.
    #[schema(schema_with = schema::encoding_format)]
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
    pub user: Option<String>,
}

/// One vector: floats, or base64 of its little-endian f32 bytes.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct EmbeddingData {
    #[schema(schema_with = schema::embedding_object)]
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct EmbeddingResponse {
    #[schema(schema_with = schema::list_object)]
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// Why a choice ended, as OpenAI names it: these values and nothing else go out.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token or stop string, or the output grammar completed.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// The model called tools (chat only).
    ToolCalls,
    /// The model called a legacy function (chat with `functions` only).
    FunctionCall,
}

/// The fields every response and chunk of a request share.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ResponseHeader {
    pub id: String,
    /// `chat.completion`, `chat.completion.chunk` or `text_completion`.
    #[schema(schema_with = schema::response_object)]
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
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

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct TopLogprobBody {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatLogprobBody {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprobBody>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<ChatLogprobBody>,
}

/// A function call's name and arguments (a JSON string).
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct FunctionCallBody {
    pub name: String,
    pub arguments: String,
}

/// One call in `message.tool_calls`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ToolCallBody {
    pub id: String,
    #[serde(rename = "type")]
    #[schema(schema_with = schema::function_kind)]
    pub kind: &'static str,
    pub function: FunctionCallBody,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatMessageBody {
    #[schema(schema_with = schema::assistant_role)]
    pub role: &'static str,
    /// Null when the message is tool calls only.
    #[schema(required = true)]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallBody>>,
    /// The call, in the legacy shape, of a request that sent `functions` (instead of
    /// `tool_calls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallBody>,
}

/// A streamed call fragment: the first for a call carries `id`, `type` and the name with
/// arguments `""`; later ones carry argument text only.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::function_kind)]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct FunctionDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatMessageBody,
    #[schema(required = true)]
    pub logprobs: Option<ChatLogprobs>,
    #[schema(required = true)]
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatCompletion {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<ChatChoice>,
    #[schema(required = true)]
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default, ToSchema)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::assistant_role)]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Legacy (`functions` sent): the call's name first, then argument pieces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionDelta>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    #[schema(required = true)]
    pub logprobs: Option<ChatLogprobs>,
    #[schema(required = true)]
    pub finish_reason: Option<FinishReason>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct ChatCompletionChunk {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<ChatChunkChoice>,
    #[schema(required = true)]
    pub usage: Option<UsageBody>,
}

/// Legacy completions logprobs.
#[derive(Debug, Clone, Serialize, PartialEq, Default, ToSchema)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, Value>>>,
    pub text_offset: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    #[schema(required = true)]
    pub logprobs: Option<CompletionLogprobs>,
    #[schema(required = true)]
    pub finish_reason: Option<FinishReason>,
}

/// A completions response, and (with `object` the same) each of its streamed chunks.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct Completion {
    #[serde(flatten)]
    pub header: ResponseHeader,
    pub choices: Vec<CompletionChoice>,
    #[schema(required = true)]
    pub usage: Option<UsageBody>,
}

/// Schema only: one server-sent event of a streamed chat completion (see [`schema::events`]).
pub struct ChatCompletionEvent;

/// Schema only: one server-sent event of a streamed completion (see [`schema::events`]).
pub struct CompletionEvent;

impl utoipa::PartialSchema for ChatCompletionEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::events("ChatCompletionChunk").into()
    }
}

impl ToSchema for ChatCompletionEvent {}

impl utoipa::PartialSchema for CompletionEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::events("Completion").into()
    }
}

impl ToSchema for CompletionEvent {}

impl utoipa::PartialSchema for PromptField {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema::prompt().into()
    }
}

impl ToSchema for PromptField {}

/// Schemas written by hand, for `GET /openapi.json`: fields kept as JSON and read in validation
/// (described as validation reads them), untagged enums whose variants overlap (`anyOf`, not
/// a derived `oneOf`), and the constant strings of responses.
pub mod schema {
    use utoipa::openapi::extensions::Extensions;
    use utoipa::openapi::schema::{
        AnyOfBuilder, ArrayBuilder, Object, ObjectBuilder, Schema, Type,
    };
    use utoipa::openapi::RefOr;

    fn string() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::String)
    }

    fn object() -> ObjectBuilder {
        ObjectBuilder::new().schema_type(Type::Object)
    }

    fn null() -> Object {
        ObjectBuilder::new().schema_type(Type::Null).build()
    }

    fn array(items: impl Into<RefOr<Schema>>) -> ArrayBuilder {
        ArrayBuilder::new().items(utoipa::openapi::schema::ArrayItems::RefOrSchema(Box::new(
            items.into(),
        )))
    }

    /// A string that is always `value`.
    fn constant(value: &str) -> Object {
        string().enum_values(Some([value])).build()
    }

    /// A list of token ids (`u32`: utoipa's derive would say `int32`, which stops at 2^31).
    pub fn token_id_list() -> Schema {
        token_ids().into()
    }

    fn token_ids() -> ArrayBuilder {
        let id = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u32::MAX));
        array(id)
    }

    /// [`super::PromptField`]: a string, strings, token ids or lists of token ids.
    pub fn prompt() -> Schema {
        AnyOfBuilder::new()
            .item(string())
            .item(array(string()))
            .item(token_ids())
            .item(array(token_ids()))
            .description(Some(
                "A string, a list of strings, token ids, or a list of lists of token ids.",
            ))
            .into()
    }

    /// One server-sent event of a stream, as OpenAPI 3.1 describes an event stream (the
    /// schema of each event: `data`, `event`, `id`, `retry`): `data` is a `chunk` as JSON, the
    /// error envelope (a failure after the first byte; the stream then closes), or the last
    /// event's `[DONE]`.
    pub fn events(chunk: &str) -> Schema {
        // utoipa has no `contentSchema`: it goes in as a raw keyword (the extensions map is
        // written flat into the object).
        let json_of = |name: &str| {
            let reference = serde_json::json!({ "$ref": format!("#/components/schemas/{name}") });
            string()
                .content_media_type("application/json")
                .extensions(Some(Extensions::from_iter([("contentSchema", reference)])))
        };
        let data = AnyOfBuilder::new()
            .item(constant("[DONE]"))
            .item(json_of(chunk))
            .item(json_of("ErrorEnvelope"));
        object()
            .property("data", data)
            .required("data")
            .property("event", string())
            .description(Some(
                "One `data:` event: a chunk as JSON, or an error envelope (then the stream \
                 closes), or `[DONE]` last. `: keep-alive` comments come every 15 s.",
            ))
            .into()
    }

    /// `response_format`, as `validate::response_format` reads it.
    pub fn response_format() -> Schema {
        let json_schema = object()
            .property(
                "schema",
                AnyOfBuilder::new().item(object()).item(
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .enum_values(Some([true])),
                ),
            )
            .required("schema")
            .description(Some(
                "`schema`: the JSON Schema the output must match; other fields (`name`, \
                 `strict`) are accepted and ignored.",
            ));
        let kind = |v: &str| object().property("type", constant(v)).required("type");
        AnyOfBuilder::new()
            .item(kind("text"))
            .item(kind("json_object"))
            .item(
                kind("json_schema")
                    .property("json_schema", json_schema)
                    .required("json_schema"),
            )
            .item(null())
            .description(Some(
                "`text` (the default), `json_object` (any JSON object) or `json_schema`; the \
                 output is constrained by a grammar.",
            ))
            .into()
    }

    /// `tools`, as `validate::tools` reads them: functions only.
    pub fn tools() -> Schema {
        let function = object()
            .property("name", string().pattern(Some("^[a-zA-Z0-9_.-]{1,64}$")))
            .required("name")
            .property("description", string())
            .property(
                "parameters",
                AnyOfBuilder::new()
                    .item(object().description(Some("JSON Schema of the arguments object")))
                    .item(null()),
            );
        let tool = object()
            .property("type", constant("function"))
            .required("type")
            .property("function", function)
            .required("function");
        AnyOfBuilder::new()
            .item(array(tool))
            .item(null())
            .description(Some("Functions the model may call (chat only)."))
            .into()
    }

    /// `tool_choice`: `none`, `auto`, `required`, or one named function.
    pub fn tool_choice() -> Schema {
        let named = object()
            .property("type", constant("function"))
            .required("type")
            .property(
                "function",
                object().property("name", string()).required("name"),
            )
            .required("function");
        AnyOfBuilder::new()
            .item(string().enum_values(Some(["none", "auto", "required"])))
            .item(named)
            .item(null())
            .into()
    }

    /// `object` of a chat or completions response or chunk.
    pub fn response_object() -> Object {
        string()
            .enum_values(Some([
                "chat.completion",
                "chat.completion.chunk",
                "text_completion",
            ]))
            .build()
    }

    /// `logit_bias`: token ids (as strings) to a bias in [-100, 100].
    pub fn logit_bias() -> Schema {
        let bias = ObjectBuilder::new()
            .schema_type(Type::Number)
            .minimum(Some(-100))
            .maximum(Some(100));
        let map = object()
            .additional_properties(Some(bias))
            .property_names(Some(string().pattern(Some(r"^\+?[0-9]+$"))));
        AnyOfBuilder::new()
            .item(map)
            .item(null())
            .description(Some(
                "Token ids (as strings) to a bias added to their logits.",
            ))
            .into()
    }

    /// `encoding_format` of embeddings.
    pub fn encoding_format() -> Schema {
        AnyOfBuilder::new()
            .item(string().enum_values(Some(["float", "base64"])))
            .item(null())
            .description(Some(
                "`float` (the default) or `base64` (little-endian f32).",
            ))
            .into()
    }

    /// `object` of a list.
    pub fn list_object() -> Object {
        constant("list")
    }

    /// `object` of a model.
    pub fn model_object() -> Object {
        constant("model")
    }

    /// `object` of one embedding.
    pub fn embedding_object() -> Object {
        constant("embedding")
    }

    /// `type` of a tool call.
    pub fn function_kind() -> Object {
        constant("function")
    }

    /// `role` of a reply.
    pub fn assistant_role() -> Object {
        constant("assistant")
    }
}
