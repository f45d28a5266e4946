//! [`AppState`], shared by every handler: the served model name, readiness, draining, the HTTP
//! options (the API keys and the usage log among them), the server's own [`Metrics`], the
//! keys' [`Limiters`], and once loaded the [`Served`] model (its engine and its request
//! [`Validator`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::auth::AuthConfig;
use super::error::ApiError;
use super::limits::Limiters;
use super::metrics::Metrics;
use super::openai::ResponseHeader;
use super::validate::Validator;
use crate::engine::EngineHandle;
use crate::store::{ResponseStore, UsageLog};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// The loaded model, once it is ready.
pub struct Served {
    pub engine: EngineHandle,
    /// Validates requests against the engine's limits, with the model's tokenizer and chat
    /// template; moved (as an `Arc`) onto the blocking thread that validates a request.
    pub validator: Arc<Validator>,
}

impl Served {
    /// Builds the validator, whose grammar compiler indexes the whole vocabulary: call it off
    /// the async threads.
    pub fn new(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        template: Option<Arc<ChatTemplate>>,
    ) -> Self {
        Self::with_max_tokens_cap(engine, tokenizer, template, None)
    }

    /// [`Served::new`] with `max_tokens` capped at `cap` for every request.
    pub fn with_max_tokens_cap(
        engine: EngineHandle,
        tokenizer: Arc<Tokenizer>,
        template: Option<Arc<ChatTemplate>>,
        cap: Option<usize>,
    ) -> Self {
        let limits = *engine.limits();
        let validator = Validator::new(tokenizer, template, limits).with_max_tokens_cap(cap);
        Self {
            engine,
            validator: Arc::new(validator),
        }
    }
}

/// How the HTTP server treats every request.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body (413 past it).
    pub max_body_bytes: usize,
    /// How long a request may take from its arrival; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_allow_origins: Vec<String>,
    /// The API keys (none: open) and which paths stay public.
    pub auth: Arc<AuthConfig>,
    /// Limits on client connections (used by [`super::serve`]).
    pub connections: super::ConnLimits,
    /// Where each request's span goes (`api::trace`); `None`: tracing off.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// Where each model request's usage row goes (`wick serve --data-dir`); `None`: usage is
    /// not recorded and `GET /v1/usage` is a 404.
    pub usage: Option<UsageLog>,
    /// Stored responses and conversations (`wick serve --data-dir`); `None`: nothing is
    /// stored, and the stored-response and conversation routes are 404s.
    pub responses: Option<ResponseStore>,
    /// Serve the web page at `/` and `/ui` ([`super::ui`]); `--no-ui` turns it off.
    pub ui: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: super::DEFAULT_MAX_BODY_BYTES,
            request_timeout: None,
            cors_allow_origins: Vec::new(),
            auth: Arc::default(),
            connections: super::ConnLimits::default(),
            tracer: None,
            usage: None,
            responses: None,
            ui: true,
        }
    }
}

struct Inner {
    /// The name requests must use in `model`.
    model_name: String,
    served: OnceLock<Served>,
    draining: AtomicBool,
    options: HttpOptions,
    created: u64,
    /// This server's metrics (per server: tests run several in one process).
    metrics: Arc<Metrics>,
    /// The per-key limits' live state.
    limiters: Limiters,
    /// Turns true when the server stops serving: open connections (upgraded WebSockets
    /// included) close; [`super::serve`] waits until every receiver is gone.
    closing: tokio::sync::watch::Sender<bool>,
    /// The background responses still running (`POST /v1/responses/{id}/cancel` finds them).
    background: super::responses::Running,
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// A server for `model_name`, open to all (no API key), not ready until
    /// [`AppState::set_ready`].
    pub fn new(model_name: impl Into<String>, max_body_bytes: usize) -> Self {
        let options = HttpOptions {
            max_body_bytes,
            ..HttpOptions::default()
        };
        Self::with_options(model_name, options)
    }

    /// [`AppState::new`] whose routes need one of `auth`'s keys.
    pub fn with_auth(
        model_name: impl Into<String>,
        max_body_bytes: usize,
        auth: AuthConfig,
    ) -> Self {
        let options = HttpOptions {
            max_body_bytes,
            auth: Arc::new(auth),
            ..HttpOptions::default()
        };
        Self::with_options(model_name, options)
    }

    /// [`AppState::new`] with every HTTP option.
    pub fn with_options(model_name: impl Into<String>, options: HttpOptions) -> Self {
        let model_name = model_name.into();
        Self {
            inner: Arc::new(Inner {
                metrics: Arc::new(Metrics::new(&model_name)),
                limiters: Limiters::new(&options.auth.keys),
                background: super::responses::Running::default(),
                model_name,
                served: OnceLock::new(),
                draining: AtomicBool::new(false),
                closing: tokio::sync::watch::Sender::new(false),
                options,
                created: unix_now(),
            }),
        }
    }

    pub fn options(&self) -> &HttpOptions {
        &self.inner.options
    }

    /// When a request arriving now must be done by, if there is a limit.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner
            .options
            .request_timeout
            .map(|t| Instant::now() + t)
    }

    /// The model has loaded: start serving. A second call is ignored.
    pub fn set_ready(&self, served: Served) {
        let _ = self.inner.served.set(served);
    }

    /// Stop admitting requests: everything but in-flight streams gets 503.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// Watches for the server's end: a connection holds one of these while it is open.
    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Tells every open connection to close, then waits until all have.
    pub(crate) async fn close_connections(&self) {
        self.inner.closing.send_replace(true);
        self.inner.closing.closed().await;
    }

    pub fn model_name(&self) -> &str {
        &self.inner.model_name
    }

    /// When the server started (the model card's `created`).
    pub fn created(&self) -> u64 {
        self.inner.created
    }

    /// This server's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Each limited key's buckets, for the limits middleware.
    pub fn limiters(&self) -> &Limiters {
        &self.inner.limiters
    }

    /// The background responses still running.
    pub fn background(&self) -> &super::responses::Running {
        &self.inner.background
    }

    /// The API keys and public paths, for the router's middleware.
    pub fn auth(&self) -> Arc<AuthConfig> {
        self.inner.options.auth.clone()
    }

    pub fn max_body_bytes(&self) -> usize {
        self.inner.options.max_body_bytes
    }

    /// The stored responses and conversations, when the server keeps them.
    pub fn responses(&self) -> Option<&ResponseStore> {
        self.inner.options.responses.as_ref()
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

    /// The header fields of a response (or chunk) `id` of type `object`, created now.
    pub fn header(&self, id: String, object: &'static str) -> ResponseHeader {
        ResponseHeader {
            id,
            object,
            created: unix_now(),
            model: self.inner.model_name.clone(),
            system_fingerprint: format!("fp_wick_{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
