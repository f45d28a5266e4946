//! Prometheus metrics: one [`Metrics`] per server (in its `AppState`, never a process-global
//! recorder, so servers in one process do not share counts), rendered by `GET /metrics` in the
//! Prometheus text format (0.0.4), under wick's own `wick_*` names and vLLM's `vllm:*` names
//! (with a `model_name` label) for the Gateway API inference extension and vLLM dashboards.
//!
//! Three writers, all on tokio tasks: [`track`] (the router's middleware) counts requests by
//! route and status; each response's [`ResponseRecorder`], fed by the stream driver
//! (`stream::sse` / `stream::collect`) with every engine event before the endpoint machine
//! sees it, records token counts, finish reasons and the latency histograms; and a scrape
//! ([`Metrics::render`]) copies the engine's gauges and counters from an
//! [`EngineStats`] snapshot (atomics), so a scrape never waits on the engine worker, and the
//! usage writer's counters from [`UsageCounts`] (atomics too).
//! Nothing here blocks: the recorder's handles are atomics, its histograms lock-free buckets
//! drained into distributions at a response's end and at a scrape.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use super::access::AccessNote;
use super::trace::ChoiceTimes;
use super::AppState;
use crate::engine::{EngineStats, Event, FinishReason, Timings};
use crate::store::UsageCounts;

/// vLLM's `vllm:time_to_first_token_seconds` buckets.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's `vllm:inter_token_latency_seconds` buckets.
pub const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's request latency buckets (`e2e_request_latency`, `request_queue_time`).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// The latency histograms: wick's name, vLLM's name, help, buckets.
const HISTOGRAMS: [(&str, &str, &str, &[f64]); 4] = [
    (
        "wick_time_to_first_token_seconds",
        "vllm:time_to_first_token_seconds",
        "Submit to first token, per finished choice.",
        TTFT_BUCKETS,
    ),
    (
        "wick_inter_token_latency_seconds",
        "vllm:inter_token_latency_seconds",
        "Gap between a choice's consecutive tokens as the response driver receives them.",
        INTER_TOKEN_BUCKETS,
    ),
    (
        "wick_e2e_request_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "Submit to finish, per finished choice.",
        REQUEST_BUCKETS,
    ),
    (
        "wick_request_queue_time_seconds",
        "vllm:request_queue_time_seconds",
        "Submit to first admission, per finished choice.",
        REQUEST_BUCKETS,
    ),
];

/// Counters and gauges, by name, with their help lines (the histograms are in [`HISTOGRAMS`]).
const COUNTERS: &[(&str, &str)] = &[
    (
        "wick_http_requests_total",
        "HTTP requests by route and status.",
    ),
    (
        "wick_key_requests_total",
        "Requests let in, by API key name.",
    ),
    (
        "wick_key_tokens_total",
        "Tokens of requests let in, by API key name and kind (prompt, completion).",
    ),
    (
        "wick_rate_limited_total",
        "Requests refused with 429 by a key's limit, by key name and limit \
         (requests, tokens, concurrency).",
    ),
    (
        "wick_prompt_tokens_total",
        "Prompt tokens of finished requests.",
    ),
    (
        "vllm:prompt_tokens_total",
        "Prompt tokens of finished requests.",
    ),
    (
        "wick_generation_tokens_total",
        "Generated tokens (finished, cut or cancelled choices).",
    ),
    (
        "vllm:generation_tokens_total",
        "Generated tokens (finished, cut or cancelled choices).",
    ),
    (
        "wick_cached_prompt_tokens_total",
        "Prompt tokens whose K/V came from the prefix cache.",
    ),
    (
        "wick_requests_finished_total",
        "Choices the engine finished, by reason.",
    ),
    (
        "vllm:request_success_total",
        "Choices the engine finished, by finished_reason.",
    ),
    (
        "wick_prefix_cache_queries_tokens_total",
        "Prompt tokens looked up in the prefix cache.",
    ),
    (
        "vllm:prefix_cache_queries_total",
        "Prompt tokens looked up in the prefix cache.",
    ),
    (
        "wick_prefix_cache_hits_tokens_total",
        "Prompt tokens found in the prefix cache.",
    ),
    (
        "vllm:prefix_cache_hits_total",
        "Prompt tokens found in the prefix cache.",
    ),
    (
        "wick_preemptions_total",
        "Sequences preempted for blocks (recomputed later).",
    ),
    (
        "vllm:num_preemptions_total",
        "Sequences preempted for blocks (recomputed later).",
    ),
    (
        "wick_cancellations_total",
        "Sequences cancelled (their client went away).",
    ),
    (
        "wick_engine_failures_total",
        "Choices failed in the engine.",
    ),
    (
        "wick_usage_rows_written_total",
        "Usage rows committed to the database.",
    ),
    (
        "wick_usage_write_errors_total",
        "Failed tries to open or write the usage database (locked, full, read-only).",
    ),
    (
        "wick_usage_rows_dropped_total",
        "Usage rows lost: the writer's queue was full, too many waited, or the exit's last try failed.",
    ),
];
const GAUGES: &[(&str, &str)] = &[
    ("wick_requests_running", "Sequences running in the engine."),
    (
        "vllm:num_requests_running",
        "Sequences running in the engine.",
    ),
    (
        "wick_requests_waiting",
        "Sequences waiting (queued or preempted).",
    ),
    (
        "vllm:num_requests_waiting",
        "Sequences waiting (queued or preempted).",
    ),
    ("wick_queue_depth", "Requests waiting for admission."),
    ("wick_kv_blocks_used", "KV cache blocks in use."),
    ("wick_kv_blocks_total", "KV cache blocks in the pool."),
    (
        "wick_kv_blocks_cached",
        "KV cache blocks no request uses that hold cached prefixes.",
    ),
    (
        "wick_kv_blocks_resident",
        "KV cache blocks whose pages may be resident (in use, cached or kept warm).",
    ),
    (
        "vllm:kv_cache_usage_perc",
        "KV cache usage, a fraction from 0 to 1.",
    ),
    (
        "wick_usage_rows_pending",
        "Usage rows waiting for their batch or for the database.",
    ),
];

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The Prometheus text format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A wick histogram and its vLLM twin.
struct Twin {
    wick: Histogram,
    vllm: Histogram,
}

impl Twin {
    fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        self.wick.record(s);
        self.vllm.record(s);
    }
}

/// One server's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    model_name: String,
    ttft: Twin,
    inter_token: Twin,
    e2e: Twin,
    queue_time: Twin,
}

impl Metrics {
    /// An empty registry; `model_name` labels the `vllm:*` series.
    pub fn new(model_name: &str) -> Self {
        let mut builder = PrometheusBuilder::new();
        for (wick, vllm, _, buckets) in HISTOGRAMS {
            for name in [wick, vllm] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                    .expect("invariant: the bucket lists are not empty");
            }
        }
        let recorder = builder.build_recorder();
        let help = |name: &'static str, text: &'static str| (name.into(), None, text.into());
        for &(name, text) in COUNTERS {
            let (k, u, d) = help(name, text);
            recorder.describe_counter(k, u, d);
        }
        for &(name, text) in GAUGES {
            let (k, u, d) = help(name, text);
            recorder.describe_gauge(k, u, d);
        }
        for (wick, vllm, text, _) in HISTOGRAMS {
            for name in [wick, vllm] {
                let (k, u, d) = help(name, text);
                recorder.describe_histogram(k, u, d);
            }
        }
        let model = vec![Label::new("model_name", model_name.to_string())];
        let [ttft, inter_token, e2e, queue_time] = HISTOGRAMS.map(|(wick, vllm, _, _)| Twin {
            wick: recorder.register_histogram(&Key::from_parts(wick, vec![]), &META),
            vllm: recorder.register_histogram(&Key::from_parts(vllm, model.clone()), &META),
        });
        Self {
            recorder,
            model_name: model_name.to_string(),
            ttft,
            inter_token,
            e2e,
            queue_time,
        }
    }

    fn model(&self) -> Vec<Label> {
        vec![Label::new("model_name", self.model_name.clone())]
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    /// Counts one HTTP request (`route` is the matched route template).
    pub fn request(&self, route: &str, status: u16) {
        let labels = vec![
            Label::new("route", route.to_string()),
            Label::new("status", status.to_string()),
        ];
        self.counter("wick_http_requests_total", labels)
            .increment(1);
    }

    /// Counts a request of key `key` with its tokens, once its response is done.
    pub fn key_request(&self, key: &str, prompt: usize, completion: usize) {
        let name = || Label::new("key", key.to_string());
        self.counter("wick_key_requests_total", vec![name()])
            .increment(1);
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.counter(
                "wick_key_tokens_total",
                vec![name(), Label::new("kind", kind)],
            )
            .increment(n as u64);
        }
    }

    /// Counts a 429 of key `key`'s `limit` (requests, tokens, concurrency).
    pub fn rate_limited(&self, key: &str, limit: &'static str) {
        let labels = vec![
            Label::new("key", key.to_string()),
            Label::new("limit", limit),
        ];
        self.counter("wick_rate_limited_total", labels).increment(1);
    }

    fn tokens(&self, prompt: usize, generated: usize, cached: usize) {
        let model = self.model();
        for (wick, vllm, n) in [
            (
                "wick_prompt_tokens_total",
                "vllm:prompt_tokens_total",
                prompt,
            ),
            (
                "wick_generation_tokens_total",
                "vllm:generation_tokens_total",
                generated,
            ),
        ] {
            self.counter(wick, vec![]).increment(n as u64);
            self.counter(vllm, model.clone()).increment(n as u64);
        }
        self.counter("wick_cached_prompt_tokens_total", vec![])
            .increment(cached as u64);
    }

    fn finished(&self, reason: FinishReason, t: &Timings, generated: usize) {
        let reason = match reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            // The API sends a shutdown as an error: not a success.
            FinishReason::Shutdown => return,
        };
        self.counter(
            "wick_requests_finished_total",
            vec![Label::new("reason", reason)],
        )
        .increment(1);
        let mut labels = self.model();
        labels.push(Label::new("finished_reason", reason));
        self.counter("vllm:request_success_total", labels)
            .increment(1);
        if generated > 0 {
            self.ttft.record(t.ttft);
        }
        self.e2e.record(t.total);
        self.queue_time.record(t.queued);
    }

    /// Copies the engine's figures into the gauges and counters they feed.
    fn publish(&self, s: &EngineStats) {
        let model = self.model();
        let both = |wick: &'static str, vllm: Option<&'static str>, v: f64| {
            self.gauge(wick, vec![]).set(v);
            if let Some(vllm) = vllm {
                self.gauge(vllm, model.clone()).set(v);
            }
        };
        both(
            "wick_requests_running",
            Some("vllm:num_requests_running"),
            s.running as f64,
        );
        both(
            "wick_requests_waiting",
            Some("vllm:num_requests_waiting"),
            s.waiting as f64,
        );
        both("wick_queue_depth", None, s.queue_depth as f64);
        both("wick_kv_blocks_used", None, s.kv_blocks_used as f64);
        both("wick_kv_blocks_total", None, s.kv_blocks_total as f64);
        both("wick_kv_blocks_cached", None, s.kv_blocks_cached as f64);
        both("wick_kv_blocks_resident", None, s.kv_blocks_resident as f64);
        let usage = if s.kv_blocks_total == 0 {
            0.0
        } else {
            s.kv_blocks_used as f64 / s.kv_blocks_total as f64
        };
        self.gauge("vllm:kv_cache_usage_perc", model.clone())
            .set(usage.clamp(0.0, 1.0));
        for (wick, vllm, v) in [
            (
                "wick_prefix_cache_queries_tokens_total",
                Some("vllm:prefix_cache_queries_total"),
                s.prefix_queried_tokens,
            ),
            (
                "wick_prefix_cache_hits_tokens_total",
                Some("vllm:prefix_cache_hits_total"),
                s.prefix_hit_tokens,
            ),
            (
                "wick_preemptions_total",
                Some("vllm:num_preemptions_total"),
                s.preemptions,
            ),
            ("wick_cancellations_total", None, s.cancellations),
            ("wick_engine_failures_total", None, s.failures),
        ] {
            self.counter(wick, vec![]).absolute(v);
            if let Some(vllm) = vllm {
                self.counter(vllm, model.clone()).absolute(v);
            }
        }
    }

    /// Copies the usage writer's counters (atomics) into their series (before a render).
    pub fn publish_usage(&self, u: &UsageCounts) {
        self.counter("wick_usage_rows_written_total", vec![])
            .absolute(u.rows_written);
        self.counter("wick_usage_write_errors_total", vec![])
            .absolute(u.write_errors);
        self.counter("wick_usage_rows_dropped_total", vec![])
            .absolute(u.rows_dropped);
        self.gauge("wick_usage_rows_pending", vec![])
            .set(u.rows_pending as f64);
    }

    /// The text exposition, with the engine's figures as of now (`None` while loading).
    pub fn render(&self, engine: Option<EngineStats>) -> String {
        if let Some(s) = engine {
            self.publish(&s);
        }
        self.recorder.handle().render()
    }
}

/// What the recorder keeps of one open choice.
struct Choice {
    /// When its last token reached the driver.
    last: Instant,
    /// Tokens seen so far.
    tokens: usize,
}

/// One response's view of its engine events, fed by the stream driver before the endpoint
/// machine sees each event. On drop (the response finished, failed or its client went away)
/// the tokens of choices the engine did not finish are counted as generated.
pub struct ResponseRecorder {
    metrics: std::sync::Arc<Metrics>,
    /// Open choices by (engine request, choice index).
    open: HashMap<(usize, usize), Choice>,
    /// The request's access-log record, filled in beside the metrics.
    note: Option<AccessNote>,
}

impl ResponseRecorder {
    pub fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        Self {
            metrics,
            open: HashMap::new(),
            note: None,
        }
    }

    /// Also fills in `note`, the request's access-log record.
    pub fn with_note(mut self, note: Option<AccessNote>) -> Self {
        self.note = note;
        self
    }

    /// Records `event` of engine request `source`.
    pub fn event(&mut self, source: usize, event: &Event) {
        match event {
            Event::Token { index, .. } => {
                let now = Instant::now();
                let c = self.open.entry((source, *index)).or_insert(Choice {
                    last: now,
                    tokens: 0,
                });
                if c.tokens > 0 {
                    self.metrics.inter_token.record(now - c.last);
                }
                if let Some(n) = &self.note {
                    n.update(|r| {
                        r.first_token.get_or_insert(now);
                    });
                }
                c.last = now;
                c.tokens += 1;
                // Counted as it is generated, so that a rate over the counter moves while a
                // long response streams (what a dashboard's tok/s shows).
                self.metrics.tokens(0, 1, 0);
            }
            Event::Finished { index, finish } => {
                let seen = self.open.remove(&(source, *index)).map_or(0, |c| c.tokens);
                let u = &finish.usage;
                // The prompt is every choice's: count it once per engine request.
                let prompt = if *index == 0 { u.prompt_tokens } else { 0 };
                let cached = if *index == 0 { u.cached_tokens } else { 0 };
                // The tokens not seen as events (none, or an end token) are added now.
                let rest = u.completion_tokens.saturating_sub(seen);
                self.metrics.tokens(prompt, rest, cached);
                self.metrics
                    .finished(finish.reason, &finish.timings, u.completion_tokens);
                if let Some(n) = &self.note {
                    n.update(|r| {
                        r.prompt_tokens += prompt;
                        r.cached_tokens += cached;
                        r.completion_tokens += u.completion_tokens;
                        r.finish_reasons.push(reason_name(finish.reason));
                        r.choices.push(ChoiceTimes {
                            request: source,
                            index: *index,
                            timings: finish.timings,
                            seen: Instant::now(),
                        });
                    });
                }
            }
            Event::Failed { index, .. } => {
                if let Some(c) = self.open.remove(&(source, *index)) {
                    // Its tokens were counted as they came.
                    if let Some(n) = &self.note {
                        n.update(|r| r.completion_tokens += c.tokens);
                    }
                }
                if let Some(n) = &self.note {
                    n.update(|r| r.finish_reasons.push("error"));
                }
            }
            Event::PromptScores { .. } => {}
        }
    }
}

/// A finish reason as the access log names it (the engine's, with a shutdown as such).
fn reason_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Shutdown => "shutdown",
    }
}

impl Drop for ResponseRecorder {
    fn drop(&mut self) {
        // The cut choices' tokens were counted as they came; the access record gets them now.
        let cut: usize = self.open.values().map(|c| c.tokens).sum();
        if cut > 0 {
            if let Some(n) = &self.note {
                n.update(|r| r.completion_tokens += cut);
            }
        }
        // Histogram samples wait in lock-free buckets until drained: drain them once per
        // response, so a server nobody scrapes does not grow.
        self.metrics.recorder.handle().run_upkeep();
    }
}

/// The router's middleware: counts each request by its matched route (`unmatched` for the
/// fallback) and the response's status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let resp = next.run(req).await;
    let route = route.as_deref().unwrap_or("unmatched");
    state.metrics().request(route, resp.status().as_u16());
    resp
}

/// `GET /metrics`: the text exposition; the engine's figures read from its atomics.
#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus' text format (0.0.4).",
        body = String, content_type = "text/plain")),
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let stats = state.engine().map(|e| e.stats());
    if let Some(usage) = &state.options().usage {
        state.metrics().publish_usage(&usage.counts());
    }
    let body = state.metrics().render(stats);
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], body).into_response()
}

#[cfg(test)]
mod tests;
