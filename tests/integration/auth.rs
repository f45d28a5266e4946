//! API keys over HTTP (issue 10): every 401 row on every route, streamed or not, answered
//! before the body is read; the right key through either header; `/health*` public; keys
//! from a TOML file; a bad keys file refused by `wick serve` at start.

use std::process::Command;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::AppState;

use crate::common::{tiny_config, tiny_served, TestServer};

const KEY: &str = "sk-wick-right";

async fn keyed_server(keys: ApiKeys) -> TestServer {
    let auth = AuthConfig {
        keys,
        metrics_require_key: false,
    };
    let state = AppState::with_auth("tiny", 4096, auth);
    state.set_ready(tiny_served(tiny_config()));
    TestServer::start(state).await
}

/// Each route, with a body that would succeed: (method, path, body).
fn routes() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let chat = |stream| json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": stream});
    let comp = |stream| json!({"prompt": [1, 2], "max_tokens": 2, "stream": stream});
    vec![
        ("POST", "/v1/chat/completions", Some(chat(false))),
        ("POST", "/v1/chat/completions", Some(chat(true))),
        ("POST", "/v1/completions", Some(comp(false))),
        ("POST", "/v1/completions", Some(comp(true))),
        (
            "POST",
            "/v1/embeddings",
            Some(json!({"input": [[1, 2, 3]]})),
        ),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/tiny", None),
        ("POST", "/tokenize", Some(json!({"prompt": "hi"}))),
        ("POST", "/detokenize", Some(json!({"tokens": [40, 41]}))),
    ]
}

fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_bytes(v).expect("header value"));
    }
    h
}

async fn send(
    server: &TestServer,
    route: &(&str, &str, Option<Value>),
    h: HeaderMap,
) -> reqwest::Response {
    let (method, path, body) = route;
    let c = reqwest::Client::new();
    let url = format!("{}{path}", server.url);
    let req = match *method {
        "GET" => c.get(url),
        _ => c.post(url).json(body.as_ref().expect("a body")),
    };
    req.headers(h).send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_missing_wrong_or_malformed_key() {
    let server = keyed_server(ApiKeys::from_plain(&[KEY]).expect("keys")).await;
    let bearer_right = format!("Bearer {KEY}");
    let rows: Vec<(&str, HeaderMap)> = vec![
        ("no key", headers(&[])),
        (
            "wrong key",
            headers(&[("authorization", b"Bearer sk-wick-wrong")]),
        ),
        (
            "wrong x-api-key",
            headers(&[("x-api-key", b"sk-wick-wrong")]),
        ),
        ("no Bearer", headers(&[("authorization", KEY.as_bytes())])),
        (
            "Basic",
            headers(&[("authorization", b"Basic c2std2ljazpyaWdodA==")]),
        ),
        ("wrong header", headers(&[("api-key", KEY.as_bytes())])),
        (
            "malformed",
            headers(&[("authorization", b"Bearer sk-wick-\xffright")]),
        ),
        ("empty Bearer", headers(&[("authorization", b"Bearer ")])),
        (
            "right key, wrong case",
            headers(&[("authorization", bearer_right.to_uppercase().as_bytes())]),
        ),
    ];
    for route in routes() {
        for (row, h) in &rows {
            let r = send(&server, &route, h.clone()).await;
            let what = format!("{} {} ({row})", route.0, route.1);
            assert_eq!(r.status().as_u16(), 401, "{what}");
            let ct = r.headers()["content-type"]
                .to_str()
                .expect("ascii")
                .to_string();
            assert!(ct.starts_with("application/json"), "{what}: {ct}");
            let v: Value = r.json().await.expect("json");
            let e = &v["error"];
            assert_eq!(e["type"], "invalid_request_error", "{what}: {v}");
            assert_eq!(e["code"], "invalid_api_key", "{what}: {v}");
            assert_eq!(e["param"], Value::Null, "{what}: {v}");
            let msg = e["message"].as_str().expect("message");
            assert!(
                !msg.contains("wick-"),
                "{what}: the key is not repeated: {msg}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_key_through_either_header_opens_every_route() {
    let server = keyed_server(ApiKeys::from_plain(&["sk-other", KEY]).expect("keys")).await;
    let bearer = format!("Bearer {KEY}");
    let good = [
        headers(&[("authorization", bearer.as_bytes())]),
        headers(&[("x-api-key", KEY.as_bytes())]),
        // A client sending a dummy bearer token and the key in x-api-key still gets in.
        headers(&[
            ("authorization", b"Bearer unused"),
            ("x-api-key", KEY.as_bytes()),
        ]),
    ];
    for route in routes() {
        for h in &good {
            let r = send(&server, &route, h.clone()).await;
            let what = format!("{} {} {h:?}", route.0, route.1);
            assert_eq!(r.status().as_u16(), 200, "{what}");
            let streamed = route.2.as_ref().is_some_and(|b| b["stream"] == true);
            let body = r.text().await.expect("body");
            if streamed {
                assert!(body.trim_end().ends_with("data: [DONE]"), "{what}: {body}");
            } else {
                serde_json::from_str::<Value>(&body).expect("a JSON body");
            }
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_routes_are_public_and_live_answers_while_loading_and_draining() {
    let auth = AuthConfig {
        keys: ApiKeys::from_plain(&[KEY]).expect("keys"),
        metrics_require_key: false,
    };
    let state = AppState::with_auth("tiny", 4096, auth);
    let server = TestServer::start(state.clone()).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", server.url);
        async move {
            let r = reqwest::get(url).await.expect("get");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }
    };
    let ok = json!({"status": "ok"});
    // Loading.
    assert_eq!(get("/health/live").await, (200, ok.clone()));
    assert_eq!(
        get("/health/ready").await,
        (503, json!({"status": "model_loading"}))
    );
    assert_eq!(get("/health").await.0, 503);
    state.set_ready(tiny_served(tiny_config()));
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(get(path).await, (200, ok.clone()), "{path}");
    }
    // A key-guarded route next to them still needs its key.
    assert_eq!(get("/v1/models").await.0, 401);
    state.begin_drain();
    assert_eq!(get("/health/live").await, (200, ok.clone()));
    let draining = (503, json!({"status": "shutting_down"}));
    assert_eq!(get("/health/ready").await, draining);
    assert_eq!(get("/health").await, draining);
    server.stop().await;
}

/// Regression guard for "before the body is read": the headers of a request whose body never
/// comes get the 401 at once (a handler would wait for the body, then time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_401_comes_before_the_body_is_read() {
    let server = keyed_server(ApiKeys::from_plain(&[KEY]).expect("keys")).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: 1000000\r\nauthorization: Bearer sk-wick-wrong\r\n\r\n{{\"messages\":"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the 401 comes without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("invalid_api_key"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_toml_file_in_key_and_sha256_form() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.toml");
    // sha256("sk-hashed") in hex.
    let hashed = "sk-hashed";
    let hex: String = {
        use sha2::Digest;
        sha2::Sha256::digest(hashed.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::write(
        &path,
        format!(
            "[[keys]]\nname = \"team-a\"\nkey = \"sk-plain\"\n\n\
             [[keys]]\nname = \"ops\"\nsha256 = \"{hex}\"\nadmin = true\n"
        ),
    )
    .expect("write");
    let keys = ApiKeys::from_file(&path).expect("the file parses");
    assert_eq!(keys.names(), ["team-a", "ops"]);
    let server = keyed_server(keys).await;
    let models = ("GET", "/v1/models", None);
    for key in ["sk-plain", hashed] {
        let r = send(&server, &models, headers(&[("x-api-key", key.as_bytes())])).await;
        assert_eq!(r.status().as_u16(), 200, "{key}");
    }
    let r = send(&server, &models, headers(&[("x-api-key", hex.as_bytes())])).await;
    assert_eq!(r.status().as_u16(), 401, "the digest is not itself a key");
    server.stop().await;
}

#[test]
fn wick_serve_refuses_a_bad_keys_file_naming_file_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "limits.toml",
            "[[keys]]\nname = \"a\"\nkey = \"k\"\nrequests_per_minute = 0\n",
            "line 4",
        ),
        (
            "short.toml",
            "[[keys]]\nname = \"b\"\nsha256 = \"abc\"\n",
            "keys[0] (name \"b\")",
        ),
        (
            "empty.toml",
            "[[keys]]\nname = \"c\"\nkey = \"\"\n",
            "`key` is empty",
        ),
    ];
    for (file, text, want) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).expect("write");
        // Port 0 and a missing model: the keys are checked before either is used.
        let out = Command::new(env!("CARGO_BIN_EXE_wick"))
            .args([
                "serve",
                "--port",
                "0",
                "--model",
                "no-such-model.gguf",
                "--api-keys-file",
            ])
            .arg(&path)
            .env_remove("WICK_API_KEYS")
            .output()
            .expect("wick runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{file}: no error line in {stderr}"));
        assert!(line.contains(file) && line.contains(want), "{file}: {line}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["serve", "--port", "0", "--model", "no-such-model.gguf"])
        .env("WICK_API_KEYS", "sk-a,,sk-b")
        .output()
        .expect("wick runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("empty"),
        "{stderr}"
    );
}
