//! The web page's server side over HTTP: `/` and `/ui` are public on a keyed server and carry
//! the strict Content-Security-Policy; an unknown page file is a 404 in the envelope; with the
//! page off (`HttpOptions::ui`, `--no-ui`) `/` is a 404; and `GET /v1/conversations`, the list
//! the page shows: per key, last changed first, pages, search, its 400s and 404s. No route here
//! runs the model, so the tiny one serves.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use wick::api::auth::{ApiKeys, AuthConfig};
use wick::api::{AppState, HttpOptions};
use wick::store::{ResponseStore, DB_FILE};

use crate::common::{tiny_config, tiny_served, TestServer};

const TEAM: &str = "sk-ui-team";
const OTHER: &str = "sk-ui-other";

async fn server(dir: &std::path::Path, ui: bool) -> TestServer {
    let keys = ApiKeys::from_toml(&format!(
        "[[keys]]\nname = \"team\"\nkey = \"{TEAM}\"\n\n[[keys]]\nname = \"other\"\nkey = \"{OTHER}\"\n"
    ))
    .expect("keys");
    let options = HttpOptions {
        auth: Arc::new(AuthConfig {
            keys,
            metrics_require_key: false,
        }),
        responses: Some(ResponseStore::open(&dir.join(DB_FILE)).expect("store opens")),
        ui,
        ..HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    state.set_ready(tiny_served(tiny_config()));
    TestServer::start(state).await
}

async fn call(
    s: &TestServer,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_public_with_a_strict_policy_and_off_with_no_ui() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path(), true).await;
    for path in ["/", "/ui", "/ui/"] {
        let r = reqwest::get(format!("{}{path}", s.url)).await.expect("get");
        assert_eq!(r.status().as_u16(), 200, "{path} needs no key");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert_eq!(h["cache-control"], "no-cache");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self'"));
        assert!(csp.contains("ws://127.0.0.1:"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let body = r.text().await.expect("body");
        assert!(body.contains("<html"), "{body}");
    }
    let r = reqwest::get(format!("{}/ui/assets/none.js", s.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "not_found");
    // The API stays behind the key.
    let r = reqwest::get(format!("{}/v1/models", s.url))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    drop(s);
    let off = server(dir.path(), false).await;
    let r = reqwest::get(format!("{}/", off.url)).await.expect("get");
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_list_by_key_newest_first_with_pages_and_search() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = server(dir.path(), true).await;
    let mut made = Vec::new();
    for title in ["Rust traits", "Cooking", "rust async"] {
        let body = json!({"metadata": {"title": title}});
        let (st, c) = call(&s, TEAM, Method::POST, "/v1/conversations", Some(body)).await;
        assert_eq!(st, 200, "{c}");
        made.push(c["id"].as_str().expect("id").to_string());
    }
    let (_, theirs) = call(
        &s,
        OTHER,
        Method::POST,
        "/v1/conversations",
        Some(json!({})),
    )
    .await;
    // Renaming the first makes it the last changed (the clock may not have moved: wait a tick).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let path = format!("/v1/conversations/{}", made[0]);
    let (st, _) = call(
        &s,
        TEAM,
        Method::POST,
        &path,
        Some(json!({"metadata": {"title": "Rust traits!"}})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, all) = call(&s, TEAM, Method::GET, "/v1/conversations", None).await;
    assert_eq!(st, 200, "{all}");
    assert_eq!(all["object"], "list");
    let listed = ids(&all);
    assert_eq!(listed.len(), 3, "only the key's own");
    assert_eq!(listed[0], made[0]);
    assert!(!listed.contains(&theirs["id"].as_str().expect("id").to_string()));
    assert_eq!(all["data"][0]["metadata"]["title"], "Rust traits!");
    // Pages of two follow `after`.
    let (_, p1) = call(&s, TEAM, Method::GET, "/v1/conversations?limit=2", None).await;
    assert_eq!(
        (ids(&p1), p1["has_more"].clone()),
        (listed[..2].to_vec(), json!(true))
    );
    let next = format!(
        "/v1/conversations?limit=2&after={}",
        p1["last_id"].as_str().expect("last")
    );
    let (_, p2) = call(&s, TEAM, Method::GET, &next, None).await;
    assert_eq!(
        (ids(&p2), p2["has_more"].clone()),
        (listed[2..].to_vec(), json!(false))
    );
    // Search over the titles, case folded.
    let (_, found) = call(&s, TEAM, Method::GET, "/v1/conversations?search=RUST", None).await;
    assert_eq!(ids(&found), [made[0].clone(), made[2].clone()]);
    // Bad parameters name themselves; another key's id is no cursor.
    let (st, e) = call(&s, TEAM, Method::GET, "/v1/conversations?limit=0", None).await;
    assert_eq!((st, e["error"]["param"].clone()), (400, json!("limit")));
    let (st, e) = call(&s, TEAM, Method::GET, "/v1/conversations?sort=x", None).await;
    assert_eq!((st, e["error"]["param"].clone()), (400, json!("sort")));
    let after = format!(
        "/v1/conversations?after={}",
        theirs["id"].as_str().expect("id")
    );
    let (st, e) = call(&s, TEAM, Method::GET, &after, None).await;
    assert_eq!((st, e["error"]["param"].clone()), (404, json!("after")));
}
