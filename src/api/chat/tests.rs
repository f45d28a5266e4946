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
        ..TextRules::default()
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

/// The `tool_calls` deltas of `chunks`, each checked against OpenAI's shape: a call's first
/// delta has `index`, `id`, `type`, the name and arguments `""`, later ones `index` and
/// arguments only. Returns `(id, name, arguments)` per call and the number of deltas.
fn call_deltas(chunks: &[Value]) -> (Vec<(String, String, String)>, usize) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut n = 0;
    for c in chunks {
        for d in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            n += 1;
            let k = d["index"].as_u64().expect("index") as usize;
            if k == calls.len() {
                assert_eq!(d["type"], "function", "{d}");
                assert_eq!(d["function"]["arguments"], "", "{d}");
                let id = d["id"].as_str().expect("id");
                assert!(id.starts_with("call_"), "{d}");
                let name = d["function"]["name"].as_str().expect("name");
                calls.push((id.into(), name.into(), String::new()));
            } else {
                let keys: Vec<&String> = d.as_object().expect("object").keys().collect();
                assert_eq!(keys, ["index", "function"], "{d}");
                assert_eq!(d["function"].as_object().map(|f| f.len()), Some(1), "{d}");
                calls[k]
                    .2
                    .push_str(d["function"]["arguments"].as_str().expect("args"));
            }
        }
    }
    (calls, n)
}

/// Issue 16.4: a call went out whole, as two deltas, when it had ended.
#[test]
fn a_tool_calls_arguments_stream_as_deltas_and_it_finishes_tool_calls() {
    let m = ChatStream::new(
        meta(streamed(false), 3),
        1,
        &rules(&[], Some(&["get_weather"])),
    );
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut events = tokens(0, &format!("{call}\n{call}"));
    events.push(finished(0, engine::FinishReason::Stop, 80));
    let chunks = run(m, events);
    let (calls, deltas) = call_deltas(&chunks);
    assert_eq!(calls.len(), 2, "{chunks:#?}");
    assert_ne!(calls[0].0, calls[1].0, "ids differ");
    for (_, name, args) in &calls {
        assert_eq!(
            (name.as_str(), args.as_str()),
            ("get_weather", r#"{"city":"Paris"}"#)
        );
    }
    assert!(deltas > 10, "arguments come token by token: {deltas}");
    assert_eq!(content(&chunks, 0), "", "the tags never reach the client");
    assert_eq!(
        chunks.last().expect("chunks")["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

/// Issue 16.3: a call cut by max_tokens came back as raw `<tool_call>` content.
#[tokio::test]
async fn a_call_cut_by_length_is_a_tool_call_with_length_in_both_forms() {
    let text_rules = rules(&[], Some(&["f"]));
    let mut events = tokens(
        0,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"b c",
    );
    events.push(finished(0, engine::FinishReason::Length, 20));
    let chunks = run(
        ChatStream::new(meta(streamed(false), 3), 1, &text_rules),
        events.clone(),
    );
    let (calls, _) = call_deltas(&chunks);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].2, r#"{"a":"b c"#);
    assert_eq!(content(&chunks, 0), "");
    let body_reply = Reply {
        stream: false,
        ..streamed(false)
    };
    let body = stream::testing::collect_now(
        ChatStream::new(meta(body_reply, 3), 1, &text_rules),
        events_of(events),
    )
    .await
    .expect("body");
    let choice = serde_json::to_value(&body.choices[0]).expect("json");
    assert_eq!(choice["finish_reason"], "length");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "f");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"a":"b c"#
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
