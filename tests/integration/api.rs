//! The HTTP API in process on 127.0.0.1:0 with reqwest: every route, every row of the error
//! table, the stream termination sequence, disconnects, and the real model for text.

use std::time::Duration;

use serde_json::{json, Value};
use wick::api::AppState;

use crate::common::{post, real_server_url, sse_data, tiny_config, tiny_served, TestServer};

async fn tiny_server() -> TestServer {
    let state = AppState::new("tiny", 4096);
    state.set_ready(tiny_served(tiny_config()));
    TestServer::start(state).await
}

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    let v: Value = resp.json().await.expect("json error");
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_loading_and_200_when_ready() {
    let state = AppState::new("tiny", 4096);
    let server = TestServer::start(state.clone()).await;
    let r = reqwest::get(format!("{}/health", server.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 503);
    let r = post(
        &format!("{}/v1/completions", server.url),
        json!({"prompt": [1]}),
    )
    .await;
    let v = error_of(r, 503).await;
    assert_eq!(v["error"]["code"], "model_loading");
    state.set_ready(tiny_served(tiny_config()));
    let r = reqwest::get(format!("{}/health", server.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    state.begin_drain();
    let r = reqwest::get(format!("{}/health", server.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 503);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_and_get() {
    let server = tiny_server().await;
    let v: Value = reqwest::get(format!("{}/v1/models", server.url))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["max_model_len"], 512);
    let r = reqwest::get(format!("{}/v1/models/tiny", server.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let r = reqwest::get(format!("{}/v1/models/other", server.url))
        .await
        .expect("get");
    let v = error_of(r, 404).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_error_row_of_the_table() {
    let server = tiny_server().await;
    let url = format!("{}/v1/completions", server.url);
    let client = reqwest::Client::new();
    // Malformed JSON.
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"prompt\": [1,")
        .send()
        .await
        .expect("send");
    error_of(r, 400).await;
    // Wrong type.
    let r = post(&url, json!({"prompt": [1], "max_tokens": "many"})).await;
    error_of(r, 400).await;
    // Out of range.
    let r = post(&url, json!({"prompt": [1], "temperature": 5.0})).await;
    let v = error_of(r, 400).await;
    assert_eq!(v["error"]["param"], "temperature");
    let r = post(&url, json!({"prompt": [1000]})).await;
    error_of(r, 400).await;
    // Context length.
    let r = post(&url, json!({"prompt": vec![1; 500], "max_tokens": 100})).await;
    let v = error_of(r, 400).await;
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["param"], "prompt", "{v}");
    // Unknown model.
    let r = post(&url, json!({"prompt": [1], "model": "gpt-4"})).await;
    let v = error_of(r, 404).await;
    assert_eq!(v["error"]["code"], "model_not_found");
    // Body too large (the limit is 4096 bytes here).
    let r = post(&url, json!({"prompt": vec![1; 3000]})).await;
    error_of(r, 413).await;
    // Unknown fields are ignored.
    let r = post(
        &url,
        json!({"prompt": [1], "max_tokens": 1, "whatever": {"x": 1}}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_with_retry_after() {
    let state = AppState::new("tiny", 4096);
    state.set_ready(tiny_served(wick::engine::EngineConfig {
        max_queue: 0,
        ..tiny_config()
    }));
    let server = TestServer::start(state).await;
    let r = post(
        &format!("{}/v1/completions", server.url),
        json!({"prompt": [1]}),
    )
    .await;
    assert!(r.headers().get("retry-after").is_some());
    let v = error_of(r, 429).await;
    assert_eq!(v["error"]["type"], "rate_limit_error");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_with_token_ids_n_and_request_id() {
    let server = tiny_server().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", server.url))
        .header("x-request-id", "abc123")
        .json(
            &json!({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 3, "n": 2, "temperature": 0,
            "logprobs": 2}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc123");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"].as_array().expect("choices").len(), 4);
    assert_eq!(v["choices"][3]["finish_reason"], "length");
    assert_eq!(
        v["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["usage"]["total_tokens"], 17);
    assert!(v["usage"]["prompt_tokens_details"]["cached_tokens"].is_u64());
    assert!(v["system_fingerprint"].is_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_stream_ends_with_finish_usage_and_done() {
    let server = tiny_server().await;
    let r = post(
        &format!("{}/v1/completions", server.url),
        // ignore_eos: the random model may well sample the byte-level tokenizer's end token.
        json!({"prompt": [1, 2], "max_tokens": 4, "stream": true, "ignore_eos": true,
            "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/event-stream"));
    let data = sse_data(&r.text().await.expect("body"));
    let n = data.len();
    assert_eq!(data[n - 1], "[DONE]");
    let usage: Value = serde_json::from_str(&data[n - 2]).expect("json");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    let fin: Value = serde_json::from_str(&data[n - 3]).expect("json");
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    assert!(fin["usage"].is_null());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_stream_frees_the_engine() {
    let server = tiny_server().await;
    let (sock, seen) = crate::common::long_stream_socket(&server.url).await;
    assert!(seen.starts_with(b"HTTP/1.1 200"));
    drop(sock);
    let engine = server.state.engine().expect("ready").clone();
    let mut freed = false;
    for _ in 0..100 {
        let st = engine.stats();
        if st.running == 0 && st.queue_depth == 0 && st.waiting == 0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        freed,
        "the engine still runs the request: {:?}",
        engine.stats()
    );
    let st = engine.stats();
    // Cancelled, not run to the end: 16 choices x 490 tokens were asked for.
    assert!(st.cancellations >= 1, "{st:?}");
    assert!(st.decode_tokens < 16 * 490, "{st:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_chat_stream_sequence_and_tokenize() {
    let Some(url) = real_server_url() else { return };
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
        "max_tokens": 4, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}});
    let r = post(&format!("{url}/v1/chat/completions"), body).await;
    assert_eq!(r.status().as_u16(), 200);
    let data = sse_data(&r.text().await.expect("body"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("json chunk"))
        .collect();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let n = chunks.len();
    for c in &chunks[1..n - 2] {
        assert!(c["choices"][0]["delta"]["content"].is_string());
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c["usage"].is_null());
    }
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert!(chunks[n - 2]["choices"][0]["finish_reason"].is_string());
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert!(chunks[n - 1]["usage"]["prompt_tokens"].as_u64().expect("n") > 0);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");

    let v: Value = post(&format!("{url}/tokenize"), json!({"prompt": "Hello world"}))
        .await
        .json()
        .await
        .expect("json");
    let ids = v["tokens"].clone();
    assert!(v["count"].as_u64().expect("count") >= 2);
    let v: Value = post(&format!("{url}/detokenize"), json!({"tokens": ids}))
        .await
        .json()
        .await
        .expect("json");
    assert!(v["prompt"].as_str().expect("text").ends_with("Hello world"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_streamed_cjk_equals_the_non_streamed_text() {
    let Some(url) = real_server_url() else { return };
    let req = |stream: bool| {
        json!({"messages": [{"role": "user", "content": "用中文说你好 🙂"}], "max_tokens": 8,
            "temperature": 0, "stream": stream, "logprobs": true, "top_logprobs": 2})
    };
    let v: Value = post(&format!("{url}/v1/chat/completions"), req(false))
        .await
        .json()
        .await
        .expect("json");
    let whole = v["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert_eq!(v["object"], "chat.completion");
    let lp = &v["choices"][0]["logprobs"]["content"];
    assert!(
        lp[0]["top_logprobs"].as_array().map(Vec::len) == Some(2),
        "{v}"
    );
    assert!(lp[0]["bytes"].is_array());
    let r = post(&format!("{url}/v1/chat/completions"), req(true)).await;
    let data = sse_data(&r.text().await.expect("body"));
    let mut streamed = String::new();
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).expect("json");
        if let Some(s) = c["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(s);
        }
    }
    assert_eq!(streamed, whole);
    // Only a character cut by max_tokens may be lossy, at the very end.
    let body = whole.trim_end_matches('\u{fffd}');
    assert!(!body.contains('\u{fffd}'), "{whole:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_stop_string_truncates_and_finishes_with_stop() {
    let Some(url) = real_server_url() else { return };
    let req = |stop: Value| {
        json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
            "stop": stop})
    };
    let v: Value = post(&format!("{url}/v1/completions"), req(Value::Null))
        .await
        .json()
        .await
        .expect("json");
    let whole = v["choices"][0]["text"].as_str().expect("text").to_string();
    // A stop string from the middle of the greedy text (likely spanning tokens).
    let chars: Vec<char> = whole.chars().collect();
    assert!(chars.len() >= 6, "{whole:?}");
    let stop: String = chars[3..6].iter().collect();
    let before = &whole[..whole.find(&stop).expect("in text")];
    for stream in [false, true] {
        let mut body = req(json!([stop, "never-there"]));
        body["stream"] = json!(stream);
        let r = post(&format!("{url}/v1/completions"), body).await;
        let (text, reason) = if stream {
            let data = sse_data(&r.text().await.expect("body"));
            let mut text = String::new();
            let mut reason = Value::Null;
            for d in &data[..data.len() - 1] {
                let c: Value = serde_json::from_str(d).expect("json");
                text.push_str(c["choices"][0]["text"].as_str().unwrap_or(""));
                if !c["choices"][0]["finish_reason"].is_null() {
                    reason = c["choices"][0]["finish_reason"].clone();
                }
            }
            (text, reason)
        } else {
            let v: Value = r.json().await.expect("json");
            assert!(v["usage"]["completion_tokens"].as_u64().expect("n") < 8);
            let c = &v["choices"][0];
            (
                c["text"].as_str().expect("text").to_string(),
                c["finish_reason"].clone(),
            )
        };
        assert_eq!(text, before, "stream: {stream}");
        assert_eq!(reason, "stop", "stream: {stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_ignore_eos_generates_exactly_max_tokens() {
    let Some(url) = real_server_url() else { return };
    let req = |ignore: bool| {
        json!({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 48,
            "temperature": 0, "ignore_eos": ignore})
    };
    let chat = format!("{url}/v1/chat/completions");
    let v: Value = post(&chat, req(false)).await.json().await.expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().expect("n") < 48,
        "{v}"
    );
    let v: Value = post(&chat, req(true)).await.json().await.expect("json");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 48, "{v}");
}
