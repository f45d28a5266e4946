//! The HTTP boundary: axum lives only here. [`router`] builds the OpenAI-compatible routes over
//! an [`AppState`]; tests call it directly. Handlers run on tokio tasks; templates and
//! tokenization go to `spawn_blocking`; the engine worker only ever sees token ids.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod generate;
pub mod health;
pub mod models;
pub mod openai;
mod serve;
pub mod sse;
pub mod stop;
pub mod tokenize;
pub mod tool_parse;
pub mod tools;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};

use crate::constraint::GrammarCompiler;
use crate::engine::EngineHandle;
use crate::tokenizer::{ChatTemplate, Tokenizer};
use error::ApiError;
use generate::Out;
pub use serve::serve;
use sse::ChunkEncoder;

/// Default request body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 << 20;
/// Interval of `: keep-alive` comments on idle streams.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The loaded model, once it is ready.
pub struct Served {
    pub engine: EngineHandle,
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub template: Option<Arc<ChatTemplate>>,
    /// Tokens one sequence may hold: the context, capped by the KV cache.
    pub max_tokens_total: usize,
    /// The model's context length.
    pub max_context: usize,
    /// Compiles `response_format` and tool-call grammars over the model's vocabulary; `None`
    /// without a tokenizer (constrained requests then get a 400).
    pub grammar: Option<Arc<GrammarCompiler>>,
}

impl Served {
    /// Derives the limits and builds the grammar compiler (it indexes the whole vocabulary:
    /// call it off the async threads).
    pub fn new(
        engine: EngineHandle,
        tokenizer: Option<Arc<Tokenizer>>,
        template: Option<Arc<ChatTemplate>>,
        max_context: usize,
    ) -> Self {
        let grammar = tokenizer.as_ref().and_then(|t| {
            GrammarCompiler::from_tokenizer(t.clone())
                .map_err(|e| tracing::warn!(error = %e, "constrained decoding is off"))
                .ok()
                .map(Arc::new)
        });
        Self {
            max_tokens_total: max_context.min(engine.capacity_tokens()),
            engine,
            tokenizer,
            template,
            max_context,
            grammar,
        }
    }

    /// What request validation reads, owned, to move onto a blocking thread.
    pub fn validation(&self) -> Validation {
        Validation {
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            grammar: self.grammar.clone(),
            max_tokens_total: self.max_tokens_total,
        }
    }
}

/// The model facts of [`crate::validate::Limits`], owned (shared pointers).
pub struct Validation {
    tokenizer: Option<Arc<Tokenizer>>,
    template: Option<Arc<ChatTemplate>>,
    grammar: Option<Arc<GrammarCompiler>>,
    max_tokens_total: usize,
}

impl Validation {
    pub fn limits(&self) -> crate::validate::Limits<'_> {
        crate::validate::Limits {
            tokenizer: self.tokenizer.as_deref(),
            template: self.template.as_deref(),
            grammar: self.grammar.as_deref(),
            max_tokens_total: self.max_tokens_total,
        }
    }
}

struct Inner {
    /// The name requests must use in `model`.
    model_name: String,
    served: OnceLock<Served>,
    draining: AtomicBool,
    max_body_bytes: usize,
    created: u64,
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// A server for `model_name`, not ready until [`AppState::set_ready`].
    pub fn new(model_name: impl Into<String>, max_body_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                model_name: model_name.into(),
                served: OnceLock::new(),
                draining: AtomicBool::new(false),
                max_body_bytes,
                created: unix_now(),
            }),
        }
    }

    /// The model has loaded: start serving. A second call is ignored.
    pub fn set_ready(&self, served: Served) {
        let _ = self.inner.served.set(served);
    }

    /// Stop admitting requests: everything but in-flight streams gets 503.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }

    /// The model, or 503 while loading or draining.
    pub fn served(&self) -> Result<&Served, ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Draining);
        }
        self.inner.served.get().ok_or(ApiError::Loading)
    }

    /// The engine, whatever the state (for shutdown and tests).
    pub fn engine(&self) -> Option<&EngineHandle> {
        self.inner.served.get().map(|s| &s.engine)
    }

    /// 404 unless `model` is absent or the served name.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.inner.model_name => Err(ApiError::ModelNotFound(m.to_string())),
            _ => Ok(()),
        }
    }
}

/// The routes, with body limit, panic catching and `x-request-id`.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get_one))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/health", get(health::health))
        .fallback(|| async {
            ApiError::invalid("no such route", None).with_status(StatusCode::NOT_FOUND)
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

impl ApiError {
    fn with_status(self, status: StatusCode) -> Response {
        let mut r = self.into_response();
        *r.status_mut() = status;
        r
    }
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal("internal error".into()).into_response()
}

/// The request's id, echoed from `x-request-id` or generated.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Parses a JSON body: 413 over the limit, 400 for bad JSON or wrong types.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge(format!("the request body is over the limit: {e}"))
        } else {
            ApiError::invalid(format!("reading the body: {e}"), None)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg = match e.classify() {
            serde_json::error::Category::Data => format!("invalid request: {e}"),
            _ => format!("malformed JSON: {e}"),
        };
        ApiError::invalid(msg, None)
    })
}

/// Runs CPU work (templates, tokenization) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("a blocking task failed: {e}")))?
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `system_fingerprint`.
pub fn fingerprint() -> String {
    format!("fp_wick_{}", env!("CARGO_PKG_VERSION"))
}

/// The outs of several engine requests, merged.
pub fn merge(rxs: Vec<generate::Receiver>) -> BoxStream<'static, Out> {
    futures_util::stream::select_all(rxs.into_iter().map(UnboundedReceiverStream::new)).boxed()
}

/// Every out until all `total` choices finished; `Err` on a failure.
pub async fn collect(
    mut outs: BoxStream<'static, Out>,
    total: usize,
) -> Result<Vec<Out>, ApiError> {
    let mut all = Vec::new();
    let mut finished = 0;
    while finished < total {
        match outs.next().await {
            Some(Out::Error(e)) => return Err(ApiError::Internal(e)),
            Some(o) => {
                finished += usize::from(matches!(o, Out::Finish { .. }));
                all.push(o);
            }
            None => return Err(ApiError::Internal("the engine stopped".into())),
        }
    }
    Ok(all)
}

/// An SSE response: the encoder's chunks, `[DONE]` after all `total` choices finished, one
/// `data: {"error":...}` on a failure. A task feeds the body; when the client goes away (hyper
/// sees the connection close even while nothing is written, and drops the body) the task
/// returns at once, and the engine requests are dropped (cancelled).
pub fn sse_response<E: ChunkEncoder>(
    mut outs: BoxStream<'static, Out>,
    mut enc: E,
    total: usize,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let data = |v: serde_json::Value| SseEvent::default().data(v.to_string());
    tokio::spawn(async move {
        for c in enc.start() {
            if tx.send(data(c)).await.is_err() {
                return;
            }
        }
        let mut finished = 0;
        while finished < total {
            let out = tokio::select! {
                out = outs.next() => out,
                () = tx.closed() => return,
            };
            let chunks = match out {
                Some(Out::Error(e)) => {
                    let _ = tx.send(data(ApiError::Internal(e).body())).await;
                    return;
                }
                None => {
                    let err = ApiError::Internal("the engine stopped".into());
                    let _ = tx.send(data(err.body())).await;
                    return;
                }
                Some(o) => {
                    finished += usize::from(matches!(o, Out::Finish { .. }));
                    enc.on(o)
                }
            };
            for c in chunks {
                if tx.send(data(c)).await.is_err() {
                    return;
                }
            }
        }
        for c in enc.end() {
            if tx.send(data(c)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(SseEvent::default().data("[DONE]")).await;
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(" keep-alive"))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_after_the_stream_began_is_one_error_event_then_the_end() {
        let outs = futures_util::stream::iter(vec![
            Out::Delta {
                index: 0,
                text: "a".into(),
                tokens: vec![],
            },
            Out::Error("the forward step failed".into()),
        ])
        .boxed();
        let enc = sse::ChatEncoder {
            meta: sse::Meta {
                id: "x".into(),
                created: 0,
                model: "m".into(),
                fingerprint: "f".into(),
            },
            n: 1,
            tokenizer: None,
            logprobs: false,
            include_usage: true,
            usage: sse::UsageAcc::default(),
        };
        let resp = sse_response(outs, enc, 1);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect();
        assert_eq!(data.len(), 3, "{text}");
        let err: serde_json::Value = serde_json::from_str(data[2]).expect("json");
        assert_eq!(err["error"]["message"], "the forward step failed");
        assert!(!text.contains("[DONE]"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_handler_gets_500_and_the_server_lives_on() {
        let app: Router = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            )
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/boom", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        for _ in 0..2 {
            let r = reqwest::get(&url).await.expect("the server answers");
            assert_eq!(r.status().as_u16(), 500);
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["error"]["type"], "server_error");
        }
        server.abort();
    }
}
