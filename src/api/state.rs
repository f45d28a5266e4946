//! [`AppState`], shared by every handler: the served models ([`Registry`]: each one's
//! [`Served`], its engine and its request [`Validator`], once loaded), readiness, draining,
//! the HTTP options (the API keys and the usage log among them), the server's own
//! [`Metrics`] and the keys' [`Limiters`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::AuthConfig;
use super::error::ApiError;
use super::limits::Limiters;
use super::metrics::Metrics;
use super::openai::ResponseHeader;
use super::registry::Registry;
use super::validate::Validator;
use crate::engine::EngineHandle;
use crate::store::{ResponseStore, UsageLog};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// A loaded model. Handlers hold it as an `Arc` while they use it; an unload waits until
/// every one has let go.
pub struct Served {
    pub engine: EngineHandle,
    /// Validates requests against the engine's limits, with the model's tokenizer and chat
    /// template; moved (as an `Arc`) onto the blocking thread that validates a request.
    pub validator: Arc<Validator>,
    /// The name requests use for it (set by the registry).
    pub(super) name: String,
    /// Dropped with the last `Arc<Served>`: tells the registry's unload that no handler still
    /// holds the model.
    pub(super) released: Option<tokio::sync::oneshot::Sender<()>>,
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
            name: String::new(),
            released: None,
        }
    }

    /// The name requests use for this model.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The header fields of a response (or chunk) `id` of type `object` from this model,
    /// created now.
    pub fn header(&self, id: String, object: &'static str) -> ResponseHeader {
        header(&self.name, id, object)
    }
}

fn header(model: &str, id: String, object: &'static str) -> ResponseHeader {
    ResponseHeader {
        id,
        object,
        created: unix_now(),
        model: model.to_string(),
        system_fingerprint: format!("fp_wick_{}", env!("CARGO_PKG_VERSION")),
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
    /// The served models, by the names requests use in `model`.
    registry: Registry,
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
    /// A server for the one model `model_name`, open to all (no API key), not ready until
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
        Self::with_registry(Registry::single(model_name), options)
    }

    /// A server for `registry`'s models (the metrics are labelled with the default's name).
    pub fn with_registry(registry: Registry, options: HttpOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                metrics: Arc::new(Metrics::new(registry.default_name())),
                limiters: Limiters::new(&options.auth.keys),
                background: super::responses::Running::default(),
                registry,
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

    /// The default model has loaded: start serving. A second call is ignored.
    pub fn set_ready(&self, served: Served) {
        self.inner.registry.install(served);
    }

    /// The served models.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
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

    /// The default model's name.
    pub fn model_name(&self) -> &str {
        self.inner.registry.default_name()
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

    /// The model a request names (`None`: the default): 404 `model_not_found` naming the
    /// served ones for an unknown name, 503 while draining; loads it on first use and waits
    /// while it loads (503 with Retry-After past the load timeout).
    pub async fn served_for(&self, model: Option<&str>) -> Result<Arc<Served>, ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Draining);
        }
        self.inner.registry.get(model).await
    }

    /// The default model if it is loaded now, or 503 while loading or draining; never waits
    /// (prefer [`AppState::served_for`] with the request's `model`).
    pub fn served(&self) -> Result<Arc<Served>, ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Draining);
        }
        self.inner.registry.default_now()
    }

    /// Ready: the default model has loaded (it reloads on use if it was unloaded since) and the
    /// server is not draining; else why not, as an error.
    pub fn readiness(&self) -> Result<(), ApiError> {
        if self.inner.draining.load(Ordering::SeqCst) {
            return Err(ApiError::Draining);
        }
        match self.inner.registry.started() {
            true => Ok(()),
            false => Err(ApiError::Loading),
        }
    }

    /// The default model's engine, if it is loaded (metrics, tests).
    pub fn engine(&self) -> Option<EngineHandle> {
        self.inner.registry.default_engine()
    }

    /// 404 unless `model` is absent or a served name.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        self.inner.registry.check(model)
    }

    /// The header fields of a response (or chunk) `id` of type `object` from the default
    /// model, created now (see [`Served::header`] for the request's own model).
    pub fn header(&self, id: String, object: &'static str) -> ResponseHeader {
        header(self.model_name(), id, object)
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
