//! `wick bench`: a closed-loop load test of the engine in process. `c` client threads each send
//! requests back to back (greedy, fixed prompt and output lengths, distinct prompts so the
//! prefix cache does not help) and time every token as it streams back.
//!
//! This measures the engine and the model without HTTP. The HTTP server's own load test joins
//! it with `wick serve`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::engine::{EngineHandle, Event, SubmitError, ValidRequest};

/// One concurrency level's load.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub concurrency: usize,
    pub requests: usize,
    pub max_tokens: usize,
}

/// What one level measured.
#[derive(Debug, Clone, Default)]
pub struct LevelReport {
    pub concurrency: usize,
    pub requests: usize,
    pub failed: usize,
    pub wall: Duration,
    pub generated_tokens: usize,
    pub ttft: Vec<Duration>,
    /// Gaps between consecutive tokens of a request.
    pub itl: Vec<Duration>,
}

/// The `q`-quantile (0..=1) of `v`, nearest rank.
pub fn percentile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

impl LevelReport {
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// A Markdown table row: c, req/s, tok/s, TTFT p50/p95 (ms), ITL p50/p95 (ms).
    pub fn row(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "| {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |",
            self.concurrency,
            self.requests_per_s(),
            self.tokens_per_s(),
            ms(percentile(&self.ttft, 0.5)),
            ms(percentile(&self.ttft, 0.95)),
            ms(percentile(&self.itl, 0.5)),
            ms(percentile(&self.itl, 0.95)),
        )
    }
}

pub const TABLE_HEADER: &str = "| concurrency | requests/s | generated tok/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |\n|---|---|---|---|---|---|---|";

/// Runs one level: `spec.concurrency` clients share `spec.requests` requests; request `i` uses
/// `prompt(i)`.
pub fn run_level(
    engine: &EngineHandle,
    spec: LoadSpec,
    prompt: &(dyn Fn(usize) -> Vec<u32> + Sync),
) -> LevelReport {
    let next = AtomicUsize::new(0);
    let report = Mutex::new(LevelReport {
        concurrency: spec.concurrency,
        ..LevelReport::default()
    });
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..spec.concurrency {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= spec.requests {
                    break;
                }
                let one = one_request(engine, prompt(i), spec.max_tokens);
                let mut r = match report.lock() {
                    Ok(r) => r,
                    Err(p) => p.into_inner(),
                };
                match one {
                    Some((ttft, itl, n)) => {
                        r.requests += 1;
                        r.generated_tokens += n;
                        r.ttft.push(ttft);
                        r.itl.extend(itl);
                    }
                    None => r.failed += 1,
                }
            });
        }
    });
    let mut r = report.into_inner().unwrap_or_else(|p| p.into_inner());
    r.wall = t0.elapsed();
    r
}

/// Sends one request and times its tokens: (TTFT, inter-token gaps, tokens), or `None` if it
/// failed.
fn one_request(
    engine: &EngineHandle,
    prompt: Vec<u32>,
    max_tokens: usize,
) -> Option<(Duration, Vec<Duration>, usize)> {
    let t = Instant::now();
    let mut stream = loop {
        match engine.submit(ValidRequest::greedy(prompt.clone(), max_tokens)) {
            Ok(s) => break s,
            Err(SubmitError::QueueFull(_)) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!(error = %e, "bench request refused");
                return None;
            }
        }
    };
    let (mut first, mut last, mut gaps, mut n) = (None, t, Vec::new(), 0);
    while let Some(ev) = stream.blocking_recv() {
        match ev {
            Event::Token { .. } => {
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now - t);
                } else {
                    gaps.push(now - last);
                }
                last = now;
                n += 1;
            }
            Event::Finished { .. } | Event::PromptLogprobs { .. } => {}
            Event::Failed { error, .. } => {
                tracing::warn!(%error, "bench request failed");
                return None;
            }
        }
    }
    Some((first?, gaps, n))
}
