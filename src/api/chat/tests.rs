//! [`ChatStream`] from hand-written engine events: chunk sequences, stop strings split across
//! tokens, tool calls, interleaved choices, failures, usage, and stream == non-stream.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;
use crate::api::stream::testing::tokenizer as tok;
use crate::api::stream::Events;
use crate::api::validate::{Reply, TextRules};
use crate::engine;

fn meta(reply: Reply, prompt_tokens: usize) -> Meta {
    stream::testing::meta("chatcmpl-1", "chat.completion.chunk", reply, prompt_tokens)
}

fn streamed(include_usage: bool) -> Reply {
    Reply {
        stream: true,
        include_usage,
        logprobs: false,
        ..Reply::default()
    }
}

/// The token events of `text` for choice `index`, one per byte-level token.
fn tokens(index: usize, text: &str) -> Vec<Event> {
    tok()
        .encode(text, false)
        .expect("encodes")
        .into_iter()
        .map(|id| Event::Token {
            index,
            token: Token {
                id,
                logprob: Some(-0.5),
                top: Vec::new(),
            },
        })
        .collect()
}

fn finished(index: usize, reason: engine::FinishReason, completion: usize) -> Event {
    stream::testing::finished(index, reason, completion, 1)
}

/// Every chunk of `events` on a fresh machine, as JSON.
fn run(mut m: ChatStream, events: Vec<Event>) -> Vec<Value> {
    let mut chunks = m.start();
    for ev in events {
        chunks.extend(m.on(0, ev).expect("no failure"));
    }
    assert!(m.is_finished());
    chunks.extend(m.end());
    chunks
        .iter()
        .map(|c| serde_json::to_value(c).expect("serializes"))
        .collect()
}

fn content(chunks: &[Value], index: usize) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

fn rules(stops: &[&str], tools: Option<&[&str]>) -> TextRules {
    TextRules {
        stops: stops.iter().map(|s| s.to_string()).collect(),
        tool_names: tools.map(|t| t.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn chunks_run_role_content_finish_usage() {
    let m = ChatStream::new(meta(streamed(true), 3), 1, &rules(&[], None));
    let mut events = tokens(0, "hi");
    events.push(finished(0, engine::FinishReason::Length, 2));
    let chunks = run(m, events);
    assert_eq!(chunks.len(), 5, "{chunks:#?}");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["id"], "chatcmpl-1");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "h");
    assert!(chunks[1]["choices"][0]["finish_reason"].is_null());
    assert!(
        chunks[1]["choices"][0]["logprobs"].is_null(),
        "not asked for"
    );
    assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    assert!(chunks[3]["usage"].is_null());
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 5);
    assert_eq!(
        chunks[4]["usage"]["prompt_tokens_details"]["cached_tokens"],
        1
    );
}

#[test]
fn no_usage_chunk_unless_asked_and_logprobs_ride_on_each_token() {
    let reply = Reply {
        logprobs: true,
        ..streamed(false)
    };
    let m = ChatStream::new(meta(reply, 3), 1, &rules(&[], None));
    let mut events = tokens(0, "ab");
    events.push(finished(0, engine::FinishReason::Stop, 3));
    let chunks = run(m, events);
    assert!(chunks.iter().all(|c| c["usage"].is_null()), "{chunks:#?}");
    let lp = &chunks[1]["choices"][0]["logprobs"]["content"];
    assert_eq!(lp[0]["token"], "a");
    assert_eq!(lp[0]["logprob"], -0.5);
    assert_eq!(lp[0]["bytes"], json!([97]));
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "stop"
    );
}

#[test]
fn a_stop_string_split_across_tokens_is_cut_and_ends_the_choice() {
    let m = ChatStream::new(meta(streamed(true), 3), 1, &rules(&["STOP"], None));
    // The engine would go on; the machine ends the choice at the stop string.
    let mut events = tokens(0, "one ST");
    events.extend(tokens(0, "OP two"));
    let mut m2 = ChatStream::new(meta(streamed(true), 3), 1, &rules(&["STOP"], None));
    let mut chunks = m2.start();
    for ev in events.iter().take(8).cloned() {
        chunks.extend(m2.on(0, ev).expect("ok"));
    }
    assert!(m2.is_finished(), "finished at the P of STOP");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect();
    assert_eq!(content(&chunks, 0), "one ");
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "stop"
    );
    // Events after the end are ignored.
    let all = run(
        m,
        events
            .into_iter()
            .chain([finished(0, engine::FinishReason::Length, 12)])
            .collect(),
    );
    assert_eq!(content(&all, 0), "one ");
    let usage = &all.last().expect("usage")["usage"];
    assert_eq!(
        usage["completion_tokens"], 8,
        "the tokens up to the stop string"
    );
}

#[test]
fn a_tool_call_streams_as_a_named_head_then_its_arguments_and_finishes_tool_calls() {
    let m = ChatStream::new(
        meta(streamed(false), 3),
        1,
        &rules(&[], Some(&["get_weather"])),
    );
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut events = tokens(0, call);
    events.push(finished(0, engine::FinishReason::Stop, 40));
    let chunks = run(m, events);
    let deltas: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["delta"])
        .filter(|d| d.get("tool_calls").is_some())
        .collect();
    assert_eq!(deltas.len(), 2, "{chunks:#?}");
    let head = &deltas[0]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert_eq!(head["type"], "function");
    assert_eq!(
        head["function"],
        json!({"name": "get_weather", "arguments": ""})
    );
    assert!(head["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("call_")));
    assert_eq!(
        deltas[1]["tool_calls"][0],
        json!({"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}})
    );
    assert_eq!(content(&chunks, 0), "", "the tags never reach the client");
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[test]
fn three_choices_with_interleaved_events_keep_their_own_text() {
    let m = ChatStream::new(meta(streamed(true), 3), 3, &rules(&[], None));
    let per: Vec<Vec<Event>> = ["alpha", "be", "gamma!"]
        .iter()
        .enumerate()
        .map(|(i, t)| tokens(i, t))
        .collect();
    let mut events = Vec::new();
    let longest = per.iter().map(Vec::len).max().unwrap_or(0);
    for j in 0..longest {
        for (i, evs) in per.iter().enumerate().rev() {
            if let Some(e) = evs.get(j) {
                events.push(e.clone());
            }
            if j + 1 == evs.len() {
                events.push(finished(i, engine::FinishReason::Stop, evs.len() + 1));
            }
        }
    }
    let chunks = run(m, events);
    assert_eq!(
        chunks[..3]
            .iter()
            .map(|c| c["choices"][0]["index"].clone())
            .collect::<Vec<_>>(),
        [0, 1, 2],
        "one role chunk per choice first"
    );
    assert_eq!(content(&chunks, 0), "alpha");
    assert_eq!(content(&chunks, 1), "be");
    assert_eq!(content(&chunks, 2), "gamma!");
    let usage = &chunks.last().expect("usage")["usage"];
    assert_eq!(usage["completion_tokens"], 6 + 3 + 7);
    assert_eq!(usage["prompt_tokens"], 3, "the prompt counts once");
}

fn events_of(list: Vec<Event>) -> Events {
    futures_util::stream::iter(list.into_iter().map(|e| (0, e))).boxed()
}

async fn sse_data(resp: Response) -> Vec<String> {
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn an_error_after_the_first_chunk_is_one_error_event_then_the_end() {
    let m = ChatStream::new(meta(streamed(true), 3), 1, &rules(&[], None));
    let mut events = tokens(0, "a");
    events.push(Event::Failed {
        index: 0,
        error: "the forward step failed".into(),
    });
    let data = sse_data(stream::testing::sse_now(m, events_of(events))).await;
    assert_eq!(data.len(), 3, "{data:?}");
    let err: Value = serde_json::from_str(&data[2]).expect("json");
    assert_eq!(err["error"]["message"], "the forward step failed");
    assert_eq!(err["error"]["type"], "server_error");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    // Not streamed: the same failure is the error response.
    let m = ChatStream::new(meta(Reply::default(), 3), 1, &rules(&[], None));
    let mut events = tokens(0, "a");
    events.push(Event::Failed {
        index: 0,
        error: "boom".into(),
    });
    let e = stream::testing::collect_now(m, events_of(events))
        .await
        .expect_err("fails");
    assert_eq!(e.parts().0.as_u16(), 500);
}

#[tokio::test]
async fn a_shutdown_is_never_a_finish_reason_on_the_wire() {
    let m = ChatStream::new(meta(streamed(true), 3), 1, &rules(&[], None));
    let mut events = tokens(0, "a");
    events.push(finished(0, engine::FinishReason::Shutdown, 1));
    let data = sse_data(stream::testing::sse_now(m, events_of(events))).await;
    let last: Value = serde_json::from_str(data.last().expect("data")).expect("json");
    assert_eq!(last["error"]["code"], "shutting_down", "{data:?}");
    assert!(data
        .iter()
        .all(|d| !d.contains("cancelled") && !d.contains("shutdown\"")));
}

#[tokio::test]
async fn the_body_is_the_fold_of_the_stream() {
    let reply = Reply {
        logprobs: true,
        ..streamed(true)
    };
    let text_rules = rules(&["END"], Some(&["f"]));
    let mut events = tokens(
        0,
        "I will call. <tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    );
    events.extend(tokens(1, "plain text END ignored"));
    events.push(finished(0, engine::FinishReason::Stop, 60));
    events.push(finished(1, engine::FinishReason::Length, 30));
    let data = sse_data(stream::testing::sse_now(
        ChatStream::new(meta(reply, 3), 2, &text_rules),
        events_of(events.clone()),
    ))
    .await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    let body_reply = Reply {
        stream: false,
        ..reply
    };
    let body = stream::testing::collect_now(
        ChatStream::new(meta(body_reply, 3), 2, &text_rules),
        events_of(events),
    )
    .await
    .expect("body");
    let body = serde_json::to_value(body).expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-1");
    for i in 0..2 {
        let choice = &body["choices"][i];
        let streamed_text = content(&chunks, i);
        assert_eq!(
            choice["message"]["content"],
            streamed_text.as_str(),
            "choice {i}"
        );
        let finish = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .find(|c| c["index"] == i && !c["finish_reason"].is_null())
            .expect("a finish chunk");
        assert_eq!(choice["finish_reason"], finish["finish_reason"]);
        let streamed_lp: Vec<Value> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["index"] == i)
            .flat_map(|c| {
                c["logprobs"]["content"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(choice["logprobs"]["content"], json!(streamed_lp));
    }
    assert_eq!(body["choices"][0]["message"]["content"], "I will call.");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "f"
    );
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["choices"][1]["message"]["content"], "plain text ");
    assert_eq!(body["choices"][1]["finish_reason"], "stop");
    let usage = &chunks.last().expect("usage")["usage"];
    assert_eq!(body["usage"], *usage);
}

mod legacy;
