//! What a client may put into a conversation, checked and given its stored form: metadata
//! (OpenAI's limits: 16 pairs, keys up to 64 characters, string values up to 512) and items
//! (`message` with a role and text content, `function_call`, `function_call_output`), each
//! given a new id, `status: "completed"` and its content as parts. Pure functions, each error
//! a 400 naming the field (`items[2].content[0].text`). The create path may use them too.

use serde_json::{json, Map, Value};

use crate::api::error::ApiError;
use crate::store::new_id;

/// Most metadata pairs, and their key and value lengths in characters.
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY: usize = 64;
pub const MAX_METADATA_VALUE: usize = 512;

/// Most items one request adds (OpenAI's limit).
pub const MAX_ITEMS_PER_ADD: usize = 20;

/// `metadata` checked: absent or null is `{}`; else an object of at most 16 string pairs
/// within the lengths.
pub fn metadata(v: Option<&Value>, param: &str) -> Result<Value, ApiError> {
    let map = match v {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param} must be an object of string values"),
                Some(param),
            ))
        }
    };
    if map.len() > MAX_METADATA_PAIRS {
        return Err(ApiError::invalid(
            format!(
                "{param} has {} pairs; at most {MAX_METADATA_PAIRS}",
                map.len()
            ),
            Some(param),
        ));
    }
    for (k, v) in map {
        let field = format!("{param}.{k}");
        if k.chars().count() > MAX_METADATA_KEY {
            return Err(ApiError::invalid(
                format!("{param}: the key {k:?} is over {MAX_METADATA_KEY} characters"),
                Some(param),
            ));
        }
        let Some(s) = v.as_str() else {
            return Err(ApiError::invalid(
                format!("{field} must be a string"),
                Some(&field),
            ));
        };
        if s.chars().count() > MAX_METADATA_VALUE {
            return Err(ApiError::invalid(
                format!("{field} is over {MAX_METADATA_VALUE} characters"),
                Some(&field),
            ));
        }
    }
    Ok(Value::Object(map.clone()))
}

/// `items` (the field `param`) checked and in their stored form; `None` or null is none.
pub fn items(v: Option<&Value>, param: &str) -> Result<Vec<Value>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::invalid(
                format!("{param} must be an array of items"),
                Some(param),
            ))
        }
    };
    if list.len() > MAX_ITEMS_PER_ADD {
        return Err(ApiError::invalid(
            format!(
                "{param} has {} items; at most {MAX_ITEMS_PER_ADD} can be added at a time",
                list.len()
            ),
            Some(param),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, item)| normalize(item, &format!("{param}[{i}]")))
        .collect()
}

/// One item in its stored form, with a new id.
pub fn normalize(item: &Value, param: &str) -> Result<Value, ApiError> {
    let Some(obj) = item.as_object() else {
        return Err(ApiError::invalid(
            format!("{param} must be an object"),
            Some(param),
        ));
    };
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // An "easy" message: `{role, content}` without a type.
        None if obj.contains_key("role") => "message",
        _ => {
            return Err(ApiError::invalid(
                format!(
                    "{param}.type must be a string: message, function_call or \
                 function_call_output"
                ),
                Some(&format!("{param}.type")),
            ))
        }
    };
    match kind {
        "message" => message(obj, param),
        "function_call" => Ok(json!({
            "id": new_id("fc_"),
            "type": "function_call",
            "call_id": string(obj, "call_id", param)?,
            "name": string(obj, "name", param)?,
            "arguments": string(obj, "arguments", param)?,
            "status": "completed",
        })),
        "function_call_output" => Ok(json!({
            "id": new_id("fco_"),
            "type": "function_call_output",
            "call_id": string(obj, "call_id", param)?,
            "output": output(obj.get("output"), &format!("{param}.output"))?,
            "status": "completed",
        })),
        other => Err(ApiError::invalid(
            format!(
                "{param}: items of type {other:?} are not supported here; wick stores message, \
                 function_call and function_call_output items"
            ),
            Some(param),
        )),
    }
}

/// A message: a known role, content as a string or text parts.
fn message(obj: &Map<String, Value>, param: &str) -> Result<Value, ApiError> {
    let role = string(obj, "role", param)?;
    if !matches!(role.as_str(), "user" | "assistant" | "system" | "developer") {
        return Err(ApiError::invalid(
            format!("{param}.role must be user, assistant, system or developer, got {role:?}"),
            Some(&format!("{param}.role")),
        ));
    }
    // What a model said is output text; everything else is input text.
    let part_type = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    let field = format!("{param}.content");
    let content = match obj.get("content") {
        Some(Value::String(s)) => vec![text_part(part_type, s)],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part(p, &format!("{field}[{j}]")))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                format!("{field} must be a string or an array of text parts"),
                Some(&field),
            ))
        }
    };
    Ok(json!({
        "id": new_id("msg_"),
        "type": "message",
        "role": role,
        "content": content,
        "status": "completed",
    }))
}

fn text_part(kind: &str, text: &str) -> Value {
    if kind == "output_text" {
        json!({"type": kind, "text": text, "annotations": []})
    } else {
        json!({"type": kind, "text": text})
    }
}

/// One content part: `input_text` or `output_text` (a model's earlier answer), with its text.
fn part(p: &Value, param: &str) -> Result<Value, ApiError> {
    let kind = p["type"].as_str().unwrap_or_default();
    if !matches!(kind, "input_text" | "output_text") {
        return Err(ApiError::invalid(
            format!("{param}: parts of type {kind:?} are not supported; wick serves text only (input_text, output_text)"),
            Some(param),
        ));
    }
    let Some(text) = p["text"].as_str() else {
        return Err(ApiError::invalid(
            format!("{param}.text must be a string"),
            Some(&format!("{param}.text")),
        ));
    };
    Ok(text_part(kind, text))
}

/// A function call's output: a string, or text parts.
fn output(v: Option<&Value>, param: &str) -> Result<Value, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let field = format!("{param}[{j}]");
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("input_text"), Some(t)) => Ok(json!({"type": "input_text", "text": t})),
                    _ => Err(ApiError::invalid(
                        format!("{field} must be an input_text part with its text"),
                        Some(&field),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Err(ApiError::invalid(
            format!("{param} must be a string or an array of input_text parts"),
            Some(param),
        )),
    }
}

/// The string field `name` of an item.
fn string(obj: &Map<String, Value>, name: &str, param: &str) -> Result<String, ApiError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => {
            let field = format!("{param}.{name}");
            Err(ApiError::invalid(
                format!("{field} must be a string"),
                Some(&field),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(e: ApiError) -> String {
        e.body()["error"]["param"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    #[test]
    fn metadata_limits_are_openais() {
        assert_eq!(metadata(None, "metadata").unwrap(), json!({}));
        let ok = json!({"a": "x".repeat(512), "k".repeat(64): "v"});
        assert_eq!(metadata(Some(&ok), "metadata").unwrap(), ok);
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        for (bad, param) in [
            (Value::Object(many), "metadata"),
            (json!({"k".repeat(65): "v"}), "metadata"),
            (json!({"a": "x".repeat(513)}), "metadata.a"),
            (json!({"a": 1}), "metadata.a"),
            (json!(["a"]), "metadata"),
        ] {
            let e = metadata(Some(&bad), "metadata").unwrap_err();
            assert_eq!(param_of(e), param);
        }
    }

    #[test]
    fn items_get_ids_parts_and_a_status() {
        let got = items(
            Some(&json!([
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ])),
            "items",
        )
        .unwrap();
        assert!(got[0]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(
            got[0]["content"],
            json!([{"type": "input_text", "text": "hi"}])
        );
        assert_eq!(got[1]["content"][0]["annotations"], json!([]));
        assert!(got[2]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(
            (got[3]["output"].as_str(), got[3]["status"].as_str()),
            (Some("42"), Some("completed"))
        );
    }

    #[test]
    fn each_bad_item_is_named() {
        for (bad, param) in [
            (json!([{"type": "web_search_call"}]), "items[0]"),
            (json!([{"role": "user", "content": "a"}, 7]), "items[1]"),
            (json!([{"role": "robot", "content": "a"}]), "items[0].role"),
            (json!([{"role": "user"}]), "items[0].content"),
            (
                json!([{"role": "user", "content": [{"type": "input_image"}]}]),
                "items[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "input_text"}]}]),
                "items[0].content[0].text",
            ),
            (
                json!([{"type": "function_call", "name": "f", "arguments": "{}"}]),
                "items[0].call_id",
            ),
            (
                json!([{"type": "function_call_output", "call_id": "c", "output": 3}]),
                "items[0].output",
            ),
            (json!({"role": "user"}), "items"),
            (
                Value::Array(vec![json!({"role": "user", "content": "a"}); 21]),
                "items",
            ),
        ] {
            let e = items(Some(&bad), "items").unwrap_err();
            assert_eq!(e.parts().0.as_u16(), 400);
            assert_eq!(param_of(e), param, "{bad}");
        }
    }
}
