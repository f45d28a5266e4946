//! The document against the router's route list, the key configuration, and the router.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::api::auth::ApiKeys;

/// `{*id}` (axum's rest-of-path parameter) is `{id}` in OpenAPI.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// `(METHOD, path)` of every operation in the document.
fn documented(doc: &utoipa::openapi::OpenApi) -> BTreeSet<(String, String)> {
    let json = serde_json::to_value(doc).expect("the document serializes");
    let mut out = BTreeSet::new();
    for (path, item) in json["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

fn keyed(metrics_require_key: bool) -> AuthConfig {
    AuthConfig {
        keys: ApiKeys::from_plain(&["sk-test"]).expect("a key"),
        metrics_require_key,
    }
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let served: BTreeSet<(String, String)> = crate::api::routes()
        .iter()
        .map(|r| (r.method.to_string(), openapi_path(r.path)))
        .collect();
    let doc = documented(&document(&AuthConfig::default()));
    assert_eq!(
        served.difference(&doc).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        doc.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    assert_eq!(
        served.len(),
        crate::api::routes().len(),
        "a route listed twice"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_unique_operation_ids() {
    let json = serde_json::to_value(document(&AuthConfig::default())).expect("serializes");
    assert!(json["openapi"]
        .as_str()
        .expect("version")
        .starts_with("3.1"));
    let mut ids = BTreeSet::new();
    for item in json["paths"].as_object().expect("paths").values() {
        for op in item.as_object().expect("item").values() {
            let id = op["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            assert!(op["responses"]["500"].is_object(), "{id}: no 500");
        }
    }
    for name in [
        "ChatCompletionRequest",
        "ChatCompletion",
        "ChatCompletionChunk",
        "CompletionRequest",
        "Completion",
        "EmbeddingRequest",
        "EmbeddingResponse",
        "ModelList",
        "TokenizeResponse",
        "ErrorEnvelope",
    ] {
        assert!(
            json["components"]["schemas"][name].is_object(),
            "no schema {name}"
        );
    }
}

/// `(path, method)` -> the security requirements of that operation (`[]` when none).
fn security(json: &Value, path: &str, method: &str) -> Vec<String> {
    let op = &json["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is documented");
    op["security"]
        .as_array()
        .map(|reqs| {
            reqs.iter()
                .flat_map(|r| r.as_object().expect("a requirement").keys().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn with_keys_every_route_but_the_public_ones_asks_for_one() {
    let json = serde_json::to_value(document(&keyed(false))).expect("serializes");
    let both = vec![BEARER.to_string(), API_KEY.to_string()];
    for (path, method) in [
        ("/v1/chat/completions", "post"),
        ("/v1/models/{id}", "get"),
        ("/tokenize", "post"),
        ("/openapi.json", "get"),
    ] {
        assert_eq!(security(&json, path, method), both, "{path}");
        assert!(json["paths"][path][method]["responses"]["401"].is_object());
    }
    for path in ["/health", "/health/live", "/health/ready", "/metrics"] {
        assert_eq!(security(&json, path, "get"), Vec::<String>::new(), "{path}");
        assert!(json["paths"][path]["get"]["responses"]["401"].is_null());
    }
    let schemes = &json["components"]["securitySchemes"];
    assert_eq!(schemes[BEARER]["scheme"], "bearer");
    assert_eq!(
        (&schemes[API_KEY]["in"], &schemes[API_KEY]["name"]),
        (&Value::from("header"), &Value::from("x-api-key"))
    );
    // --metrics-require-key: /metrics too.
    let json = serde_json::to_value(document(&keyed(true))).expect("serializes");
    assert_eq!(security(&json, "/metrics", "get"), both);
    // No key configured: nothing asks for one.
    let json = serde_json::to_value(document(&AuthConfig::default())).expect("serializes");
    for r in crate::api::routes() {
        let method = r.method.as_str().to_lowercase();
        let path = openapi_path(r.path);
        assert_eq!(security(&json, &path, &method), Vec::<String>::new());
        assert!(json["paths"][&path][&method]["responses"]["401"].is_null());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_it_behind_the_keys() {
    let state = AppState::with_auth("m", 1 << 20, keyed(false));
    let app = crate::api::router(state);
    let get = |key: Option<&str>| {
        let mut req = Request::get("/openapi.json");
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).expect("a request"))
    };
    let refused = get(None).await.expect("answers");
    assert_eq!(refused.status().as_u16(), 401);
    let resp = get(Some("sk-test")).await.expect("answers");
    assert_eq!(resp.status().as_u16(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    let json: Value = serde_json::from_slice(&bytes).expect("JSON");
    let want = serde_json::to_value(document(&keyed(false))).expect("serializes");
    assert_eq!(json, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_a_405_in_the_envelope() {
    let app = crate::api::router(AppState::new("m", 1 << 20));
    let req = Request::get("/v1/chat/completions").body(Body::empty());
    let resp = app.oneshot(req.expect("a request")).await.expect("answers");
    assert_eq!(resp.status().as_u16(), 405);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a body");
    let json: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(json["error"]["type"], "invalid_request_error");
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                out.push(r);
            }
            o.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Regression: `Tokens`' hand-written schema referred to `Piece` without registering it.
#[test]
fn every_reference_resolves() {
    let json = serde_json::to_value(document(&keyed(true))).expect("serializes");
    let mut all = Vec::new();
    refs(&json, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let pointer = r.strip_prefix('#').expect("a local reference");
        assert!(json.pointer(pointer).is_some(), "{r} resolves to nothing");
    }
}

/// The ranges the document states are the ones validation checks.
#[test]
fn documented_limits_are_the_servers() {
    let json = serde_json::to_value(document(&AuthConfig::default())).expect("serializes");
    let schemas = &json["components"]["schemas"];
    let common = &schemas["CommonParams"]["properties"];
    assert_eq!(common["n"]["maximum"], crate::engine::MAX_N as u64);
    assert_eq!(common["n"]["minimum"], 1);
    let chat = &schemas["ChatCompletionRequest"]["allOf"][1]["properties"];
    let max_top = crate::sampling::MAX_TOP_LOGPROBS as u64;
    assert_eq!(chat["top_logprobs"]["maximum"], max_top);
    let completion = &schemas["CompletionRequest"]["allOf"][1]["properties"];
    assert_eq!(completion["logprobs"]["maximum"], max_top);
    assert_eq!(common["temperature"]["maximum"], 2);
}
