//! Server limits over HTTP: `--request-timeout` (streamed and not, the engine freed), CORS
//! (`--cors-allow-origin`), and `--max-tokens-cap`.

use std::time::Duration;

use candle_core::Device;
use serde_json::{json, Value};
use wick::api::{AppState, HttpOptions};

use crate::common::{post, sse_data, tiny_config, tiny_served, TestServer};

/// The tiny model at >= 20 ms a step, behind a server with `options`.
async fn slow_server(options: HttpOptions) -> TestServer {
    let state = AppState::with_options("tiny", options);
    state.set_ready(crate::common::slow_served(Duration::from_millis(20)));
    TestServer::start(state).await
}

async fn wait_idle(state: &AppState) {
    let engine = state.engine().expect("ready").clone();
    for _ in 0..200 {
        let st = engine.stats();
        if st.running == 0 && st.waiting == 0 && st.kv_blocks_used == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the engine still holds the request: {:?}", engine.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_ends_with_an_error_and_frees_the_engine() {
    let server = slow_server(HttpOptions {
        request_timeout: Some(Duration::from_millis(600)),
        ..HttpOptions::default()
    })
    .await;
    let url = format!("{}/v1/completions", server.url);
    // 400 steps of >= 20 ms: far past the limit.
    let body = json!({"prompt": [1, 2, 3], "max_tokens": 400, "ignore_eos": true});
    let r = post(&url, body.clone()).await;
    assert_eq!(r.status().as_u16(), 504);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "timeout");
    wait_idle(&server.state).await;
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let r = post(&url, streamed).await;
    assert_eq!(r.status().as_u16(), 200);
    let data = sse_data(&r.text().await.expect("body"));
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "timeout", "{data:?}");
    assert!(
        data.len() > 2,
        "some tokens came before the limit: {data:?}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"));
    wait_idle(&server.state).await;
    // A short request under the same limit is served whole.
    let r = post(&url, json!({"prompt": [1, 2, 3], "max_tokens": 3})).await;
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_preflights_for_the_allowed_origins_only() {
    let state = AppState::with_options(
        "tiny",
        HttpOptions {
            cors_allow_origins: vec!["http://app.example".into()],
            ..HttpOptions::default()
        },
    );
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.url);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight("http://app.example").await.expect("preflight");
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "http://app.example");
    let allowed = h["access-control-allow-headers"].to_str().expect("ascii");
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let r = preflight("http://other.example").await.expect("preflight");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = client
        .post(&url)
        .header("origin", "http://app.example")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    server.stop().await;
    // Not configured: no CORS headers at all.
    let state = AppState::new("tiny", 1 << 20);
    state.set_ready(tiny_served(tiny_config()));
    let server = TestServer::start(state).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/models", server.url))
        .header("origin", "http://app.example")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_cap_refuses_more_and_caps_the_default() {
    let model = wick::model::testing::random_llama(
        &wick::model::testing::tiny_config(),
        7,
        None,
        &Device::Cpu,
    );
    let engine = wick::engine::Engine::start(model, tiny_config()).expect("engine starts");
    let tok = std::sync::Arc::new(wick::tokenizer::testing::byte_level(96));
    let state = AppState::new("tiny", 1 << 20);
    state.set_ready(wick::api::Served::with_max_tokens_cap(
        engine,
        tok,
        None,
        Some(5),
    ));
    let server = TestServer::start(state).await;
    let url = format!("{}/v1/completions", server.url);
    let r = post(&url, json!({"prompt": [1, 2], "max_tokens": 6})).await;
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["param"], "max_tokens");
    let v: Value = post(&url, json!({"prompt": [1, 2], "ignore_eos": true}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(v["usage"]["completion_tokens"], 5, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    server.stop().await;
}
