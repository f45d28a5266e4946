//! The input side: items normalized and rendered as chat messages, the flat tools rewritten,
//! tools wick does not run skipped or refused, metadata limits, truncation's dropping.

use serde_json::json;

use super::input::*;
use super::*;
use crate::api::openai::MessageContent;

fn ids(p: &str) -> String {
    format!("{p}1")
}

fn text(m: &crate::api::openai::ChatMessage) -> &str {
    match &m.content {
        Some(MessageContent::Text(t)) => t,
        _ => "",
    }
}

#[test]
fn a_string_input_is_one_user_message_with_an_id() {
    let items = input_items(Some(&json!("Hi")), &ids).expect("valid");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], "msg_1");
    assert_eq!(items[0]["role"], "user");
    assert_eq!(
        items[0]["content"][0],
        json!({"type": "input_text", "text": "Hi"})
    );
}

#[test]
fn developer_and_system_texts_merge_to_the_front_after_the_instructions() {
    let input = json!([
        {"role": "user", "content": "q1"},
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "be kind"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "a1"}]},
    ]);
    let items = input_items(Some(&input), &ids).expect("valid");
    let msgs = messages(Some("You are wick."), &items);
    let roles: Vec<&str> = msgs.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(text(&msgs[0]), "You are wick.\n\nbe brief\n\nbe kind");
    assert_eq!(text(&msgs[2]), "a1");
}

#[test]
fn function_calls_and_outputs_become_tool_calls_and_tool_messages() {
    let input = json!([
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "call_a", "name": "get", "arguments": "{\"c\":\"x\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "get", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
    ]);
    let items = input_items(Some(&input), &ids).expect("valid");
    assert_eq!(items[1]["id"], "fc_1");
    let msgs = messages(None, &items);
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[1].role, "assistant");
    let calls = msgs[1].extra["tool_calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "consecutive calls are one assistant turn");
    assert_eq!(calls[0]["id"], "call_a");
    assert_eq!(calls[0]["function"]["arguments"], "{\"c\":\"x\"}");
    assert_eq!(msgs[2].role, "tool");
    assert_eq!(msgs[2].extra["tool_call_id"], "call_a");
    assert_eq!(text(&msgs[2]), "sunny");
}

#[test]
fn bad_items_are_400s_naming_the_item() {
    let cases = [
        (json!([{"role": "robot", "content": "x"}]), "input[0].role"),
        (json!([{"role": "user"}]), "input[0].content"),
        (json!(["x"]), "input[0]"),
        (
            json!([{"role": "user", "content": "a"}, {"type": "function_call", "name": "f", "arguments": "{}"}]),
            "input[1].call_id",
        ),
        (
            json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
            "input[0].content[0]",
        ),
        (json!([{"type": "web_search_call"}]), "input[0].type"),
        (json!(7), "input"),
    ];
    for (input, param) in cases {
        let e = input_items(Some(&input), &ids).expect_err("refused");
        assert_eq!(e.param(), param, "{input}");
    }
}

#[test]
fn an_item_reference_resolves_from_the_history_or_is_a_400() {
    let history = vec![json!({"type": "message", "id": "msg_old", "role": "user", "content": []})];
    let items = input_items(
        Some(&json!([{"type": "item_reference", "id": "msg_old"}])),
        &ids,
    )
    .expect("valid");
    let resolved = resolve_references(items, &history).expect("found");
    assert_eq!(resolved[0]["role"], "user");
    let items = input_items(
        Some(&json!([{"type": "item_reference", "id": "msg_none"}])),
        &ids,
    )
    .expect("valid");
    assert_eq!(
        resolve_references(items, &history)
            .expect_err("unknown")
            .param(),
        "input"
    );
}

#[test]
fn flat_function_tools_become_chat_tools_and_others_are_skipped_under_auto() {
    let tools = json!([
        {"type": "web_search"},
        {"type": "function", "name": "get", "description": "d", "parameters": {"type": "object"}, "strict": true},
    ]);
    let (chat, choice) = chat_tools(Some(&tools), Some(&json!("auto"))).expect("valid");
    let chat = chat.expect("one function");
    assert_eq!(chat.as_array().map(Vec::len), Some(1));
    assert_eq!(chat[0]["type"], "function");
    assert_eq!(chat[0]["function"]["name"], "get");
    assert_eq!(chat[0]["function"]["parameters"], json!({"type": "object"}));
    assert_eq!(choice, Some(json!("auto")));
    let (_, named) = chat_tools(
        Some(&tools),
        Some(&json!({"type": "function", "name": "get"})),
    )
    .expect("valid");
    assert_eq!(
        named,
        Some(json!({"type": "function", "function": {"name": "get"}}))
    );
}

#[test]
fn a_tool_wick_does_not_run_is_refused_when_the_request_forces_it() {
    let tools = json!([{"type": "function", "name": "f"}, {"type": "file_search"}]);
    let e = chat_tools(Some(&tools), Some(&json!({"type": "file_search"}))).expect_err("forced");
    assert_eq!(e.param(), "tools[1]");
    let only = json!([{"type": "code_interpreter"}]);
    let e = chat_tools(Some(&only), Some(&json!("required"))).expect_err("nothing to call");
    assert_eq!(e.param(), "tools[0]");
    assert!(
        chat_tools(Some(&tools), Some(&json!("required"))).is_ok(),
        "f can be called"
    );
}

#[test]
fn text_format_json_schema_becomes_the_chat_response_format() {
    let text = json!({"format": {"type": "json_schema", "name": "p", "schema": {"type": "object"}, "strict": true}});
    let rf = response_format(Some(&text))
        .expect("valid")
        .expect("a format");
    assert_eq!(
        rf,
        json!({"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}})
    );
    assert_eq!(
        response_format(Some(&json!({"format": {"type": "text"}}))).expect("valid"),
        Some(json!({"type": "text"}))
    );
    assert_eq!(
        response_format(Some(&json!({"format": {"type": "json_schema"}})))
            .expect_err("no schema")
            .param(),
        "text.format.schema"
    );
}

#[test]
fn metadata_is_held_to_openais_limits() {
    assert!(check_metadata(Some(&json!({"a": "b"}))).is_ok());
    let many: serde_json::Map<_, _> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        check_metadata(Some(&Json::Object(many)))
            .expect_err("17")
            .param(),
        "metadata"
    );
    let long_key = "k".repeat(65);
    assert_eq!(
        check_metadata(Some(&json!({long_key.clone(): "v"})))
            .expect_err("key")
            .param(),
        format!("metadata.{long_key}")
    );
    assert_eq!(
        check_metadata(Some(&json!({"k": "v".repeat(513)})))
            .expect_err("value")
            .param(),
        "metadata.k"
    );
    assert_eq!(
        check_metadata(Some(&json!({"k": 1})))
            .expect_err("not a string")
            .param(),
        "metadata.k"
    );
}

#[test]
fn chat_errors_get_the_responses_field_names() {
    let e = renamed(ValidationError::invalid("bad", "tools[0].function.name"));
    assert_eq!(e.param(), "tools[0].name");
    assert_eq!(
        renamed(ValidationError::invalid("x", "response_format")).param(),
        "text.format"
    );
    assert_eq!(
        renamed(ValidationError::invalid("x", "messages")).param(),
        "input"
    );
    assert_eq!(
        renamed(ValidationError::invalid("x", "max_completion_tokens")).param(),
        "max_output_tokens"
    );
}

#[test]
fn truncation_drops_the_oldest_items_but_keeps_system_ones() {
    let mut items = vec![
        json!({"type": "message", "role": "developer", "content": []}),
        json!({"type": "message", "role": "user", "content": []}),
        json!({"type": "function_call_output", "call_id": "c", "output": "o"}),
        json!({"type": "message", "role": "user", "content": [], "id": "last"}),
    ];
    assert!(drop_oldest(&mut items));
    assert_eq!(
        items.len(),
        2,
        "the orphaned output goes with its turn: {items:?}"
    );
    assert_eq!(items[0]["role"], "developer");
    assert_eq!(items[1]["id"], "last");
    assert!(!drop_oldest(&mut items), "the last item is never dropped");
}
