//! Several models in one server: the model registry over two tiny GGUFs of
//! `tests/data/archs/` (a llama and a qwen2, loaded by the real `FileLoader` in ms), behind the
//! real router. Each model answers its own requests (also at once); `--max-loaded-models 1`
//! and a memory budget unload the least recently used and reload it with the same greedy
//! text; an unload waits for the requests that hold the model; a request during a load waits
//! (or gets a 503 with Retry-After past the load timeout); an unknown model is a 404 naming
//! the served ones.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use candle_core::Device;
use serde_json::{json, Value};
use wick::api::registry::{LoadedServed, Loader, ModelSpec, Registry, RegistryLimits};
use wick::api::{AppState, HttpOptions};
use wick::commands::serve::{source_bytes, FileLoader};
use wick::engine::{Event, FinishReason};

use crate::common::{post, tiny_config, TestServer};

fn arch(name: &str) -> String {
    format!(
        "{}/tests/data/archs/{name}.gguf",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `a` (the default) is the tiny llama, `b` the tiny qwen2.
fn specs() -> Vec<ModelSpec> {
    [("a", "llama"), ("b", "qwen2")]
        .into_iter()
        .map(|(name, file)| ModelSpec {
            name: name.into(),
            source: arch(file),
        })
        .collect()
}

fn files() -> FileLoader {
    FileLoader {
        device: Device::Cpu,
        engine: tiny_config(),
        max_tokens_cap: None,
    }
}

/// [`FileLoader`], but the load of `gated` waits until the test sends on the gate.
struct Gated {
    inner: FileLoader,
    gated: &'static str,
    gate: Mutex<mpsc::Receiver<()>>,
}

impl Loader for Gated {
    fn load(&self, spec: &ModelSpec) -> Result<LoadedServed, String> {
        if spec.name == self.gated {
            let gate = self.gate.lock().map_err(|_| "gate poisoned".to_string())?;
            gate.recv().map_err(|_| "gate closed".to_string())?;
        }
        self.inner.load(spec)
    }
}

async fn serve(loader: Arc<dyn Loader>, limits: RegistryLimits) -> TestServer {
    let registry = Registry::new(specs(), 0, loader, limits).expect("registry");
    let state = AppState::with_registry(registry.clone(), HttpOptions::default());
    let server = TestServer::start(state).await;
    registry
        .load_default()
        .await
        .expect("the default model loads");
    server
}

/// The greedy completion of `model` (`None`: the field omitted): its status and body.
async fn complete(url: &str, model: Option<&str>) -> (u16, Value) {
    let mut body = json!({"prompt": "Hello world", "max_tokens": 12, "temperature": 0});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let resp = post(&format!("{url}/v1/completions"), body).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

/// The text of a greedy completion that must succeed, and the model that answered.
async fn text(url: &str, model: Option<&str>) -> (String, String) {
    let (status, body) = complete(url, model).await;
    assert_eq!(status, 200, "{body}");
    let text = body["choices"][0]["text"].as_str().expect("text");
    let answered = body["model"].as_str().expect("model");
    (text.to_string(), answered.to_string())
}

/// Each model's state in `/v1/models`, in its order.
async fn states(url: &str) -> Vec<(String, String)> {
    let list: Value = reqwest::get(format!("{url}/v1/models"))
        .await
        .expect("models")
        .json()
        .await
        .expect("JSON");
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            let id = m["id"].as_str().expect("id").to_string();
            (id, m["state"].as_str().expect("state").to_string())
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn two_models_answer_their_own_requests_at_once() {
    let server = serve(Arc::new(files()), RegistryLimits::default()).await;
    let url = server.url.clone();
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "unloaded")])
    );
    // Alone first: each model's own greedy text.
    let alone_a = text(&url, Some("a")).await;
    let alone_b = text(&url, Some("b")).await;
    assert_eq!((alone_a.1.as_str(), alone_b.1.as_str()), ("a", "b"));
    assert_ne!(alone_a.0, alone_b.0, "two different models");
    // Then at once, several each: every answer is its own model's.
    let runs = (0..3).flat_map(|_| ["a", "b"]).map(|m| {
        let url = url.clone();
        async move { (m, text(&url, Some(m)).await) }
    });
    for (m, got) in futures_util::future::join_all(runs).await {
        let want = if m == "a" { &alone_a } else { &alone_b };
        assert_eq!(&got, want, "model {m}");
    }
    // An omitted model is the default.
    assert_eq!(text(&url, None).await, alone_a);
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "loaded")])
    );
    server.stop().await;
}

#[tokio::test]
async fn max_loaded_one_unloads_the_least_recently_used_and_reloads_it() {
    let limits = RegistryLimits {
        max_loaded: Some(1),
        ..RegistryLimits::default()
    };
    let server = serve(Arc::new(files()), limits).await;
    let url = server.url.clone();
    let first_a = text(&url, Some("a")).await;
    let engine_a = server.state.engine().expect("a is loaded");
    let b = text(&url, Some("b")).await;
    assert_eq!(b.1, "b");
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "unloaded"), ("b", "loaded")])
    );
    // a's engine has stopped: its worker (and with it the weights and KV pool) is gone.
    assert!(engine_a.stats().kv_cache_bytes > 0);
    let probe = wick::engine::ValidRequest::greedy(vec![1, 2, 3], 1);
    assert!(engine_a.submit(probe).is_err(), "a's engine was shut down");
    assert!(server.state.engine().is_none(), "the default is not loaded");
    // Back to a: b goes, a comes back with the same greedy text.
    assert_eq!(text(&url, Some("a")).await, first_a);
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "unloaded")])
    );
    assert_eq!(text(&url, Some("b")).await, b);
    server.stop().await;
}

#[tokio::test]
async fn a_memory_budget_for_one_model_unloads_the_other() {
    // Room for the larger of the two (weights + its KV pool), never for both.
    let kv = tiny_config().kv_cache_bytes.expect("a KV size");
    let largest = specs()
        .iter()
        .map(|s| source_bytes(&s.source))
        .max()
        .expect("two");
    let limits = RegistryLimits {
        max_memory: Some(largest + kv),
        ..RegistryLimits::default()
    };
    let server = serve(Arc::new(files()), limits).await;
    let url = server.url.clone();
    let first_a = text(&url, Some("a")).await;
    text(&url, Some("b")).await;
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "unloaded"), ("b", "loaded")])
    );
    assert_eq!(text(&url, None).await, first_a);
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "unloaded")])
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unload_waits_for_the_requests_holding_the_model() {
    let limits = RegistryLimits {
        max_loaded: Some(1),
        ..RegistryLimits::default()
    };
    let server = serve(Arc::new(files()), limits).await;
    let url = server.url.clone();
    // A handler in the middle of a request on `a` holds it.
    let held = server.state.served_for(Some("a")).await.expect("a");
    let want_b = {
        let url = url.clone();
        tokio::spawn(async move { text(&url, Some("b")).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "unloading"), ("b", "loading")])
    );
    assert!(!want_b.is_finished(), "b waits for a's request");
    // The held model still serves its request.
    let req = wick::engine::ValidRequest::greedy(vec![1, 2, 3], 4);
    let mut events = held.engine.submit(req).expect("a still admits its request");
    drop(held);
    let mut tokens = 0;
    let finish = loop {
        match events.recv().await.expect("an event") {
            Event::Token { .. } => tokens += 1,
            Event::Finished { finish, .. } => break finish.reason,
            other => panic!("a's request: {other:?}"),
        }
    };
    assert_eq!(
        (finish, tokens),
        (FinishReason::Length, 4),
        "never cut short"
    );
    let b = tokio::time::timeout(Duration::from_secs(30), want_b)
        .await
        .expect("b loads once a is free")
        .expect("task");
    assert_eq!(b.1, "b");
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "unloaded"), ("b", "loaded")])
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_during_a_load_waits_then_completes_or_gets_503_past_the_timeout() {
    let (open, gate) = mpsc::channel();
    let loader = Gated {
        inner: files(),
        gated: "b",
        gate: Mutex::new(gate),
    };
    let limits = RegistryLimits {
        load_timeout: Duration::from_millis(400),
        ..RegistryLimits::default()
    };
    let server = serve(Arc::new(loader), limits).await;
    let url = server.url.clone();
    // Past the timeout: 503 model_loading with Retry-After, and b still loading.
    let resp = post(
        &format!("{url}/v1/completions"),
        json!({"model": "b", "prompt": "Hello", "max_tokens": 2}),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "model_loading", "{body}");
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "loading")])
    );
    // The default model answers meanwhile.
    assert_eq!(text(&url, None).await.1, "a");
    // A request that arrives during the load waits, and completes once it is done.
    let waiting = {
        let url = url.clone();
        tokio::spawn(async move { complete(&url, Some("b")).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    open.send(()).expect("open the gate");
    let (status, body) = waiting.await.expect("task");
    assert_eq!((status, body["model"].as_str()), (200, Some("b")), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_model_is_a_404_naming_the_served_ones() {
    let server = serve(Arc::new(files()), RegistryLimits::default()).await;
    let url = server.url.clone();
    let (status, body) = complete(&url, Some("nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
    let msg = body["error"]["message"].as_str().expect("message");
    assert!(msg.contains("`nope`") && msg.contains("a, b"), "{msg}");
    let resp = reqwest::get(format!("{url}/v1/models/nope"))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.expect("JSON");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("a, b"));
    // A served one, unloaded: its card, loading nothing.
    let card: Value = reqwest::get(format!("{url}/v1/models/b"))
        .await
        .expect("get")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        (&card["id"], &card["state"], &card["default"]),
        (&json!("b"), &json!("unloaded"), &json!(false))
    );
    assert!(card["max_model_len"].is_null());
    assert_eq!(
        states(&url).await,
        pairs(&[("a", "loaded"), ("b", "unloaded")])
    );
    server.stop().await;
}

#[tokio::test]
async fn a_model_that_cannot_load_is_a_500_naming_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"not a gguf").expect("write");
    let mut models = specs();
    models[1].source = bad.to_str().expect("utf-8").to_string();
    let registry =
        Registry::new(models, 0, Arc::new(files()), RegistryLimits::default()).expect("registry");
    let server = TestServer::start(AppState::with_registry(
        registry.clone(),
        HttpOptions::default(),
    ))
    .await;
    registry.load_default().await.expect("a loads");
    let (status, body) = complete(&server.url, Some("b")).await;
    assert_eq!(status, 500, "{body}");
    let msg = body["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("`b` could not be loaded") && msg.contains("bad.gguf"),
        "{msg}"
    );
    assert_eq!(
        states(&server.url).await,
        pairs(&[("a", "loaded"), ("b", "unloaded")])
    );
    server.stop().await;
}
