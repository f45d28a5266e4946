//! Per-key limits over HTTP (issue 10): each limit kind answers 429 in the OpenAI envelope with
//! `Retry-After` and the `x-ratelimit-*` headers once its bucket is empty, and lets requests in
//! again after the wait; tokens are reserved at admission (prompt + max_tokens) and settled to
//! the real count at the finish; the per-key counters reach `/metrics`.

use std::num::NonZeroU32;
use std::time::Duration;

use serde_json::{json, Value};
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::limits::KeyLimits;
use wick::api::{AppState, HttpOptions};

use crate::common::{tiny_config, tiny_served, TestServer};

const KEYS: &str = r#"
[[keys]]
name = "team-a"
key = "sk-a"
requests_per_minute = 1000
tokens_per_minute = 1000
max_concurrent_requests = 1
"#;

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

/// A server whose one key `sk-a` (named `team-a`) has `limits`; `slow`: the model takes 20 ms
/// a step.
async fn server(limits: KeyLimits, slow: bool) -> TestServer {
    let mut keys = ApiKeys::from_toml(KEYS).expect("keys file");
    assert!(keys.set_limits("team-a", limits));
    let options = HttpOptions {
        auth: std::sync::Arc::new(AuthConfig {
            keys,
            metrics_require_key: false,
        }),
        ..HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    if slow {
        state.set_ready(crate::common::slow_served(Duration::from_millis(20)));
    } else {
        state.set_ready(tiny_served(tiny_config()));
    }
    TestServer::start(state).await
}

/// A chat request of `sk-a`. Each test sends through one client, whose kept-alive connection
/// serves one request after another: a response is settled before the next one arrives.
async fn chat(c: &reqwest::Client, server: &TestServer, max_tokens: usize) -> reqwest::Response {
    c.post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth("sk-a")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "ignore_eos": true}))
        .send()
        .await
        .expect("request")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("text")
        .to_string()
}

fn number(r: &reqwest::Response, name: &str) -> u64 {
    header(r, name).parse().expect("a number")
}

/// Checks a 429 of `kind` (`requests` or `tokens`) and returns how long it says to wait.
async fn refused(r: reqwest::Response, kind: &str) -> Duration {
    assert_eq!(r.status().as_u16(), 429);
    let wait = Duration::from_millis(number(&r, "retry-after-ms"));
    assert!(number(&r, "retry-after") >= 1);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    wait
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_minute_refuse_past_the_limit_and_recover() {
    let limits = KeyLimits {
        requests_per_minute: nz(3),
        window: Duration::from_secs(3),
        ..KeyLimits::default()
    };
    let server = server(limits, false).await;
    let c = reqwest::Client::new();
    for left in [2, 1, 0] {
        let r = chat(&c, &server, 2).await;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(number(&r, "x-ratelimit-limit-requests"), 3);
        // The bucket refills one request a second: at most one more than the count says.
        let remaining = number(&r, "x-ratelimit-remaining-requests");
        assert!(
            remaining == left || remaining == left + 1,
            "{remaining} vs {left}"
        );
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
        assert!(r.headers().get("x-ratelimit-limit-tokens").is_none());
    }
    let mut r = chat(&c, &server, 2).await;
    if r.status().as_u16() == 200 {
        // A slow machine let a refill in: the next is refused then.
        r = chat(&c, &server, 2).await;
    }
    assert_eq!(number(&r, "x-ratelimit-remaining-requests"), 0);
    let wait = refused(r, "requests").await;
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    tokio::time::sleep(wait).await;
    assert_eq!(chat(&c, &server, 2).await.status().as_u16(), 200);
    // The key's counters: requests let in and refused.
    let m = reqwest::get(format!("{}/metrics", server.url))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    let line = |prefix: &str| {
        m.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{m}"))
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a value")
    };
    assert!(line(r#"wick_key_requests_total{key="team-a"}"#) >= 4.0);
    assert!(line(r#"wick_rate_limited_total{key="team-a",limit="requests"}"#) >= 1.0);
    assert!(line(r#"wick_key_tokens_total{key="team-a",kind="completion"}"#) >= 8.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_reserved_at_admission_and_settled_at_the_finish() {
    // 400 tokens in ten hours: the refill adds well under one token during the test.
    let limits = KeyLimits {
        tokens_per_minute: nz(400),
        window: Duration::from_secs(36_000),
        ..KeyLimits::default()
    };
    let server = server(limits, false).await;
    let c = reqwest::Client::new();
    // The reservation is the prompt plus max_tokens; this reply is held to one JSON value,
    // so it ends long before its max_tokens (200 reserved, a few used).
    let r = c
        .post(format!("{}/v1/chat/completions", server.url))
        .bearer_auth("sk-a")
        .json(
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x",
                "schema": {"const": 7}}}}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(number(&r, "x-ratelimit-limit-tokens"), 400);
    let remaining = number(&r, "x-ratelimit-remaining-tokens");
    let body: Value = r.json().await.expect("json");
    let prompt = body["usage"]["prompt_tokens"].as_u64().expect("usage");
    let used = body["usage"]["total_tokens"].as_u64().expect("usage");
    assert!(used < prompt + 200, "{body}");
    // At admission: all of the reservation was taken.
    assert_eq!(remaining, 400 - prompt - 200);
    // At the finish: only what was used stays taken; this request reserves its own.
    let r = chat(&c, &server, 100).await;
    assert_eq!(r.status().as_u16(), 200);
    let left = 400 - used - (prompt + 100);
    assert_eq!(number(&r, "x-ratelimit-remaining-tokens"), left);
    r.bytes().await.expect("body");
    // It used all of its 100: nothing comes back. One token past what is left: refused with
    // the wait, and the refusal takes nothing.
    let r = chat(&c, &server, (left - prompt + 1) as usize).await;
    assert_eq!(number(&r, "x-ratelimit-remaining-tokens"), left);
    let wait = refused(r, "tokens").await;
    assert!(wait > Duration::from_secs(1), "{wait:?}");
    // More than the whole bucket (though within the context): refused with no wait to give.
    let r = chat(&c, &server, 450).await;
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_none());
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_token_bucket_recovers_after_the_wait() {
    let limits = KeyLimits {
        tokens_per_minute: nz(100),
        window: Duration::from_secs(2),
        ..KeyLimits::default()
    };
    let server = server(limits, false).await;
    let c = reqwest::Client::new();
    let first = chat(&c, &server, 40).await;
    assert_eq!(first.status().as_u16(), 200);
    first.bytes().await.expect("body");
    let r = chat(&c, &server, 50).await;
    let wait = refused(r, "tokens").await;
    tokio::time::sleep(wait).await;
    assert_eq!(chat(&c, &server, 50).await.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_past_the_limit_wait_for_one_to_end() {
    let limits = KeyLimits {
        max_concurrent_requests: nz(1),
        ..KeyLimits::default()
    };
    let server = server(limits, true).await;
    let c = reqwest::Client::new();
    // One long stream in flight, read from a raw socket so the test can hang up.
    let (sock, _) = keyed_stream(&server.url).await;
    let r = chat(&c, &server, 2).await;
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(header(&r, "retry-after-ms"), "1000");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("concurrent")),
        "{body}"
    );
    // The client leaves: its slot comes back once the server sees the stream end.
    drop(sock);
    let mut status = 0;
    for _ in 0..200 {
        status = chat(&c, &server, 2).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, 200);
    server.stop().await;
}

/// A long streamed completion of `sk-a` on a raw socket, once two events came (for the test
/// to hang up by hand).
async fn keyed_stream(url: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let body = json!({"prompt": [1, 2, 3], "max_tokens": 490, "stream": true,
        "ignore_eos": true, "logprobs": 1})
    .to_string();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer sk-a\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    while seen.windows(5).filter(|w| w == b"data:").count() < 2 {
        let got = sock.read(&mut buf).await.expect("read");
        assert!(got > 0, "the server closed early");
        seen.extend_from_slice(&buf[..got]);
    }
    (sock, seen)
}
