//! Stored responses and conversations over HTTP (issue 11): a response saved through the
//! `ResponseStore` (as the create path saves it) reads back through `GET /v1/responses/{id}`
//! and its input items page by page; DELETE makes every route 404; another key gets 404 on
//! every route; conversations and their items go through their whole life; everything
//! survives a restart on the same data directory; the pruner removes what is past the
//! retention; a server without a data directory answers `storage_off`. The routes never run
//! the model, so the tiny one serves.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::{AppState, HttpOptions};
use wick::store::{new_id, Pruner, ResponseStore, StoredResponse, DB_FILE};

use crate::common::{tiny_config, tiny_served, TestServer};

const TEAM: &str = "sk-stored-team";
const OTHER: &str = "sk-stored-other";

fn keys() -> ApiKeys {
    ApiKeys::from_toml(&format!(
        "[[keys]]\nname = \"team\"\nkey = \"{TEAM}\"\n\n[[keys]]\nname = \"other\"\nkey = \"{OTHER}\"\n"
    ))
    .expect("keys")
}

/// The tiny model served with responses stored in `dir` (`None`: nothing stored).
async fn server(dir: Option<&Path>, keys: Option<ApiKeys>) -> (TestServer, Option<ResponseStore>) {
    let store = dir.map(|d| ResponseStore::open(&d.join(DB_FILE)).expect("store opens"));
    let options = HttpOptions {
        auth: Arc::new(AuthConfig {
            keys: keys.unwrap_or_default(),
            metrics_require_key: false,
        }),
        responses: store.clone(),
        ..HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    state.set_ready(tiny_served(tiny_config()));
    (TestServer::start(state).await, store)
}

/// `method path` with `key` and an optional JSON body: (status, body).
async fn call(
    s: &TestServer,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn msg(role: &str, text: &str) -> Value {
    json!({"id": new_id("msg_"), "type": "message", "role": role, "status": "completed",
           "content": [{"type": "input_text", "text": text}]})
}

/// A completed response of `owner` with `n` input messages `m0..`, created at `created_at`.
fn response(owner: &str, n: usize, created_at: i64) -> StoredResponse {
    let id = new_id("resp_");
    StoredResponse {
        response: json!({"id": id, "object": "response", "created_at": created_at,
                         "status": "completed", "model": "tiny",
                         "output": [{"id": new_id("msg_"), "type": "message", "role": "assistant",
                                     "status": "completed",
                                     "content": [{"type": "output_text", "text": "ok", "annotations": []}]}]}),
        id,
        owner: owner.into(),
        created_at,
        status: "completed".into(),
        previous_response_id: None,
        conversation_id: None,
        input_items: (0..n).map(|i| msg("user", &format!("m{i}"))).collect(),
    }
}

fn texts(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn now() -> i64 {
    wick::api::unix_now() as i64
}

async fn save(store: &ResponseStore, r: &StoredResponse) {
    let (s, r) = (store.clone(), r.clone());
    tokio::task::spawn_blocking(move || s.save(&r))
        .await
        .expect("task")
        .expect("saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_response_reads_back_pages_its_input_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, store) = server(Some(dir.path()), Some(keys())).await;
    let r = response("team", 5, now());
    save(store.as_ref().expect("store"), &r).await;
    let key = Some(TEAM);
    let path = format!("/v1/responses/{}", r.id);
    let (status, got) = call(&s, key, Method::GET, &path, None).await;
    assert_eq!((status, &got), (200, &r.response));

    let items = format!("{path}/input_items");
    let (status, all) = call(&s, key, Method::GET, &items, None).await;
    assert_eq!(status, 200, "{all}");
    // Newest first by default, all five in one page.
    assert_eq!(texts(&all), ["m4", "m3", "m2", "m1", "m0"]);
    assert_eq!(
        (all["object"].as_str(), all["has_more"].as_bool()),
        (Some("list"), Some(false))
    );
    let (_, p1) = call(
        &s,
        key,
        Method::GET,
        &format!("{items}?limit=2&order=asc"),
        None,
    )
    .await;
    assert_eq!(
        (texts(&p1), p1["has_more"].as_bool()),
        (vec!["m0".into(), "m1".into()], Some(true))
    );
    let after = p1["last_id"].as_str().expect("last_id");
    let (_, p2) = call(
        &s,
        key,
        Method::GET,
        &format!("{items}?limit=2&order=asc&after={after}"),
        None,
    )
    .await;
    assert_eq!(texts(&p2), ["m2", "m3"]);
    let after = p2["last_id"].as_str().expect("last_id");
    let (_, p3) = call(
        &s,
        key,
        Method::GET,
        &format!("{items}?order=asc&after={after}"),
        None,
    )
    .await;
    assert_eq!(
        (texts(&p3), p3["has_more"].as_bool()),
        (vec!["m4".into()], Some(false))
    );
    assert_eq!(p3["first_id"], r.input_items[4]["id"]);
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("order=up", "order"),
        ("page=2", "page"),
    ] {
        let (status, e) = call(&s, key, Method::GET, &format!("{items}?{query}"), None).await;
        assert_eq!(
            (status, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{query}"
        );
    }
    let (status, e) = call(
        &s,
        key,
        Method::GET,
        &format!("{items}?after=msg_nope"),
        None,
    )
    .await;
    assert_eq!((status, e["error"]["param"].as_str()), (404, Some("after")));

    let (status, d) = call(&s, key, Method::DELETE, &path, None).await;
    assert_eq!(
        (status, d),
        (
            200,
            json!({"id": r.id, "object": "response", "deleted": true})
        )
    );
    for (method, p) in [
        (Method::GET, &path),
        (Method::DELETE, &path),
        (Method::GET, &items),
    ] {
        let (status, e) = call(&s, key, method, p, None).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{p}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_gets_404_on_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, store) = server(Some(dir.path()), Some(keys())).await;
    let r = response("team", 1, now());
    save(store.as_ref().expect("store"), &r).await;
    let (_, c) = call(
        &s,
        Some(TEAM),
        Method::POST,
        "/v1/conversations",
        Some(json!({"items": [{"role": "user", "content": "mine"}]})),
    )
    .await;
    let conv = c["id"].as_str().expect("conversation id").to_string();
    let (_, list) = call(
        &s,
        Some(TEAM),
        Method::GET,
        &format!("/v1/conversations/{conv}/items"),
        None,
    )
    .await;
    let item = list["data"][0]["id"].as_str().expect("item id").to_string();
    let resp = format!("/v1/responses/{}", r.id);
    let cpath = format!("/v1/conversations/{conv}");
    let ipath = format!("{cpath}/items/{item}");
    let routes = [
        (Method::GET, resp.clone(), None),
        (Method::GET, format!("{resp}/input_items"), None),
        (Method::DELETE, resp.clone(), None),
        (Method::GET, cpath.clone(), None),
        (
            Method::POST,
            cpath.clone(),
            Some(json!({"metadata": {"a": "b"}})),
        ),
        (
            Method::POST,
            format!("{cpath}/items"),
            Some(json!({"items": [{"role": "user", "content": "x"}]})),
        ),
        (Method::GET, format!("{cpath}/items"), None),
        (Method::GET, ipath.clone(), None),
        (Method::DELETE, ipath.clone(), None),
        (Method::DELETE, cpath.clone(), None),
    ];
    for (method, path, body) in routes {
        let (status, e) = call(&s, Some(OTHER), method.clone(), &path, body).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{method} {path}"
        );
    }
    // Untouched for its owner.
    assert_eq!(call(&s, Some(TEAM), Method::GET, &resp, None).await.0, 200);
    let (status, got) = call(&s, Some(TEAM), Method::GET, &ipath, None).await;
    assert_eq!(
        (status, got["content"][0]["text"].as_str()),
        (200, Some("mine"))
    );
    let (_, list) = call(&s, Some(TEAM), Method::GET, &format!("{cpath}/items"), None).await;
    assert_eq!(texts(&list), ["mine"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_and_their_items_go_through_their_whole_life() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _store) = server(Some(dir.path()), None).await;
    let (status, c) = call(&s, None, Method::POST, "/v1/conversations", Some(json!({
        "metadata": {"topic": "birds"},
        "items": [{"role": "user", "content": "a"},
                  {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "b"}]}],
    }))).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(
        (c["object"].as_str(), c["metadata"]["topic"].as_str()),
        (Some("conversation"), Some("birds"))
    );
    let id = c["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("conv_"));
    let cpath = format!("/v1/conversations/{id}");
    assert_eq!(
        call(&s, None, Method::GET, &cpath, None).await,
        (200, c.clone())
    );
    let (status, u) = call(
        &s,
        None,
        Method::POST,
        &cpath,
        Some(json!({"metadata": {"topic": "fish"}})),
    )
    .await;
    assert_eq!(
        (status, u["metadata"].clone(), u["created_at"].clone()),
        (200, json!({"topic": "fish"}), c["created_at"].clone())
    );

    let (status, added) = call(&s, None, Method::POST, &format!("{cpath}/items"), Some(json!({"items": [
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":1}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        {"role": "user", "content": "c"},
    ]}))).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["data"].as_array().map(Vec::len), Some(3));
    assert!(added["data"][0]["id"]
        .as_str()
        .expect("id")
        .starts_with("fc_"));
    let (_, list) = call(
        &s,
        None,
        Method::GET,
        &format!("{cpath}/items?order=asc"),
        None,
    )
    .await;
    let kinds: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| i["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "function_call",
            "function_call_output",
            "message"
        ]
    );
    let (_, page) = call(
        &s,
        None,
        Method::GET,
        &format!("{cpath}/items?limit=2"),
        None,
    )
    .await;
    assert_eq!(
        (texts(&page)[0].as_str(), page["has_more"].as_bool()),
        ("c", Some(true))
    );

    let fc = added["data"][0]["id"].as_str().expect("id").to_string();
    let (status, item) = call(&s, None, Method::GET, &format!("{cpath}/items/{fc}"), None).await;
    assert_eq!(
        (status, item["arguments"].as_str()),
        (200, Some("{\"q\":1}"))
    );
    let (status, back) = call(
        &s,
        None,
        Method::DELETE,
        &format!("{cpath}/items/{fc}"),
        None,
    )
    .await;
    assert_eq!((status, back["id"].as_str()), (200, Some(id.as_str())));
    assert_eq!(
        call(&s, None, Method::GET, &format!("{cpath}/items/{fc}"), None)
            .await
            .0,
        404
    );
    let (_, list) = call(&s, None, Method::GET, &format!("{cpath}/items"), None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(4));

    // Bad input is a 400 naming the field.
    for (path, body, param) in [
        (
            "/v1/conversations".to_string(),
            json!({"metadata": {"k": "v".repeat(513)}}),
            "metadata.k",
        ),
        (
            "/v1/conversations".to_string(),
            json!({"items": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]}),
            "items[1].role",
        ),
        (
            "/v1/conversations".to_string(),
            json!({"items": [{"type": "web_search_call"}]}),
            "items[0]",
        ),
        (cpath.clone(), json!({}), "metadata"),
        (format!("{cpath}/items"), json!({"items": "hi"}), "items"),
    ] {
        let (status, e) = call(&s, None, Method::POST, &path, Some(body)).await;
        assert_eq!(
            (status, e["error"]["param"].as_str()),
            (400, Some(param)),
            "{path}"
        );
    }
    let (status, d) = call(&s, None, Method::DELETE, &cpath, None).await;
    assert_eq!(
        (status, d),
        (
            200,
            json!({"id": id, "object": "conversation.deleted", "deleted": true})
        )
    );
    assert_eq!(call(&s, None, Method::GET, &cpath, None).await.0, 404);
    assert_eq!(
        call(&s, None, Method::GET, &format!("{cpath}/items"), None)
            .await
            .0,
        404
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_rows_survive_a_restart_on_the_same_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = response("", 2, now());
    let conv = {
        let (s, store) = server(Some(dir.path()), None).await;
        save(store.as_ref().expect("store"), &r).await;
        let (_, c) = call(
            &s,
            None,
            Method::POST,
            "/v1/conversations",
            Some(json!({"metadata": {"k": "v"}, "items": [{"role": "user", "content": "kept"}]})),
        )
        .await;
        s.stop().await;
        c["id"].as_str().expect("id").to_string()
    };
    let (s, _store) = server(Some(dir.path()), None).await;
    let (status, got) = call(
        &s,
        None,
        Method::GET,
        &format!("/v1/responses/{}", r.id),
        None,
    )
    .await;
    assert_eq!((status, got), (200, r.response.clone()));
    let (_, items) = call(
        &s,
        None,
        Method::GET,
        &format!("/v1/responses/{}/input_items?order=asc", r.id),
        None,
    )
    .await;
    assert_eq!(texts(&items), ["m0", "m1"]);
    let (status, c) = call(
        &s,
        None,
        Method::GET,
        &format!("/v1/conversations/{conv}"),
        None,
    )
    .await;
    assert_eq!((status, c["metadata"]["k"].as_str()), (200, Some("v")));
    let (_, items) = call(
        &s,
        None,
        Method::GET,
        &format!("/v1/conversations/{conv}/items"),
        None,
    )
    .await;
    assert_eq!(texts(&items), ["kept"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_removes_what_is_past_the_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, store) = server(Some(dir.path()), None).await;
    let store = store.expect("store");
    let old = response("", 1, now() - 2 * 86_400);
    let new = response("", 1, now());
    save(&store, &old).await;
    save(&store, &new).await;
    let (_, stale) = call(&s, None, Method::POST, "/v1/conversations", Some(json!({}))).await;
    let (_, fresh) = call(&s, None, Method::POST, "/v1/conversations", Some(json!({}))).await;
    let stale = stale["id"].as_str().expect("id").to_string();
    let fresh = fresh["id"].as_str().expect("id").to_string();
    let backdate = store.clone();
    let id = stale.clone();
    tokio::task::spawn_blocking(move || {
        backdate.set_conversation_updated_at("", &id, now() - 2 * 86_400)
    })
    .await
    .expect("task")
    .expect("backdated");
    // What `wick serve` starts with `--response-retention 1d`.
    let pruner = Pruner::start(
        store.clone(),
        Duration::from_secs(86_400),
        Duration::from_secs(3600),
    )
    .expect("pruner");
    let t = Instant::now();
    while call(
        &s,
        None,
        Method::GET,
        &format!("/v1/responses/{}", old.id),
        None,
    )
    .await
    .0 != 404
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the old response was not pruned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        call(
            &s,
            None,
            Method::GET,
            &format!("/v1/responses/{}", new.id),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &s,
            None,
            Method::GET,
            &format!("/v1/conversations/{stale}"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(
            &s,
            None,
            Method::GET,
            &format!("/v1/conversations/{fresh}"),
            None
        )
        .await
        .0,
        200
    );
    drop(pruner);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_data_dir_says_storage_is_off() {
    let (s, _) = server(None, None).await;
    for (method, path) in [
        (Method::GET, "/v1/responses/resp_x"),
        (Method::GET, "/v1/responses/resp_x/input_items"),
        (Method::POST, "/v1/conversations"),
        (Method::GET, "/v1/conversations/conv_x/items"),
    ] {
        let (status, e) = call(&s, None, method, path, Some(json!({}))).await;
        assert_eq!(
            (status, e["error"]["code"].as_str()),
            (404, Some("storage_off")),
            "{path}"
        );
    }
    s.stop().await;
}

/// A response asked to be stored that the store cannot write is a failure the client sees,
/// not a response that a later GET or `previous_response_id` cannot find: JSON gets a 500 and
/// a stream ends with `response.failed` (its output still on it); `store: false` is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_the_store_cannot_write_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (s, _store) = server(Some(dir.path()), None).await;
    let body = |extra: Value| {
        let mut b = json!({"model": "tiny", "input": "hi", "max_output_tokens": 3});
        if let (Some(o), Value::Object(e)) = (b.as_object_mut(), extra) {
            o.extend(e);
        }
        b
    };
    // Another connection holds the write lock for longer than the store waits.
    let lock = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("open");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let post = |b: Value| {
        reqwest::Client::new()
            .post(format!("{}/v1/responses", s.url))
            .json(&b)
            .send()
    };
    let (json_reply, streamed, unstored) = tokio::join!(
        post(body(json!({}))),
        post(body(json!({"stream": true}))),
        post(body(json!({"store": false}))),
    );
    let json_reply = json_reply.expect("request");
    assert_eq!(json_reply.status().as_u16(), 500);
    let v: Value = json_reply.json().await.expect("JSON");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not be stored"), "{v}");
    let text = streamed.expect("request").text().await.expect("body");
    let last: Value = crate::common::sse_data(&text)
        .last()
        .map(|d| serde_json::from_str(d).expect("JSON"))
        .expect("events");
    assert_eq!(last["type"], "response.failed", "{text}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert!(!last["response"]["output"]
        .as_array()
        .expect("output")
        .is_empty());
    assert_eq!(unstored.expect("request").status().as_u16(), 200);

    lock.execute_batch("ROLLBACK").expect("unlock");
    let (status, v) = call(
        &s,
        None,
        Method::POST,
        "/v1/responses",
        Some(body(json!({}))),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let id = v["id"].as_str().expect("id");
    let (status, _) = call(&s, None, Method::GET, &format!("/v1/responses/{id}"), None).await;
    assert_eq!(status, 200);
    s.stop().await;
}
