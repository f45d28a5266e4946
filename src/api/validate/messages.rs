//! Chat messages as the template reads them, for `/v1/chat/completions`, `/v1/responses` and
//! `POST /tokenize` alike: roles checked (an unknown one is a 400 naming `messages[i].role`),
//! content checked to be text (this server's models take text only), system and `developer`
//! texts merged into one system message at the front ([`system_first`], which the Responses
//! input also goes through), and OpenAI's legacy function calling (`functions`,
//! `function_call`, `role: "function"`) rewritten as tools and tool messages. Pure functions,
//! run in validation on `spawn_blocking`.

use serde_json::{json, Map, Value as Json};

use super::ValidationError;
use crate::api::openai::{ChatCompletionRequest, ChatMessage, MessageContent};

/// The roles a chat message may have.
const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Content part types of other modalities, refused with "takes text only".
const MEDIA_PARTS: [&str; 5] = [
    "image_url",
    "input_image",
    "input_audio",
    "file",
    "input_file",
];

fn bad(message: impl Into<String>, param: impl Into<String>) -> ValidationError {
    ValidationError::invalid(message, param)
}

/// Checks each message's role and content parts, naming `messages[i].role` or
/// `messages[i].content[j]`.
pub fn check(messages: &[ChatMessage]) -> Result<(), ValidationError> {
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(bad(
                format!(
                    "messages[{i}].role must be one of {}, got {:?}",
                    ROLES.join(", "),
                    m.role
                ),
                format!("messages[{i}].role"),
            ));
        }
        let Some(MessageContent::Parts(parts)) = &m.content else {
            continue;
        };
        for (j, p) in parts.iter().enumerate() {
            let param = format!("messages[{i}].content[{j}]");
            let kind = p.kind.as_str();
            if kind == "text" && p.text.is_some() {
                continue;
            }
            let message = match kind {
                "text" => format!("{param}: a text part needs `text` (a string)"),
                k if MEDIA_PARTS.contains(&k) => format!(
                    "{param}: this model takes text only, got a {k:?} part; send `text` parts"
                ),
                k => format!("{param}: only `text` parts are supported, got type {k:?}"),
            };
            return Err(bad(message, param));
        }
    }
    Ok(())
}

/// The text of a message's content (text parts joined by newlines).
pub fn text_of(content: Option<&MessageContent>) -> Option<String> {
    match content? {
        MessageContent::Text(s) => Some(s.clone()),
        MessageContent::Parts(parts) => Some(
            parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// System and `developer` messages merged, in order, into one system message at the front
/// (texts joined by a blank line; the first one's other fields kept): small models' templates
/// render a system turn only first, and `developer` is OpenAI's newer name for it.
pub fn system_first(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let (system, mut rest): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .partition(|m| matches!(m.role.as_str(), "system" | "developer"));
    let mut system = system.into_iter();
    let Some(first) = system.next() else {
        return rest;
    };
    let mut texts: Vec<String> = vec![text_of(first.content.as_ref()).unwrap_or_default()];
    texts.extend(system.map(|m| text_of(m.content.as_ref()).unwrap_or_default()));
    texts.retain(|t| !t.is_empty());
    let merged = ChatMessage {
        role: "system".into(),
        content: Some(MessageContent::Text(texts.join("\n\n"))),
        extra: first.extra,
    };
    rest.insert(0, merged);
    rest
}

/// The id given to the `k`-th legacy `function_call` of a history, and to the `function`
/// message answering it.
fn legacy_call_id(k: usize) -> String {
    format!("call_legacy_{k}")
}

/// Legacy function messages as tool messages: an assistant's `function_call` becomes its one
/// `tool_calls` entry, a `function` message the `tool` message answering the latest such call.
/// Messages are flattened (content a string or null); a null content with no calls becomes
/// `""`, which templates can concatenate.
pub fn legacy_history(messages: &mut [Json]) {
    let mut calls = 0;
    for m in messages.iter_mut() {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        match obj.get("role").and_then(Json::as_str) {
            Some("assistant") => {
                if let Some(call) = obj.remove("function_call").filter(Json::is_object) {
                    calls += 1;
                    let call = json!({"id": legacy_call_id(calls), "type": "function",
                        "function": call});
                    obj.entry("tool_calls").or_insert_with(|| json!([call]));
                }
            }
            Some("function") => {
                obj.insert("role".into(), "tool".into());
                obj.insert("tool_call_id".into(), legacy_call_id(calls.max(1)).into());
            }
            _ => {}
        }
        if obj.get("content").is_none_or(Json::is_null) && !obj.contains_key("tool_calls") {
            obj.insert("content".into(), "".into());
        }
    }
}

/// A request's legacy `functions` / `function_call` as `tools` / `tool_choice`; `true` when
/// the request used them (its reply then carries `function_call`, not `tool_calls`). Both
/// `functions` and `tools` given is a 400 naming `functions`.
pub fn legacy_functions(req: &mut ChatCompletionRequest) -> Result<bool, ValidationError> {
    let functions = req.functions.take().filter(|f| !f.is_null());
    let choice = req.function_call.take().filter(|c| !c.is_null());
    let Some(functions) = functions else {
        return match choice {
            Some(_) => Err(bad(
                "function_call requires functions: send the functions in `functions`",
                "function_call",
            )),
            None => Ok(false),
        };
    };
    if req.tools.as_ref().is_some_and(|t| !t.is_null()) {
        return Err(bad(
            "give `tools` or the legacy `functions`, not both",
            "functions",
        ));
    }
    let Json::Array(list) = functions else {
        return Err(bad(
            format!("functions must be a list of functions, got {functions}"),
            "functions",
        ));
    };
    let tools = list
        .into_iter()
        .map(|f| json!({"type": "function", "function": f}))
        .collect();
    req.tools = Some(Json::Array(tools));
    // The legacy reply holds one call: the choice ends where its first call ends.
    req.parallel_tool_calls = Some(false);
    req.tool_choice = match choice {
        None => None,
        Some(Json::String(s)) if s == "none" || s == "auto" => Some(Json::String(s)),
        Some(Json::Object(o)) if o.get("name").is_some_and(Json::is_string) => {
            Some(json!({"type": "function", "function": {"name": o["name"]}}))
        }
        Some(other) => {
            return Err(bad(
                format!(
                    "function_call must be \"none\", \"auto\" or {{\"name\": ...}}, got {other}"
                ),
                "function_call",
            ))
        }
    };
    Ok(true)
}

/// An error about the `tools` / `tool_choice` a legacy request was read as, naming the fields
/// the client sent (`functions[i]...`, `function_call`).
pub fn legacy_param(e: ValidationError) -> ValidationError {
    let ValidationError::Invalid { message, param } = e else {
        return e;
    };
    let tools_rest = param
        .strip_prefix("tools")
        .map(|r| r.replacen(".function", "", 1));
    let param = match tools_rest {
        _ if param == "tool_choice" => "function_call".to_string(),
        Some(rest) => format!("functions{rest}"),
        None => param,
    };
    ValidationError::Invalid { message, param }
}

/// A message with text content and no other field.
pub fn text_message(role: &str, text: String) -> ChatMessage {
    ChatMessage {
        role: role.to_string(),
        content: Some(MessageContent::Text(text)),
        extra: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(v: Json) -> Vec<ChatMessage> {
        serde_json::from_value(v).expect("messages")
    }

    #[test]
    fn an_unknown_role_and_a_media_part_are_named() {
        let e = check(&msgs(json!([{"role": "user", "content": "a"},
            {"role": "wizard", "content": "b"}])))
        .expect_err("400");
        assert_eq!(e.param(), "messages[1].role");
        let e = check(&msgs(json!([{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])))
        .expect_err("400");
        assert_eq!(e.param(), "messages[0].content[1]");
        assert!(e.to_string().contains("text only"), "{e}");
        assert!(check(&msgs(json!([{"role": "developer", "content": "x"},
            {"role": "function", "name": "f", "content": "1"}])))
        .is_ok());
    }

    #[test]
    fn system_and_developer_texts_merge_at_the_front() {
        let out = system_first(msgs(json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": [{"type": "text", "text": "be kind"}]},
        ])));
        let roles: Vec<&str> = out.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert_eq!(
            text_of(out[0].content.as_ref()).as_deref(),
            Some("be brief\n\nbe kind")
        );
        assert_eq!(
            system_first(msgs(json!([{"role": "user", "content": "x"}]))).len(),
            1
        );
    }

    #[test]
    fn legacy_functions_become_tools_and_their_choice() {
        let mut req: ChatCompletionRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": "x"}],
            "functions": [{"name": "f", "parameters": {"type": "object"}}],
            "function_call": {"name": "f"}}))
        .expect("request");
        assert!(legacy_functions(&mut req).expect("valid"));
        assert_eq!(
            req.tools.as_ref().expect("tools")[0]["function"]["name"],
            "f"
        );
        assert_eq!(
            req.tool_choice.as_ref().expect("choice")["function"]["name"],
            "f"
        );
        let mut both = req.clone();
        both.functions = Some(json!([{"name": "g"}]));
        assert_eq!(
            legacy_functions(&mut both).expect_err("400").param(),
            "functions"
        );
        let mut bad_choice = req.clone();
        bad_choice.tools = None;
        bad_choice.functions = Some(json!([{"name": "g"}]));
        bad_choice.function_call = Some(json!("required"));
        let e = legacy_functions(&mut bad_choice).expect_err("400");
        assert_eq!(e.param(), "function_call");
    }

    #[test]
    fn errors_about_the_tools_name_the_legacy_fields() {
        let named = |p: &str| legacy_param(bad("x", p)).param().to_string();
        assert_eq!(named("tool_choice"), "function_call");
        assert_eq!(
            named("tools[1].function.parameters"),
            "functions[1].parameters"
        );
        assert_eq!(named("tools"), "functions");
        assert_eq!(named("messages"), "messages");
    }

    #[test]
    fn function_messages_answer_the_legacy_call_before_them() {
        let mut history = vec![
            json!({"role": "assistant", "content": null,
                "function_call": {"name": "f", "arguments": "{\"a\": 1}"}}),
            json!({"role": "function", "name": "f", "content": "42"}),
        ];
        legacy_history(&mut history);
        assert_eq!(history[0]["tool_calls"][0]["id"], "call_legacy_1");
        assert_eq!(history[0]["tool_calls"][0]["function"]["name"], "f");
        assert!(history[0].get("function_call").is_none());
        assert_eq!(history[1]["role"], "tool");
        assert_eq!(history[1]["tool_call_id"], "call_legacy_1");
    }
}
