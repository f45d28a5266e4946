//! Request traces (OpenTelemetry): one SERVER span per request, named after its operation and
//! the model (`chat smol`, `text_completion smol`, `embeddings smol`; other routes
//! `{METHOD} {route}`; `/health*` and `/metrics` none), with the GenAI semantic conventions'
//! attributes, and per finished choice three children `queue`, `prefill` and `decode`, built
//! after the fact from the engine's [`Timings`]. An incoming W3C `traceparent` (and
//! `tracestate`) is the server span's parent.
//!
//! The access log middleware ([`super::access::log`]) starts a [`RequestTrace`] before the
//! handler runs and ends it when the response body is done, from the same [`Record`] its log
//! line is written from (the response's recorder adds each choice's [`ChoiceTimes`]). Runs on
//! the connection's task. Ending a span hands it to the SDK's batch processor, a bounded queue
//! that a thread of its own exports from (see `telemetry::traces`): nothing here waits on the
//! collector.

use std::time::{Duration, Instant, SystemTime};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, TraceId, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

use super::access::Record;
use crate::engine::Timings;

/// One finished choice's engine timings, as the response's recorder saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChoiceTimes {
    /// The engine request (a completions request with several prompts has one per prompt).
    pub request: usize,
    /// The choice within it.
    pub index: usize,
    /// Submit to admission, first token and finish.
    pub timings: Timings,
    /// When its finish reached the response (its submit was `total` before, give or take the
    /// channel's delay).
    pub seen: Instant,
}

/// The GenAI operation a route performs (`None`: a plain HTTP route).
fn gen_ai_operation(route: &str) -> Option<&'static str> {
    match route {
        "/v1/chat/completions" => Some("chat"),
        "/v1/completions" => Some("text_completion"),
        "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// Probes and scrapes get no span: they come every few seconds and would drown the traces.
fn untraced(route: &str) -> bool {
    route.starts_with("/health") || route == "/metrics"
}

/// The parent an incoming `traceparent` (with its `tracestate`) names; an empty context when
/// there is none or it is malformed.
pub fn incoming(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(headers))
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Instants on the span clock: the request's start in both clocks, so that the children's
/// times, computed from `Instant`s, fall exactly inside the server span.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    fn at(&self, t: Instant) -> SystemTime {
        let d = t.saturating_duration_since(self.instant);
        self.system.checked_add(d).unwrap_or(self.system)
    }
}

/// A request's trace: its open server span when tracing is on and the route is traced, and
/// the trace id its access-log line names.
pub struct RequestTrace {
    span: Option<ServerSpan>,
    trace_id: Option<TraceId>,
}

/// The open server span, in its context (the children's parent).
struct ServerSpan {
    tracer: SdkTracer,
    cx: Context,
    operation: Option<&'static str>,
    clock: Clock,
}

impl RequestTrace {
    /// Starts the trace of `req` arriving at `start` (a span only with a `tracer`).
    pub fn start(tracer: Option<&SdkTracer>, req: &Request, model: &str, start: Instant) -> Self {
        let parent = incoming(req.headers());
        let remote = parent.span().span_context().clone();
        let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
        let clock = Clock {
            instant: start,
            system: SystemTime::now()
                .checked_sub(start.elapsed())
                .unwrap_or_else(SystemTime::now),
        };
        let span = tracer
            .filter(|_| !route.is_some_and(untraced))
            .map(|t| ServerSpan::start(t, &parent, req, route, model, clock));
        let trace_id = match &span {
            Some(s) => Some(s.cx.span().span_context().trace_id()),
            None => remote.is_valid().then(|| remote.trace_id()),
        };
        Self { span, trace_id }
    }

    /// The trace id as 32 hex digits: the span's, else the incoming `traceparent`'s, else `-`.
    pub fn trace_id(&self) -> String {
        self.trace_id.map_or_else(|| "-".into(), |t| t.to_string())
    }

    /// Ends the span (now) with the response's `status` and what `record` gathered.
    pub fn end(self, status: u16, record: &Record) {
        if let Some(span) = self.span {
            span.end(status, record);
        }
    }
}

impl ServerSpan {
    fn start(
        tracer: &SdkTracer,
        parent: &Context,
        req: &Request,
        route: Option<&str>,
        model: &str,
        clock: Clock,
    ) -> Self {
        let method = method_name(req.method());
        let operation = route.and_then(gen_ai_operation);
        let name = match (operation, route) {
            (Some(op), _) => format!("{op} {model}"),
            (None, Some(route)) => format!("{method} {route}"),
            (None, None) => method.to_string(),
        };
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", req.uri().path().to_string()),
        ];
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.to_string()));
        }
        if let Some(op) = operation {
            attributes.push(KeyValue::new("gen_ai.operation.name", op));
            attributes.push(KeyValue::new("gen_ai.request.model", model.to_string()));
        }
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(clock.system)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Self {
            tracer: tracer.clone(),
            cx: parent.with_span(span),
            operation,
            clock,
        }
    }

    fn end(self, status: u16, record: &Record) {
        let end = self.clock.at(Instant::now());
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        // A refused request (4xx) has no usage to report.
        if let Some(op) = self.operation.filter(|_| status < 400) {
            span.set_attributes(gen_ai_usage(op, record));
        }
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(format!("HTTP {status}")));
        } else if let Some(r) = record
            .finish_reasons
            .iter()
            .find(|r| matches!(**r, "error" | "shutdown"))
        {
            span.set_status(Status::error(format!("a choice ended with {r}")));
        }
        for choice in &record.choices {
            self.phases(choice);
        }
        span.end_with_timestamp(end);
    }

    /// The `queue`, `prefill` and `decode` children of one choice: submit (its finish less
    /// `total`, not before the request) to admission, to first token, to finish.
    fn phases(&self, c: &ChoiceTimes) {
        let t = c.timings;
        let submit = c
            .seen
            .checked_sub(t.total)
            .unwrap_or(self.clock.instant)
            .max(self.clock.instant);
        let at = |d: Duration| self.clock.at((submit + d).min(c.seen));
        let marks = [
            ("queue", Duration::ZERO, t.queued),
            ("prefill", t.queued, t.ttft),
            ("decode", t.ttft, t.total),
        ];
        for (name, from, to) in marks {
            let mut span = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(at(from))
                .with_attributes([
                    KeyValue::new("wick.engine_request", c.request as i64),
                    KeyValue::new("wick.choice_index", c.index as i64),
                ])
                .start_with_context(&self.tracer, &self.cx);
            opentelemetry::trace::Span::end_with_timestamp(&mut span, at(to.max(from)));
        }
    }
}

/// The GenAI attributes known once the response is done.
fn gen_ai_usage(operation: &str, r: &Record) -> Vec<KeyValue> {
    let mut out = vec![KeyValue::new(
        "gen_ai.usage.input_tokens",
        r.prompt_tokens as i64,
    )];
    if operation == "embeddings" {
        return out;
    }
    out.push(KeyValue::new(
        "gen_ai.usage.output_tokens",
        r.completion_tokens as i64,
    ));
    if let Some(m) = r.max_tokens {
        out.push(KeyValue::new("gen_ai.request.max_tokens", m as i64));
    }
    if !r.finish_reasons.is_empty() {
        let reasons = r
            .finish_reasons
            .iter()
            .map(|s| StringValue::from(*s))
            .collect();
        out.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(reasons)),
        ));
    }
    out
}

/// The method as HTTP's semantic conventions name it (`_OTHER` for a non-standard one).
fn method_name(m: &Method) -> String {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    match KNOWN.contains(m) {
        true => m.as_str().to_string(),
        false => "_OTHER".into(),
    }
}
