//! The access log: one line per request, written when its response body is done (sent to the
//! end, or dropped because the client left), so that a stream's line carries its tokens, its
//! time to first token and its finish reasons. The `wick::access` target, at `info`; JSON with
//! `--log-format json`. The request's trace ([`super::trace`]) starts and ends here too, from
//! the same record, and the line names its trace id. The same moment, a model route's request
//! hands its usage row to the usage writer's queue ([`crate::store::UsageLog::push`], which
//! never blocks). Runs on the connection's task; nothing here blocks.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use super::auth::ApiKeyName;
use super::trace::{ChoiceTimes, RequestTrace};
use super::{AppState, RequestId};
use crate::store::{UsageLog, UsageRow};

/// The routes that run the model: their requests get a usage row (health checks, scrapes,
/// model lists and tokenizer calls do not).
pub const USAGE_ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
];

/// What a generating response adds to its line, filled in as its events pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    /// When the first token of any choice passed.
    pub first_token: Option<Instant>,
    /// Each finished choice's reason, as the engine gave it.
    pub finish_reasons: Vec<&'static str>,
    /// The `max_tokens` the engine got (the request's, or the default), for the trace.
    pub max_tokens: Option<usize>,
    /// Each finished choice's engine timings, for the trace's queue / prefill / decode spans.
    pub choices: Vec<ChoiceTimes>,
}

/// The shared record of one request, in its extensions (handlers hand it to the response's
/// recorder).
#[derive(Debug, Clone, Default)]
pub struct AccessNote(Arc<Mutex<Record>>);

impl AccessNote {
    pub fn update(&self, f: impl FnOnce(&mut Record)) {
        match self.0.lock() {
            Ok(mut r) => f(&mut r),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// A copy of the record as it stands.
    pub fn get(&self) -> Record {
        match self.0.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// The line of one request, written on drop.
struct Line {
    start: Instant,
    request_id: String,
    method: String,
    path: String,
    status: u16,
    key: Option<Arc<str>>,
    client: Option<SocketAddr>,
    note: AccessNote,
    /// Taken when the line is written.
    trace: Option<RequestTrace>,
    /// Where the usage row goes, and the model it names; `None` off the model routes or
    /// when usage is not recorded.
    usage: Option<(UsageLog, String)>,
    /// Arrival, unix seconds (the usage row's time).
    arrived: i64,
}

impl Line {
    /// The usage row of this request, pushed to the writer's queue. A refused key's 401 is
    /// nobody's usage and gets none; nor does a WebSocket handshake (101), whose turns have
    /// rows of their own ([`TurnLog`]).
    fn push_usage(&self, r: &Record, duration_ms: f64, ttft_ms: Option<f64>) {
        let Some((log, model)) = &self.usage else {
            return;
        };
        if matches!(self.status, 101 | 401) {
            return;
        }
        log.push(UsageRow {
            ts: self.arrived,
            request_id: self.request_id.clone(),
            key: self.key.clone(),
            route: self.path.clone(),
            model: model.clone(),
            status: self.status,
            prompt_tokens: r.prompt_tokens as u64,
            cached_tokens: r.cached_tokens as u64,
            completion_tokens: r.completion_tokens as u64,
            duration_ms,
            ttft_ms,
            finish_reasons: r.finish_reasons.join(","),
        });
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let r = self.note.get();
        let trace = self.trace.take();
        let trace_id = trace
            .as_ref()
            .map_or_else(|| "-".into(), RequestTrace::trace_id);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let (ttft_ms, duration_ms) = (
            r.first_token.map(|t| ms(t - self.start)),
            ms(self.start.elapsed()),
        );
        tracing::info!(
            target: "wick::access",
            request_id = %self.request_id,
            trace_id = %trace_id,
            method = %self.method,
            path = %self.path,
            status = self.status,
            key = self.key.as_deref().unwrap_or("-"),
            client = %self.client.map_or("-".to_string(), |c| c.to_string()),
            prompt_tokens = r.prompt_tokens,
            cached_tokens = r.cached_tokens,
            completion_tokens = r.completion_tokens,
            ttft_ms,
            duration_ms,
            finish_reason = %r.finish_reasons.join(","),
            "request"
        );
        if let Some(t) = trace {
            t.end(self.status, &r);
        }
        self.push_usage(&r, duration_ms, ttft_ms);
    }
}

/// The access line and usage row of one WebSocket turn (a `response.create` on a Responses
/// socket), written when it is dropped: when the turn's events are done (sent to the end, or
/// dropped because the client left or the server closed). The line's method is `WS`, its path
/// `/v1/responses`, its status the turn's (200, or the error event's). Turns have no trace span
/// of their own.
pub struct TurnLog {
    line: Line,
}

impl TurnLog {
    /// A turn of `key`'s socket from `client`, starting now; its record is [`TurnLog::note`].
    pub fn begin(state: &AppState, key: Option<Arc<str>>, client: Option<SocketAddr>) -> Self {
        let path = "/v1/responses".to_string();
        let usage = usage_for(state, &path);
        Self {
            line: Line {
                start: Instant::now(),
                request_id: crate::store::new_id("req_"),
                method: "WS".into(),
                path,
                status: 200,
                key,
                client,
                note: AccessNote::default(),
                trace: None,
                usage,
                arrived: super::unix_now() as i64,
            },
        }
    }

    /// The turn's record, for its response's recorder and its key's limits.
    pub fn note(&self) -> AccessNote {
        self.line.note.clone()
    }

    /// The turn ended with `status` (an error event's) rather than 200.
    pub fn set_status(&mut self, status: u16) {
        self.line.status = status;
    }
}

/// `resp` with `guard` dropped when its body is done (sent to the end, or dropped because the
/// client left), after the body itself. The access log and the key limits run their
/// end-of-request work in such a guard's `Drop`.
pub fn on_body_done<G: Send + Unpin + 'static>(resp: Response, guard: G) -> Response {
    let (parts, inner) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner,
            _guard: guard,
        }),
    )
}

/// A response body and what drops after it.
struct Guarded<G> {
    // Fields drop in order: the body (whose stream's recorder fills in the note's last
    // counts as it goes) before the guard.
    inner: Body,
    _guard: G,
}

impl<G: Send + Unpin + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request on `path` sends its usage row, and the model it names: `None` off the
/// model routes or when usage is not recorded.
fn usage_for(state: &AppState, path: &str) -> Option<(UsageLog, String)> {
    let log = state.options().usage.as_ref()?;
    USAGE_ROUTES
        .contains(&path)
        .then(|| (log.clone(), state.model_name().to_string()))
}

/// The router's middleware: notes the request, starts its trace, and logs its line (ends the
/// trace, queues its usage row) once its body is done. The key's name comes back from the auth
/// middleware in the response's extensions.
pub async fn log(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let arrived = super::unix_now() as i64;
    let trace = RequestTrace::start(
        state.options().tracer.as_ref(),
        &req,
        state.model_name(),
        start,
    );
    let note = AccessNote::default();
    req.extensions_mut().insert(note.clone());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map_or_else(String::new, |r| r.0.clone());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let usage = usage_for(&state, &path);
    let resp = next.run(req).await;
    let line = Line {
        start,
        request_id,
        method,
        path,
        status: resp.status().as_u16(),
        key: resp
            .extensions()
            .get::<ApiKeyName>()
            .map(|k| k.name.clone()),
        client,
        note,
        trace: Some(trace),
        usage,
        arrived,
    };
    on_body_done(resp, line)
}
