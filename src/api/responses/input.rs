//! A create request's input -> what the chat validator takes: the input items checked and
//! normalized (each with its `id`, as the store keeps them and `input_items` lists them), the
//! conversation's items (history + this input) rendered as chat messages, and the flat
//! Responses tools, `tool_choice` and `text.format` rewritten in their chat shapes, so that a
//! response goes through the same template, tool and grammar code as a chat completion
//! (`Validator::chat`). Pure functions, run on the blocking thread that validates.
//!
//! Tool types wick does not run (`web_search`, `file_search`, `computer_use_preview`,
//! `code_interpreter`, `mcp`, `custom`, `local_shell`, ...) are left out of the prompt when the
//! request lets the model do without them (`tool_choice` `auto` or `none`, or `required` with a
//! function tool left), as Codex sends them beside its functions; a request that forces one
//! (`tool_choice` naming it, or `required` with no function tool) is a 400 naming `tools[i]`.

use serde_json::{json, Map, Value as Json};

use super::types::CreateResponse;
use crate::api::openai::{ChatCompletionRequest, ChatMessage, CommonParams, MessageContent};
use crate::api::validate::messages::system_first;
use crate::api::validate::ValidationError;

fn bad(message: impl Into<String>, param: impl Into<String>) -> ValidationError {
    ValidationError::invalid(message, param)
}

/// This turn's `input` as normalized items: a string is one user message. `item_reference`s
/// are kept (resolved against the history by [`resolve_references`]); `reasoning` items are
/// dropped (they carry nothing this server's models read).
pub fn input_items(
    input: Option<&Json>,
    new_id: &dyn Fn(&str) -> String,
) -> Result<Vec<Json>, ValidationError> {
    match input {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::String(s)) => Ok(vec![message_item(
            new_id("msg_"),
            "user",
            vec![text_part("user", s)],
        )]),
        Some(Json::Array(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if let Some(item) = normalize(item, &format!("input[{i}]"), new_id)? {
                    out.push(item);
                }
            }
            Ok(out)
        }
        Some(other) => Err(bad(
            format!("input must be a string or a list of items, got {other}"),
            "input",
        )),
    }
}

fn text_part(role: &str, text: &str) -> Json {
    match role {
        "assistant" => json!({"type": "output_text", "text": text, "annotations": []}),
        _ => json!({"type": "input_text", "text": text}),
    }
}

fn message_item(id: String, role: &str, content: Vec<Json>) -> Json {
    json!({"type": "message", "id": id, "role": role, "content": content, "status": "completed"})
}

fn str_field<'a>(item: &'a Json, field: &str, param: &str) -> Result<&'a str, ValidationError> {
    item.get(field).and_then(Json::as_str).ok_or_else(|| {
        bad(
            format!("{param}.{field} is required (a string)"),
            format!("{param}.{field}"),
        )
    })
}

fn given_id(item: &Json, new_id: &dyn Fn(&str) -> String, prefix: &str) -> String {
    match item.get("id").and_then(Json::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => new_id(prefix),
    }
}

/// One input item checked and normalized; `None` for an item that is dropped.
fn normalize(
    item: &Json,
    param: &str,
    new_id: &dyn Fn(&str) -> String,
) -> Result<Option<Json>, ValidationError> {
    if !item.is_object() {
        return Err(bad(format!("{param} must be an object"), param));
    }
    match item.get("type").and_then(Json::as_str).unwrap_or("message") {
        "message" => {
            let role = str_field(item, "role", param)?;
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(bad(
                    format!("{param}.role must be user, assistant, system or developer, got {role:?}"),
                    format!("{param}.role"),
                ));
            }
            let content = content_parts(item.get("content"), role, &format!("{param}.content"))?;
            Ok(Some(message_item(given_id(item, new_id, "msg_"), role, content)))
        }
        "function_call" => {
            let call_id = str_field(item, "call_id", param)?;
            let name = str_field(item, "name", param)?;
            let arguments = str_field(item, "arguments", param)?;
            Ok(Some(json!({
                "type": "function_call", "id": given_id(item, new_id, "fc_"), "call_id": call_id,
                "name": name, "arguments": arguments, "status": "completed",
            })))
        }
        "function_call_output" => {
            let call_id = str_field(item, "call_id", param)?;
            let output = match item.get("output") {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Array(parts)) => parts_text(parts),
                _ => return Err(bad(format!("{param}.output is required (a string)"), format!("{param}.output"))),
            };
            Ok(Some(json!({
                "type": "function_call_output", "id": given_id(item, new_id, "fco_"),
                "call_id": call_id, "output": output, "status": "completed",
            })))
        }
        "item_reference" => {
            let id = str_field(item, "id", param)?;
            Ok(Some(json!({"type": "item_reference", "id": id})))
        }
        "reasoning" => Ok(None),
        other => Err(bad(
            format!("{param}.type {other:?} is not supported: wick takes message, function_call, function_call_output and item_reference items"),
            format!("{param}.type"),
        )),
    }
}

/// A message's content as normalized parts (`input_text`, or `output_text` for an assistant).
fn content_parts(
    content: Option<&Json>,
    role: &str,
    param: &str,
) -> Result<Vec<Json>, ValidationError> {
    match content {
        Some(Json::String(s)) => Ok(vec![text_part(role, s)]),
        Some(Json::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let kind = p.get("type").and_then(Json::as_str).unwrap_or("");
                match (kind, p.get("text").and_then(Json::as_str)) {
                    ("input_text" | "output_text" | "text", Some(t)) => Ok(text_part(role, t)),
                    ("refusal", _) => Ok(text_part(role, p.get("refusal").and_then(Json::as_str).unwrap_or(""))),
                    _ => Err(bad(
                        format!("{param}[{j}]: only input_text and output_text parts are supported, got type {kind:?}"),
                        format!("{param}[{j}]"),
                    )),
                }
            })
            .collect(),
        _ => Err(bad(format!("{param} is required (a string or a list of parts)"), param)),
    }
}

fn parts_text(parts: &[Json]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Json::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `item_reference`s replaced by the items they name, looked up in `history` and in this
/// turn's earlier items. An unknown id is a 400 naming `input`.
pub fn resolve_references(
    items: Vec<Json>,
    history: &[Json],
) -> Result<Vec<Json>, ValidationError> {
    let mut out: Vec<Json> = Vec::with_capacity(items.len());
    for item in items {
        if item.get("type").and_then(Json::as_str) != Some("item_reference") {
            out.push(item);
            continue;
        }
        let id = item.get("id").and_then(Json::as_str).unwrap_or("");
        let found = history
            .iter()
            .chain(out.iter())
            .find(|h| h.get("id").and_then(Json::as_str) == Some(id))
            .cloned();
        match found {
            Some(f) => out.push(f),
            None => {
                return Err(bad(
                    format!("item_reference: no item with id {id:?} in this conversation"),
                    "input",
                ))
            }
        }
    }
    Ok(out)
}

/// The chat messages of `instructions` and `items` (oldest first): system and developer
/// texts merged into one system message at the front (instructions first); function calls
/// as the assistant's `tool_calls`, their outputs as `tool` messages.
pub fn messages(instructions: Option<&str>, items: &[Json]) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = instructions
        .filter(|s| !s.is_empty())
        .map(|s| chat_message("system", Some(s.to_string()), Map::new()))
        .into_iter()
        .collect();
    for item in items {
        let text = |field: &str| {
            item.get(field)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        match item.get("type").and_then(Json::as_str).unwrap_or("message") {
            "message" => {
                let role = text("role");
                let body = item
                    .get("content")
                    .and_then(Json::as_array)
                    .map(|p| parts_text(p))
                    .unwrap_or_default();
                out.push(chat_message(&role, Some(body), Map::new()));
            }
            "function_call" => {
                let call = json!({
                    "id": text("call_id"), "type": "function",
                    "function": {"name": text("name"), "arguments": text("arguments")},
                });
                push_call(&mut out, call);
            }
            "function_call_output" => {
                let mut extra = Map::new();
                extra.insert("tool_call_id".into(), text("call_id").into());
                out.push(chat_message("tool", Some(text("output")), extra));
            }
            _ => {}
        }
    }
    system_first(out)
}

fn chat_message(role: &str, content: Option<String>, extra: Map<String, Json>) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: content.map(MessageContent::Text),
        extra,
    }
}

/// A call joins the assistant message right before it (its text, or earlier calls), or
/// starts one with no text.
fn push_call(out: &mut Vec<ChatMessage>, call: Json) {
    if let Some(last) = out.last_mut().filter(|m| m.role == "assistant") {
        if let Some(Json::Array(calls)) = last.extra.get_mut("tool_calls") {
            calls.push(call);
            return;
        }
        last.extra
            .insert("tool_calls".into(), Json::Array(vec![call]));
        return;
    }
    let mut extra = Map::new();
    extra.insert("tool_calls".into(), Json::Array(vec![call]));
    out.push(chat_message("assistant", None, extra));
}

/// The flat Responses tools and `tool_choice` in chat's shapes; tools wick does not run are
/// skipped or refused (see the module doc).
pub fn chat_tools(
    tools: Option<&Json>,
    choice: Option<&Json>,
) -> Result<(Option<Json>, Option<Json>), ValidationError> {
    let items = match tools {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items.clone(),
        Some(other) => return Err(bad(format!("tools must be a list, got {other}"), "tools")),
    };
    let forced_kind = match choice {
        Some(Json::Object(o)) => o
            .get("type")
            .and_then(Json::as_str)
            .filter(|t| *t != "function"),
        _ => None,
    };
    let mut functions = Vec::new();
    let mut skipped = None;
    for (i, t) in items.iter().enumerate() {
        let kind = t.get("type").and_then(Json::as_str).unwrap_or("");
        if kind == "function" {
            let mut f = t.as_object().cloned().unwrap_or_default();
            f.remove("type");
            functions.push(json!({"type": "function", "function": f}));
            continue;
        }
        if forced_kind == Some(kind) {
            return Err(bad(
                format!(
                    "tools[{i}]: wick does not run {kind:?} tools, and tool_choice asks for one"
                ),
                format!("tools[{i}]"),
            ));
        }
        skipped.get_or_insert((i, kind.to_string()));
    }
    if let Some(kind) = forced_kind {
        return Err(bad(
            format!("tool_choice asks for a {kind:?} tool, which wick does not run"),
            "tool_choice",
        ));
    }
    let required = choice.and_then(Json::as_str) == Some("required");
    if let (true, true, Some((i, kind))) = (required, functions.is_empty(), &skipped) {
        return Err(bad(
            format!("tools[{i}]: wick does not run {kind:?} tools, and tool_choice \"required\" leaves no function to call"),
            format!("tools[{i}]"),
        ));
    }
    let choice = match choice {
        Some(Json::Object(o)) => match o.get("name") {
            Some(name) => Some(json!({"type": "function", "function": {"name": name}})),
            None => {
                return Err(bad(
                    "tool_choice must be {\"type\": \"function\", \"name\": ...}",
                    "tool_choice",
                ))
            }
        },
        other => other.cloned(),
    };
    Ok((
        (!functions.is_empty()).then_some(Json::Array(functions)),
        choice,
    ))
}

/// `text.format` as chat's `response_format`.
pub fn response_format(text: Option<&Json>) -> Result<Option<Json>, ValidationError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Json::as_str) {
        Some("json_schema") => {
            let schema = format.get("schema").cloned().ok_or_else(|| {
                bad(
                    "text.format.schema is required for type json_schema",
                    "text.format.schema",
                )
            })?;
            let name = format.get("name").cloned().unwrap_or(Json::Null);
            Ok(Some(
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}}),
            ))
        }
        Some(_) => Ok(Some(format.clone())),
        None => Err(bad("text.format.type is required", "text.format.type")),
    }
}

/// `metadata`: at most 16 pairs, keys up to 64 characters, string values up to 512.
pub fn check_metadata(m: Option<&Json>) -> Result<(), ValidationError> {
    let obj = match m {
        None | Some(Json::Null) => return Ok(()),
        Some(Json::Object(obj)) => obj,
        Some(_) => {
            return Err(bad(
                "metadata must be an object of string pairs",
                "metadata",
            ))
        }
    };
    if obj.len() > 16 {
        return Err(bad(
            format!("metadata has {} pairs; at most 16 are allowed", obj.len()),
            "metadata",
        ));
    }
    for (k, v) in obj {
        let Some(v) = v.as_str() else {
            return Err(bad(
                format!("metadata.{k} must be a string"),
                format!("metadata.{k}"),
            ));
        };
        if k.chars().count() > 64 || v.chars().count() > 512 {
            return Err(bad(
                format!("metadata.{k}: keys may have up to 64 characters and values up to 512"),
                format!("metadata.{k}"),
            ));
        }
    }
    Ok(())
}

/// The chat request the response is validated as.
pub fn chat_request(
    req: &CreateResponse,
    messages: Vec<ChatMessage>,
) -> Result<ChatCompletionRequest, ValidationError> {
    let (tools, tool_choice) = chat_tools(req.tools.as_ref(), req.tool_choice.as_ref())?;
    let logprobs = req
        .include
        .iter()
        .flatten()
        .any(|i| i == "message.output_text.logprobs");
    Ok(ChatCompletionRequest {
        messages,
        max_completion_tokens: req.max_output_tokens,
        logprobs: Some(logprobs),
        top_logprobs: req.top_logprobs,
        response_format: response_format(req.text.as_ref())?,
        tools,
        tool_choice,
        functions: None,
        function_call: None,
        parallel_tool_calls: req.parallel_tool_calls,
        common: CommonParams {
            model: req.model.clone(),
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
            stream: Some(false),
            user: req.user.clone(),
            ..CommonParams::default()
        },
    })
}

/// A chat validation error with the Responses field names (`input`, `tools[i].name`,
/// `text.format`, `max_output_tokens`).
pub fn renamed(e: ValidationError) -> ValidationError {
    let rename = |p: &str| -> String {
        let p = p.replace(".function.", ".");
        if p == "messages" {
            "input".into()
        } else if let Some(rest) = p.strip_prefix("response_format") {
            format!("text.format{rest}")
        } else if p == "max_completion_tokens" {
            "max_output_tokens".into()
        } else {
            p
        }
    };
    match e {
        ValidationError::Invalid { message, param } => ValidationError::Invalid {
            message: message
                .replace("response_format", "text.format")
                .replace("max_completion_tokens", "max_output_tokens"),
            param: rename(&param),
        },
        ValidationError::ContextLength { message, .. } => ValidationError::ContextLength {
            message,
            param: "input",
        },
        other => other,
    }
}
