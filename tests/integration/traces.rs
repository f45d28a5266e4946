//! Request traces on a real server on 127.0.0.1 (the tiny model), its spans caught by an
//! in-memory exporter: one SERVER span per request with the GenAI attributes, an incoming
//! `traceparent` as its parent, queue / prefill / decode children nested inside it, plain spans
//! for other routes and none for probes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId, TracerProvider as _};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{json, Value as Json};
use wick::api::{AppState, HttpOptions};

use crate::common::{sse_data, tiny_config, tiny_served, TestServer};

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Caught(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Caught {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().expect("lock").extend(batch);
        Ok(())
    }
}

impl Caught {
    /// The spans of trace `trace`, once its server span has been exported (its response body
    /// ends a moment after the client has read it).
    async fn trace(&self, trace: TraceId) -> Vec<SpanData> {
        for _ in 0..200 {
            let spans: Vec<SpanData> = self
                .0
                .lock()
                .expect("lock")
                .iter()
                .filter(|s| s.span_context.trace_id() == trace)
                .cloned()
                .collect();
            if spans.iter().any(|s| s.span_kind == SpanKind::Server) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no server span of trace {trace}");
    }

    /// The trace of the first span named `name`, once exported.
    async fn trace_of(&self, name: &str) -> TraceId {
        for _ in 0..200 {
            let found = self
                .0
                .lock()
                .expect("lock")
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.span_context.trace_id());
            if let Some(t) = found {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no span named {name}");
    }

    fn names(&self) -> Vec<String> {
        let spans = self.0.lock().expect("lock");
        spans.iter().map(|s| s.name.to_string()).collect()
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn int(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::I64(v)) => *v,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

fn text(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Some(Value::String(v)) => v.to_string(),
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

/// A server whose spans go to the returned exporter.
async fn traced_server() -> (TestServer, Caught, SdkTracerProvider) {
    let (server, caught, provider) = traced_server_loading().await;
    server.state.set_ready(tiny_served(tiny_config()));
    (server, caught, provider)
}

/// [`traced_server`] before its model is loaded (every generating route: 503).
async fn traced_server_loading() -> (TestServer, Caught, SdkTracerProvider) {
    let caught = Caught::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(caught.clone())
        .build();
    let options = HttpOptions {
        tracer: Some(provider.tracer("wick-test")),
        ..HttpOptions::default()
    };
    let state = AppState::with_options("tiny", options);
    (TestServer::start(state).await, caught, provider)
}

/// The server span and its queue, prefill and decode children, checked for kind, parentage
/// and nesting in time.
fn server_and_phases(spans: &[SpanData]) -> (&SpanData, Vec<&SpanData>) {
    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert_eq!(server.len(), 1, "{spans:?}");
    let server = server[0];
    let children: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == server.span_context.span_id())
        .collect();
    let names: Vec<_> = children.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for want in ["queue", "prefill", "decode"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let phase = |n: &str| {
        *children
            .iter()
            .find(|s| s.name == n)
            .expect("invariant: checked above")
    };
    let (queue, prefill, decode) = (phase("queue"), phase("prefill"), phase("decode"));
    let times = [
        server.start_time,
        queue.start_time,
        queue.end_time,
        prefill.start_time,
        prefill.end_time,
        decode.start_time,
        decode.end_time,
        server.end_time,
    ];
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(children.iter().all(|c| !c.parent_span_is_remote));
    (server, vec![queue, prefill, decode])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_request_gets_a_server_span_under_its_traceparent_with_phases() {
    let (server, caught, _provider) = traced_server().await;
    let (trace, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .json(
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
            "temperature": 0}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let body: Json = r.json().await.expect("json");
    let spans = caught.trace(TraceId::from_hex(trace).expect("hex")).await;
    let (s, _) = server_and_phases(&spans);
    assert_eq!(s.name, "chat tiny");
    assert_eq!(s.parent_span_id, SpanId::from_hex(parent).expect("hex"));
    assert!(s.parent_span_is_remote);
    assert_eq!(text(s, "gen_ai.operation.name"), "chat");
    assert_eq!(text(s, "gen_ai.request.model"), "tiny");
    assert_eq!(int(s, "gen_ai.request.max_tokens"), 5);
    let usage = &body["usage"];
    assert_eq!(
        int(s, "gen_ai.usage.input_tokens"),
        usage["prompt_tokens"].as_i64().expect("usage")
    );
    assert_eq!(
        int(s, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().expect("usage")
    );
    let reason = body["choices"][0]["finish_reason"]
        .as_str()
        .expect("reason");
    assert_eq!(
        attr(s, "gen_ai.response.finish_reasons"),
        Some(&Value::Array(Array::String(vec![reason
            .to_string()
            .into()])))
    );
    assert_eq!(text(s, "http.request.method"), "POST");
    assert_eq!(text(s, "url.path"), "/v1/chat/completions");
    assert_eq!(int(s, "http.response.status_code"), 200);
    assert_eq!(s.status, Status::Unset);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_completions_with_two_choices_get_phases_per_choice_in_a_new_trace() {
    let (server, caught, _provider) = traced_server().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", server.url))
        .json(
            &json!({"prompt": [1, 2, 3], "max_tokens": 4, "n": 2, "stream": true,
            "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let data = sse_data(&r.text().await.expect("body"));
    let usage: Json = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Json>(d).ok())
        .find(|c| c["usage"].is_object())
        .expect("a usage chunk")["usage"]
        .clone();
    let trace = caught.trace_of("text_completion tiny").await;
    let spans = caught.trace(trace).await;
    let s = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("server span");
    assert_eq!(s.parent_span_id, SpanId::INVALID, "a root span");
    assert_eq!(text(s, "gen_ai.operation.name"), "text_completion");
    assert_eq!(
        int(s, "gen_ai.usage.output_tokens"),
        usage["completion_tokens"].as_i64().expect("usage")
    );
    let phases: Vec<_> = spans
        .iter()
        .filter(|c| c.parent_span_id == s.span_context.span_id())
        .collect();
    assert_eq!(phases.len(), 6, "three per choice: {phases:?}");
    for choice in [0, 1] {
        let mine: Vec<_> = phases
            .iter()
            .filter(|p| int(p, "wick.choice_index") == choice)
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(mine.len(), 3, "{mine:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_routes_get_plain_spans_and_probes_none() {
    let (server, caught, _provider) = traced_server().await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/health", server.url))
        .send()
        .await
        .expect("health");
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(r.status().as_u16(), 200);
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = client
        .get(format!("{}/v1/models", server.url))
        .header("traceparent", format!("00-{trace}-{parent}-01"))
        .send()
        .await
        .expect("models");
    assert_eq!(r.status().as_u16(), 200);
    let spans = caught.trace(TraceId::from_hex(trace).expect("hex")).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, "GET /v1/models");
    assert!(attr(&spans[0], "gen_ai.operation.name").is_none());
    assert_eq!(
        caught.names(),
        ["GET /v1/models"],
        "no span for /health or /metrics"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_sets_the_span_status_to_error_and_reports_no_usage() {
    let (server, caught, _provider) = traced_server_loading().await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 503, "still loading");
    let trace = caught.trace_of("chat tiny").await;
    let spans = caught.trace(trace).await;
    assert_eq!(spans.len(), 1, "no engine request, no phases: {spans:?}");
    let s = &spans[0];
    assert_eq!(int(s, "http.response.status_code"), 503);
    assert!(matches!(s.status, Status::Error { .. }), "{:?}", s.status);
    assert!(attr(s, "gen_ai.usage.input_tokens").is_none());
    assert_eq!(text(s, "gen_ai.operation.name"), "chat");
    server.stop().await;
}
