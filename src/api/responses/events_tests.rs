//! [`ResponsesStream`] from hand-written engine events: the event order for text, a tool
//! call, the output limit (`response.incomplete`) and a failure after `response.created`, run
//! through the same driver (`stream::chunks`) the server uses.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;
use crate::api::stream::testing::{finished, recorder, tokenizer};
use crate::api::stream::{self, Deadline, Events};
use crate::engine::{self, Token};

fn base() -> ResponseObject {
    ResponseObject {
        id: "resp_1".into(),
        object: "response",
        created_at: 7,
        status: Status::InProgress,
        background: false,
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: None,
        max_output_tokens: None,
        metadata: json!({}),
        model: "m".into(),
        output: Vec::new(),
        parallel_tool_calls: true,
        previous_response_id: None,
        conversation: None,
        store: true,
        temperature: 1.0,
        text: json!({"format": {"type": "text"}}),
        tool_choice: json!("auto"),
        tools: Vec::new(),
        top_logprobs: 0,
        top_p: 1.0,
        truncation: "disabled".into(),
        usage: None,
        user: None,
    }
}

fn machine(tools: Option<Vec<String>>, logprobs: bool) -> ResponsesStream {
    ResponsesStream::new(StreamSetup {
        base: base(),
        tokenizer: tokenizer(),
        rules: TextRules {
            stops: Vec::new(),
            tool_names: tools,
            ..TextRules::default()
        },
        logprobs,
        generate: true,
        prompt_tokens: 3,
        new_id: |p| format!("{p}x"),
    })
}

fn tokens(text: &str) -> Vec<Event> {
    tokenizer()
        .encode(text, false)
        .expect("encodes")
        .into_iter()
        .map(|id| Event::Token {
            index: 0,
            token: Token {
                id,
                logprob: Some(-0.5),
                top: Vec::new(),
            },
        })
        .collect()
}

/// The machine's events over `events` through the server's driver, as JSON.
async fn run(m: ResponsesStream, events: Vec<Event>) -> Vec<Value> {
    let events: Events = futures_util::stream::iter(events.into_iter().map(|e| (0, e))).boxed();
    stream::chunks(m, events, Deadline::default(), recorder())
        .map(|r| serde_json::to_value(r.expect("the machine ends failures itself")).expect("json"))
        .collect()
        .await
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("a type"))
        .collect()
}

fn assert_numbered(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    let ids: Vec<&Value> = events
        .iter()
        .filter_map(|e| e.get("response"))
        .map(|r| &r["id"])
        .collect();
    assert!(
        ids.iter().all(|id| *id == "resp_1"),
        "one id throughout: {ids:?}"
    );
}

#[tokio::test]
async fn text_goes_out_in_openais_event_order_and_the_deltas_make_the_final_text() {
    let mut events = tokens("Hello!");
    events.push(finished(0, engine::FinishReason::Stop, 6, 2));
    let out = run(machine(None, true), events).await;
    assert_numbered(&out);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 6]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(types(&out), expected);
    let deltas: String = out
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().expect("delta"))
        .collect();
    let done = out.last().expect("a terminal event");
    assert_eq!(deltas, "Hello!");
    let r = &done["response"];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["id"], "msg_x");
    assert_eq!(r["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(r["output"][0]["content"][0]["annotations"], json!([]));
    assert_eq!(
        r["output"][0]["content"][0]["logprobs"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    assert_eq!(r["usage"]["input_tokens"], 3);
    assert_eq!(r["usage"]["output_tokens"], 6);
    assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 0);
    assert!(r["completed_at"].is_u64());
    assert_eq!(out[0]["response"]["status"], "in_progress");
    assert_eq!(out[0]["response"]["output"], json!([]));
}

/// The event types with runs of argument deltas folded into one `...delta+`, and the deltas.
fn fold_deltas(out: &[Value]) -> (Vec<&str>, String) {
    let mut kinds: Vec<&str> = Vec::new();
    let mut args = String::new();
    for e in out {
        let t = e["type"].as_str().expect("a type");
        if t == "response.function_call_arguments.delta" {
            args.push_str(e["delta"].as_str().expect("delta"));
            assert_eq!(e["item_id"], "fc_x", "{e}");
            if kinds.last() == Some(&"response.function_call_arguments.delta+") {
                continue;
            }
            kinds.push("response.function_call_arguments.delta+");
        } else {
            kinds.push(t);
        }
    }
    (kinds, args)
}

/// Issue 16.4: the arguments went out as one delta when the call had ended.
#[tokio::test]
async fn a_tool_call_is_a_function_call_item_whose_arguments_stream() {
    let text = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1, \"s\": \"</tool_call>\"}}\n</tool_call>";
    let mut events = tokens(text);
    events.push(finished(0, engine::FinishReason::Stop, 40, 0));
    let out = run(machine(Some(vec!["f".into()]), false), events).await;
    assert_numbered(&out);
    let (kinds, args) = fold_deltas(&out);
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta+",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    let deltas = types(&out)
        .iter()
        .filter(|t| **t == "response.function_call_arguments.delta")
        .count();
    assert!(deltas > 5, "one delta per token's piece, got {deltas}");
    let want = r#"{"x":1,"s":"</tool_call>"}"#;
    assert_eq!(args, want);
    assert_eq!(out[2]["item"]["type"], "function_call");
    assert_eq!(out[2]["item"]["status"], "in_progress");
    assert_eq!(out[2]["item"]["id"], "fc_x");
    assert_eq!(out[2]["item"]["arguments"], "");
    let done = &out[out.len() - 3];
    assert_eq!(done["arguments"], want);
    assert_eq!(done["name"], "f");
    let item = &out.last().expect("terminal")["response"]["output"][0];
    assert_eq!(item["name"], "f");
    assert_eq!(item["arguments"], want);
    assert_eq!(item["status"], "completed");
    assert_eq!(item["call_id"], out[2]["item"]["call_id"], "one call id");
    assert!(item["call_id"]
        .as_str()
        .is_some_and(|c| c.starts_with("call_")));
}

/// Issue 16.3: a call cut by the output limit came back as raw `<tool_call>` text.
#[tokio::test]
async fn a_call_cut_by_the_output_limit_is_an_incomplete_function_call() {
    let mut events = tokens("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": [1, ");
    events.push(finished(0, engine::FinishReason::Length, 30, 0));
    let out = run(machine(Some(vec!["f".into()]), false), events).await;
    assert_numbered(&out);
    let (kinds, args) = fold_deltas(&out);
    assert_eq!(args, r#"{"x":[1,"#);
    assert_eq!(
        kinds[kinds.len() - 3..],
        [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.incomplete"
        ]
    );
    let r = &out.last().expect("terminal")["response"];
    assert_eq!(
        r["output"].as_array().map(Vec::len),
        Some(1),
        "no message: {r}"
    );
    assert_eq!(r["output"][0]["type"], "function_call");
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["output"][0]["arguments"], r#"{"x":[1,"#);
}

#[tokio::test]
async fn the_output_limit_ends_in_response_incomplete() {
    let mut events = tokens("abc");
    events.push(finished(0, engine::FinishReason::Length, 3, 0));
    let out = run(machine(None, false), events).await;
    assert_numbered(&out);
    let last = out.last().expect("terminal");
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["output"][0]["status"], "incomplete");
    assert_eq!(
        types(&out)
            .iter()
            .filter(|t| t.starts_with("response.completed"))
            .count(),
        0
    );
}

#[tokio::test]
async fn an_engine_failure_after_created_is_one_response_failed() {
    let mut events = tokens("ab");
    events.push(Event::Failed {
        index: 0,
        error: "forward failed".into(),
    });
    events.extend(tokens("never seen"));
    let out = run(machine(None, false), events).await;
    assert_numbered(&out);
    assert_eq!(out[0]["type"], "response.created");
    let last = out.last().expect("terminal");
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(last["response"]["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("forward failed")));
    let terminals = out.iter().filter(|e| {
        matches!(
            e["type"].as_str(),
            Some("response.completed" | "response.incomplete" | "response.failed")
        )
    });
    assert_eq!(terminals.count(), 1);
}

#[tokio::test]
async fn an_engine_that_stops_without_finishing_is_a_failure_too() {
    let out = run(machine(None, false), tokens("ab")).await;
    assert_eq!(
        out.last().map(|e| e["type"].clone()),
        Some(json!("response.failed"))
    );
}

#[tokio::test]
async fn text_then_a_call_closes_the_message_before_the_call() {
    let text = "Sure.<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>";
    let mut events = tokens(text);
    events.push(finished(0, engine::FinishReason::Stop, 40, 0));
    let out = run(machine(Some(vec!["f".into()]), false), events).await;
    let r = &out.last().expect("terminal")["response"];
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["text"], "Sure.");
    assert_eq!(r["output"][1]["type"], "function_call");
    let done: Vec<u64> = out
        .iter()
        .filter(|e| e["type"] == "response.output_item.done")
        .map(|e| e["output_index"].as_u64().expect("index"))
        .collect();
    assert_eq!(done, [0, 1]);
}
