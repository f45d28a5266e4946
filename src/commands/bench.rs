//! `wick bench`: a closed-loop load test of the engine in process. `c` client threads each send
//! requests back to back (greedy, fixed prompt and output lengths, distinct prompts so the
//! prefix cache does not help) and time every token as it streams back.
//!
//! This measures the engine and the model without HTTP (`scripts/loadtest.py` is the HTTP
//! side, against `wick serve`). The main thread loads the model and starts the engine, whose
//! worker thread runs it; the clients are scoped threads that block on their event streams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;

use super::{load, CommandError};
use crate::config::{EngineArgs, ModelArgs};
use crate::engine::{Engine, EngineHandle, Event, SubmitError, ValidRequest};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub concurrency: Vec<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    pub prompt_tokens: usize,
    /// Generated tokens per request (no early stop).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Requests per level (default: twice the concurrency, at least 4).
    #[arg(long)]
    pub requests: Option<usize>,
}

/// Filler for bench prompts: ordinary prose, repeated as needed.
const BENCH_TEXT: &str = "The lighthouse stood at the edge of the cliff, its white tower \
weathered by a century of storms. Every evening the keeper climbed the spiral stairs, trimmed the \
wick and wound the clockwork that turned the great lens, and every morning he wrote the weather, \
the ships he had seen and the state of the sea into a leather-bound log.";

/// Runs `wick bench`: every level in `--concurrency`, one table row each.
pub fn run(args: &BenchArgs) -> Result<(), CommandError> {
    let config = args.engine.resolve().map_err(CommandError::InvalidArgs)?;
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err(CommandError::InvalidArgs(
            "--concurrency needs levels of at least 1".into(),
        ));
    }
    let loaded = load(&args.model)?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let text = BENCH_TEXT.repeat(args.prompt_tokens / 40 + 2);
    let base = tokenizer.encode(&text, false)?;
    let prompt_tokens = args.prompt_tokens.max(8);
    // A distinct head per request keeps the prefix cache out of the measurement.
    let prompt = |i: usize| -> Vec<u32> {
        let head = tokenizer
            .encode(&format!("Request {i}: "), false)
            .unwrap_or_default();
        head.iter()
            .chain(base.iter())
            .copied()
            .take(prompt_tokens)
            .collect()
    };
    let engine = Engine::start(loaded.model, config)?;
    println!(
        "wick bench: {} prompt tokens, {} generated tokens per request, greedy",
        prompt_tokens, args.max_tokens
    );
    println!("{TABLE_HEADER}");
    for &c in &args.concurrency {
        let spec = LoadSpec {
            concurrency: c,
            requests: args.requests.unwrap_or((2 * c).max(4)),
            max_tokens: args.max_tokens,
        };
        let report = run_level(&engine, spec, &prompt);
        println!("{}", report.row());
        if report.failed > 0 {
            eprintln!("{} requests failed at concurrency {c}", report.failed);
        }
    }
    let st = engine.stats();
    eprintln!(
        "engine: {} steps, {:.1} ms per step, {} preemptions, KV {} blocks ({} MiB)",
        st.steps,
        st.step_micros_total as f64 / st.steps.max(1) as f64 / 1e3,
        st.preemptions,
        st.kv_blocks_total,
        st.kv_cache_bytes >> 20
    );
    engine.shutdown(std::time::Duration::from_secs(5));
    Ok(())
}

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
            Event::Finished { .. } | Event::PromptScores { .. } => {}
            Event::Failed { error, .. } => {
                tracing::warn!(%error, "bench request failed");
                return None;
            }
        }
    }
    Some((first?, gaps, n))
}
