//! Usage statistics over HTTP (issue 10): `GET /v1/usage` needs an admin key and adds up the
//! requests the server answered (model routes only); the rows survive a restart of the server
//! on the same data directory; a read-only database fails no request (the error metric moves,
//! the rows wait and land once it is writable); `wick usage` prints the same totals.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::{AppState, HttpOptions};
use wick::store::{Store, UsageWriter, WriterConfig, DB_FILE};

use crate::common::{sse_data, tiny_config, tiny_served, TestServer};

const OPS: &str = "sk-usage-ops";
const TEAM: &str = "sk-usage-team";

fn fast() -> WriterConfig {
    WriterConfig {
        flush_every: Duration::from_millis(20),
        retry_min: Duration::from_millis(20),
        retry_max: Duration::from_millis(50),
        busy_timeout: Duration::from_millis(50),
        ..WriterConfig::default()
    }
}

fn keys() -> ApiKeys {
    ApiKeys::from_toml(&format!(
        "[[keys]]\nname = \"ops\"\nkey = \"{OPS}\"\nadmin = true\n\n\
         [[keys]]\nname = \"team\"\nkey = \"{TEAM}\"\n"
    ))
    .expect("keys")
}

/// The tiny model served with usage recorded under `dir`; `keys: None` is an open server.
async fn server(dir: &Path, keys: Option<ApiKeys>) -> (TestServer, UsageWriter) {
    let (log, writer) = UsageWriter::start(dir.join(DB_FILE), fast()).expect("writer");
    let options = HttpOptions {
        auth: Arc::new(AuthConfig {
            keys: keys.unwrap_or_default(),
            metrics_require_key: false,
        }),
        usage: Some(log),
        ..HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    state.set_ready(tiny_served(tiny_config()));
    (TestServer::start(state).await, writer)
}

async fn send(s: &TestServer, key: Option<&str>, path: &str, body: Value) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", s.url))
        .json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.expect("request")
}

/// Sends a request and returns its usage: (prompt, completion) tokens.
async fn used(s: &TestServer, key: Option<&str>, path: &str, body: Value) -> (u64, u64) {
    let stream = body["stream"] == true;
    let r = send(s, key, path, body).await;
    assert_eq!(r.status().as_u16(), 200, "{path}");
    let usage = if stream {
        let text = r.text().await.expect("body");
        let data = sse_data(&text);
        let last: Value = serde_json::from_str(&data[data.len() - 2]).expect("usage chunk");
        last["usage"].clone()
    } else {
        r.json::<Value>().await.expect("json")["usage"].clone()
    };
    let n = |f: &str| usage[f].as_u64().unwrap_or(0);
    (n("prompt_tokens"), n("completion_tokens"))
}

fn chat(stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3,
           "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }})
}

async fn get_usage(s: &TestServer, key: Option<&str>, query: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}/v1/usage{query}", s.url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// Polls `/v1/usage` until its total of requests is `n` (the writer batches every 20 ms).
async fn usage_when(s: &TestServer, key: Option<&str>, query: &str, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = get_usage(s, key, query).await;
        assert_eq!(status, 200, "{v}");
        let total: u64 = v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|d| d["requests"].as_u64().expect("requests"))
            .sum();
        if total == n {
            return v;
        }
        assert!(
            total < n && Instant::now() < deadline,
            "usage {v} never reached {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_needs_an_admin_key_and_adds_up_the_model_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _writer) = server(dir.path(), Some(keys())).await;
    let (status, v) = get_usage(&s, None, "").await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (401, &json!("invalid_api_key"))
    );
    let (status, v) = get_usage(&s, Some(TEAM), "").await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "insufficient_permissions");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, v) = get_usage(&s, Some(OPS), "").await;
    assert_eq!(
        (status, &v["object"], &v["data"]),
        (200, &json!("list"), &json!([]))
    );

    // Not model requests: no rows.
    let c = reqwest::Client::new();
    for path in ["/health", "/metrics", "/v1/models"] {
        let r = c.get(format!("{}{path}", s.url)).bearer_auth(TEAM).send();
        assert_eq!(r.await.expect("request").status().as_u16(), 200, "{path}");
    }
    let wrong = send(
        &s,
        Some("sk-wrong"),
        "/v1/completions",
        json!({"prompt": "x"}),
    )
    .await;
    assert_eq!(
        wrong.status().as_u16(),
        401,
        "a refused key is nobody's usage"
    );

    let mut team = [
        used(&s, Some(TEAM), "/v1/chat/completions", chat(false)).await,
        used(&s, Some(TEAM), "/v1/chat/completions", chat(true)).await,
        used(
            &s,
            Some(TEAM),
            "/v1/completions",
            json!({"prompt": [1, 2, 3], "max_tokens": 4}),
        )
        .await,
        used(
            &s,
            Some(TEAM),
            "/v1/embeddings",
            json!({"input": [[1, 2, 3, 4, 5]]}),
        )
        .await,
    ]
    .to_vec();
    // A 400 is a request too, with no tokens.
    let bad = send(
        &s,
        Some(TEAM),
        "/v1/completions",
        json!({"prompt": "x", "n": 0}),
    )
    .await;
    assert_eq!(bad.status().as_u16(), 400);
    team.push((0, 0));
    let ops = used(
        &s,
        Some(OPS),
        "/v1/completions",
        json!({"prompt": "abc", "max_tokens": 2}),
    )
    .await;
    assert_eq!(team[3].0, 5, "embeddings count their input tokens");

    let v = usage_when(&s, Some(OPS), "?group_by=key", 6).await;
    assert_eq!(v["group_by"], "key");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 2, "{v}");
    let (p, g) = team.iter().fold((0, 0), |(p, g), &(a, b)| (p + a, g + b));
    assert_eq!(data[0]["key"], "ops");
    assert_eq!(data[0]["requests"], 1);
    assert_eq!(data[0]["prompt_tokens"], ops.0);
    assert_eq!(data[0]["completion_tokens"], ops.1);
    assert_eq!(data[1]["key"], "team");
    assert_eq!(data[1]["requests"], 5);
    assert_eq!(data[1]["prompt_tokens"], p);
    assert_eq!(data[1]["completion_tokens"], g);
    assert_eq!(data[1]["total_tokens"], p + g);

    let (_, by_model) = get_usage(&s, Some(OPS), "?group_by=model").await;
    assert_eq!(by_model["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(by_model["data"][0]["model"], "tiny");
    assert_eq!(by_model["data"][0]["requests"], 6);
    assert_eq!(by_model["data"][0]["prompt_tokens"], p + ops.0);
    let (_, by_day) = get_usage(&s, Some(OPS), "?group_by=day").await;
    let days: u64 = by_day["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| {
            assert_eq!(d["day"].as_str().map(str::len), Some(10), "{d}");
            d["requests"].as_u64().expect("requests")
        })
        .sum();
    assert_eq!(days, 6);
    // Unix seconds (answered from the rows, not the daily rollup): the same totals.
    let now = wick::api::unix_now();
    let q = format!("?group_by=model&start={}&end={}", now - 3600, now + 3600);
    let (_, ragged) = get_usage(&s, Some(OPS), &q).await;
    assert_eq!(ragged["data"], by_model["data"]);
    assert_eq!(ragged["start"], now - 3600);
    let (_, old) = get_usage(&s, Some(OPS), "?start=2000-01-01&end=2000-01-02").await;
    assert_eq!(old["data"], json!([]));

    for (query, param) in [
        ("?group_by=week", "group_by"),
        ("?start=yesterday", "start"),
        ("?start=2024-12-05&end=2024-12-04", "start"),
        ("?limit=3", "limit"),
    ] {
        let (status, v) = get_usage(&s, Some(OPS), query).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["param"], param, "{query}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_rows_survive_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, writer) = server(dir.path(), None).await;
    let a = used(&s, None, "/v1/chat/completions", chat(false)).await;
    let b = used(
        &s,
        None,
        "/v1/completions",
        json!({"prompt": [5, 6], "max_tokens": 2}),
    )
    .await;
    s.stop().await;
    // What is queued is written at exit.
    writer.finish();

    let (s, _writer) = server(dir.path(), None).await;
    // An open server: /v1/usage is open too (there is no admin to ask for).
    let v = usage_when(&s, None, "", 2).await;
    assert!(v["data"][0]["key"].is_null(), "{v}");
    assert_eq!(v["data"][0]["prompt_tokens"], a.0 + b.0);
    assert_eq!(v["data"][0]["completion_tokens"], a.1 + b.1);
    used(&s, None, "/v1/embeddings", json!({"input": "hi"})).await;
    usage_when(&s, None, "?group_by=model", 3).await;
    s.stop().await;
}

/// Makes `db` read-only: `chmod 0444`, and (since root writes through file modes) its header's
/// write version (byte 18) above 2, which SQLite treats as a read-only file for anyone.
fn set_read_only(db: &Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |m| std::fs::set_permissions(db, std::fs::Permissions::from_mode(m));
    if !read_only {
        mode(0o644).expect("chmod");
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(db)
        .expect("open db");
    f.seek(SeekFrom::Start(18)).expect("seek");
    f.write_all(&[if read_only { 3 } else { 2 }])
        .expect("write");
    drop(f);
    if read_only {
        mode(0o444).expect("chmod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_fails_no_request_and_its_rows_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join(DB_FILE);
    drop(Store::open(&db, Duration::from_secs(1)).expect("create the database"));
    set_read_only(&db, true);
    let (s, writer) = server(dir.path(), None).await;
    used(&s, None, "/v1/chat/completions", chat(false)).await;
    used(&s, None, "/v1/chat/completions", chat(true)).await;
    used(&s, None, "/v1/embeddings", json!({"input": [[1, 2]]})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(format!("{}/metrics", s.url))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let errors = metric(&text, "wick_usage_write_errors_total").unwrap_or(0.0);
        let pending = metric(&text, "wick_usage_rows_pending").unwrap_or(0.0);
        if errors >= 1.0 && pending == 3.0 {
            assert_eq!(metric(&text, "wick_usage_rows_written_total"), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "no write error counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reading still works, and shows nothing written.
    let (status, v) = get_usage(&s, None, "").await;
    assert_eq!((status, &v["data"]), (200, &json!([])));
    set_read_only(&db, false);
    usage_when(&s, None, "", 3).await;
    s.stop().await;
    writer.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wick_usage_prints_the_table_from_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, writer) = server(dir.path(), Some(keys())).await;
    let a = used(
        &s,
        Some(TEAM),
        "/v1/completions",
        json!({"prompt": [1, 2, 3], "max_tokens": 3}),
    )
    .await;
    let b = used(
        &s,
        Some(OPS),
        "/v1/completions",
        json!({"prompt": [4], "max_tokens": 2}),
    )
    .await;
    usage_when(&s, Some(OPS), "", 2).await;
    // While the server runs.
    let wick = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wick"))
            .arg("usage")
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .expect("wick usage runs");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = wick(&[]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0][0], "key", "{table}");
    let want = |name: &str, (p, g): (u64, u64)| {
        vec![
            name.to_string(),
            "1".into(),
            p.to_string(),
            "0".into(),
            g.to_string(),
            (p + g).to_string(),
        ]
    };
    let got: Vec<Vec<String>> = lines[1..]
        .iter()
        .map(|l| l.iter().map(|x| x.to_string()).collect())
        .collect();
    assert_eq!(got, [want("ops", b), want("team", a)], "{table}");
    s.stop().await;
    writer.finish();
    // With the server stopped, as JSON, by model.
    let v: Value = serde_json::from_str(&wick(&["--group-by", "model", "--json"])).expect("json");
    assert_eq!(v["data"][0]["model"], "tiny");
    assert_eq!(v["data"][0]["requests"], 2);
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args(["usage", "--data-dir"])
        .arg(dir.path().join("nowhere"))
        .output()
        .expect("wick usage runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no usage database") && stderr.contains("nowhere"),
        "{stderr}"
    );
}

#[test]
fn wick_serve_refuses_a_data_dir_it_cannot_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .args([
            "serve",
            "--port",
            "0",
            "--model",
            "no-such-model.gguf",
            "--data-dir",
        ])
        .arg(file.join("data"))
        .output()
        .expect("wick serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--data-dir") && stderr.contains("a-file"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
