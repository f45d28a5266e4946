//! [`CompletionStream`] from hand-written engine events: echo (with and without scores),
//! legacy logprobs and their offsets, several prompts with `n` choices each, stop strings,
//! score-only requests, failures, usage, and stream == non-stream.

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;
use crate::api::stream::testing::tokenizer as tok;
use crate::api::validate::Reply;
use crate::engine::{self, TokenLogprob};

fn meta(reply: Reply, prompt_tokens: usize) -> Meta {
    stream::testing::meta("cmpl-1", "text_completion", reply, prompt_tokens)
}

fn ids(text: &str) -> Vec<u32> {
    tok().encode(text, false).expect("encodes")
}

fn token(id: u32) -> Token {
    Token {
        id,
        logprob: Some(-1.0),
        top: vec![TokenLogprob { id, logprob: -1.0 }],
    }
}

fn tokens(index: usize, text: &str) -> Vec<Event> {
    ids(text)
        .into_iter()
        .map(|id| Event::Token {
            index,
            token: token(id),
        })
        .collect()
}

fn finished(index: usize, reason: engine::FinishReason, completion: usize) -> Event {
    stream::testing::finished(index, reason, completion, 0)
}

fn no_rules() -> TextRules {
    TextRules::default()
}

/// Every chunk for `(source, event)`s on `m`, as JSON.
fn run(mut m: CompletionStream, events: Vec<(usize, Event)>) -> Vec<Value> {
    let mut chunks = m.start();
    for (src, ev) in events {
        chunks.extend(m.on(src, ev).expect("no failure"));
    }
    assert!(m.is_finished());
    chunks.extend(m.end());
    chunks
        .iter()
        .map(|c| serde_json::to_value(c).expect("json"))
        .collect()
}

fn text(chunks: &[Value], index: usize) -> String {
    chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect()
}

fn streamed() -> Reply {
    Reply {
        stream: true,
        include_usage: true,
        logprobs: false,
        ..Reply::default()
    }
}

#[test]
fn two_prompts_with_two_choices_each_number_their_choices_prompt_major() {
    let m = CompletionStream::new(meta(streamed(), 4), 2, &no_rules(), vec![None, None]);
    let mut events = Vec::new();
    for (src, words) in [(1, ["c", "d"]), (0, ["a", "b"])] {
        for (i, w) in words.iter().enumerate() {
            events.extend(tokens(i, w).into_iter().map(|e| (src, e)));
            events.push((src, finished(i, engine::FinishReason::Length, 1)));
        }
    }
    let chunks = run(m, events);
    assert_eq!(
        (0..4).map(|i| text(&chunks, i)).collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let usage = &chunks.last().expect("usage")["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].clone(),
            usage["completion_tokens"].clone()
        ),
        (json!(4), json!(4))
    );
}

#[test]
fn echo_comes_first_and_with_logprobs_waits_for_the_prompt_scores() {
    let m = CompletionStream::new(meta(streamed(), 2), 1, &no_rules(), vec![Some("Hi".into())]);
    let mut events: Vec<(usize, Event)> = tokens(0, "!").into_iter().map(|e| (0, e)).collect();
    events.push((0, finished(0, engine::FinishReason::Stop, 2)));
    let chunks = run(m, events);
    assert_eq!(chunks[0]["choices"][0]["text"], "Hi", "echoed at the start");
    assert_eq!(text(&chunks, 0), "Hi!");

    let reply = Reply {
        logprobs: true,
        ..streamed()
    };
    let mut m = CompletionStream::new(meta(reply, 2), 1, &no_rules(), vec![Some("Hi".into())]);
    assert!(m.start().is_empty(), "the echo waits for its scores");
    let mut scores: Vec<Token> = ids("Hi").into_iter().map(token).collect();
    scores[0].logprob = None;
    let mut events = vec![(0, Event::PromptScores { tokens: scores })];
    events.extend(tokens(0, "!").into_iter().map(|e| (0, e)));
    events.push((0, finished(0, engine::FinishReason::Length, 1)));
    let chunks = run(m, events);
    let echo = &chunks[0]["choices"][0];
    assert_eq!(echo["text"], "Hi");
    assert_eq!(echo["logprobs"]["tokens"], json!(["H", "i"]));
    assert_eq!(echo["logprobs"]["token_logprobs"], json!([null, -1.0]));
    assert_eq!(echo["logprobs"]["top_logprobs"], json!([null, {"i": -1.0}]));
    assert_eq!(echo["logprobs"]["text_offset"], json!([0, 1]));
    let next = &chunks[1]["choices"][0];
    assert_eq!(next["text"], "!");
    assert_eq!(
        next["logprobs"]["text_offset"],
        json!([2]),
        "offsets run on past the echo"
    );
}

#[tokio::test]
async fn a_score_only_request_sends_the_scored_echo_and_a_length_finish() {
    let reply = Reply {
        logprobs: true,
        ..Reply::default()
    };
    let m = CompletionStream::new(meta(reply, 2), 1, &no_rules(), vec![Some("ab".into())]);
    let mut scores: Vec<Token> = ids("ab").into_iter().map(token).collect();
    scores[0].logprob = None;
    let events = vec![
        (0, Event::PromptScores { tokens: scores }),
        (0, finished(0, engine::FinishReason::Length, 0)),
    ];
    let body = stream::testing::collect_now(m, futures_util::stream::iter(events).boxed())
        .await
        .expect("body");
    let body = serde_json::to_value(body).expect("json");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "ab");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        body["choices"][0]["logprobs"]["token_logprobs"],
        json!([null, -1.0])
    );
    assert_eq!(body["usage"]["completion_tokens"], 0);
}

#[test]
fn a_stop_string_split_across_tokens_ends_that_choice_only() {
    let rules = TextRules {
        stops: vec!["\n\n".into()],
        ..TextRules::default()
    };
    let m = CompletionStream::new(meta(streamed(), 2), 2, &rules, vec![None]);
    let mut events: Vec<(usize, Event)> = Vec::new();
    events.extend(tokens(0, "x\n").into_iter().map(|e| (0, e)));
    events.extend(tokens(1, "y\n").into_iter().map(|e| (0, e)));
    events.extend(tokens(0, "\nz").into_iter().map(|e| (0, e)));
    events.extend(tokens(1, "w").into_iter().map(|e| (0, e)));
    events.push((0, finished(1, engine::FinishReason::Length, 3)));
    events.push((0, finished(0, engine::FinishReason::Length, 4)));
    let chunks = run(m, events);
    assert_eq!(text(&chunks, 0), "x");
    assert_eq!(
        text(&chunks, 1),
        "y\nw",
        "a held newline comes back when no stop follows"
    );
    let reasons: Vec<Value> = chunks
        .iter()
        .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| !c["finish_reason"].is_null())
        .map(|c| json!([c["index"], c["finish_reason"]]))
        .collect();
    assert_eq!(reasons, [json!([0, "stop"]), json!([1, "length"])]);
}

#[tokio::test]
async fn the_body_is_the_fold_of_the_stream_and_failures_are_errors() {
    let reply = Reply {
        logprobs: true,
        ..streamed()
    };
    let mut scores: Vec<Token> = ids("Q:").into_iter().map(token).collect();
    scores[0].logprob = None;
    let mut events = vec![(0, Event::PromptScores { tokens: scores })];
    events.extend(tokens(0, " yes").into_iter().map(|e| (0, e)));
    events.push((0, finished(0, engine::FinishReason::Stop, 5)));
    let events_of = |list: Vec<(usize, Event)>| futures_util::stream::iter(list).boxed();
    let m = |reply| CompletionStream::new(meta(reply, 2), 1, &no_rules(), vec![Some("Q:".into())]);
    let resp = stream::testing::sse_now(m(reply), events_of(events.clone()));
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    let text_body = String::from_utf8(body.to_vec()).expect("utf-8");
    let data: Vec<&str> = text_body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    let body_reply = Reply {
        stream: false,
        ..reply
    };
    let body = stream::testing::collect_now(m(body_reply), events_of(events))
        .await
        .expect("body");
    let body = serde_json::to_value(body).expect("json");
    let choice = &body["choices"][0];
    assert_eq!(choice["text"], text(&chunks, 0).as_str());
    assert_eq!(choice["text"], "Q: yes");
    for list in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        let streamed: Vec<Value> = chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().cloned().unwrap_or_default())
            .flat_map(|c| c["logprobs"][list].as_array().cloned().unwrap_or_default())
            .collect();
        assert_eq!(choice["logprobs"][list], json!(streamed), "{list}");
    }
    assert_eq!(choice["logprobs"]["text_offset"], json!([0, 1, 2, 3, 4, 5]));
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"], chunks.last().expect("usage")["usage"]);

    let failing = vec![
        (0, tokens(0, "a").remove(0)),
        (
            0,
            Event::Failed {
                index: 0,
                error: "boom".into(),
            },
        ),
    ];
    let e = stream::testing::collect_now(m(body_reply), events_of(failing))
        .await
        .expect_err("fails");
    assert_eq!(e.parts().0.as_u16(), 500);
}
