//! `wick speed`: the model's raw forward speed, as llama.cpp's `llama-bench` measures it, so the
//! two can be set side by side (`scripts/compare-llamacpp.sh` runs both on the same token ids).
//!
//! - prefill N: one N-token prompt into an empty cache, logits for its last token;
//! - decode N: N steps of one token each from an empty cache, logits every step;
//! - batched decode B x N: B sequences with a prompt each (not timed), then N steps that each
//!   take one token of every sequence, logits for all of them.
//!
//! Token ids are a fixed pseudo-random sequence ([`bench_tokens`]) that the comparison script
//! reproduces. No sampling, no engine, no HTTP: the forward pass alone. Runs on the main
//! thread (plus the kernels' pool).

use std::time::{Duration, Instant};

use clap::Args;

use super::{load, probe, CommandError};
use crate::config::{KvDtypeArg, ModelArgs};
use crate::model::{Batch, CausalLm, KvCache, KvCacheConfig, LogitsWanted, ModelError, SeqChunk};

#[derive(Debug, Args)]
pub struct SpeedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths of the prefill tests, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pub prefill: Vec<usize>,
    /// Steps of the single-sequence decode test (0 skips it).
    #[arg(long, default_value_t = 128)]
    pub decode: usize,
    /// Sequences in the batched decode test (0 skips it).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Prompt tokens of each sequence before the batched decode steps.
    #[arg(long, default_value_t = 128)]
    pub batch_prompt: usize,
    /// Steps of the batched decode test.
    #[arg(long, default_value_t = 64)]
    pub batch_steps: usize,
    /// Timed runs per test (the median is reported), after one untimed run.
    #[arg(long, default_value_t = 3)]
    pub repetitions: usize,
    #[command(flatten)]
    pub kv: KvDtypeArg,
    /// One JSON object per test on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Measure the machine instead of the model: read bandwidth and the int8 multiply-add
    /// peak, with the kernels' threads (no model is loaded).
    #[arg(long)]
    pub membw: bool,
    /// Buffer the bandwidth probe reads, e.g. `1GiB`. Default: 8 times the last-level cache,
    /// at least 256 MiB.
    #[arg(long, value_parser = crate::config::parse_bytes)]
    pub membw_buffer: Option<u64>,
}

/// Runs `wick speed`: every test, as a Markdown table or JSON lines on stdout.
pub fn run(args: &SpeedArgs) -> Result<(), CommandError> {
    if args.membw {
        return run_probes(args);
    }
    let loaded = load(&args.model)?;
    let spec = SpeedSpec {
        prefill: args.prefill.clone(),
        decode: args.decode,
        batch: args.batch,
        batch_prompt: args.batch_prompt,
        batch_steps: args.batch_steps,
        repetitions: args.repetitions,
        block_size: 16,
        kv_dtype: args.kv.kv_cache_dtype,
    };
    let context = args
        .prefill
        .iter()
        .copied()
        .chain([args.decode, args.batch_prompt + args.batch_steps])
        .max()
        .unwrap_or(0);
    if context > loaded.model.max_context() {
        return Err(CommandError::InvalidArgs(format!(
            "the tests reach {context} positions, past the model's context of {}",
            loaded.model.max_context()
        )));
    }
    let rows = measure(&loaded.model, &spec)?;
    if !args.json {
        println!(
            "wick speed: {} ({} kernel threads)",
            loaded.name,
            crate::kernels::ThreadPool::global().threads()
        );
        println!("| test | sequences | tokens | seconds | tok/s |\n|---|---|---|---|---|");
    }
    for r in &rows {
        if args.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            println!(
                "| {} | {} | {} | {:.3} | {:.1} |",
                r.test, r.sequences, r.tokens, r.seconds, r.tokens_per_s
            );
        }
    }
    Ok(())
}

/// `wick speed --membw`: the machine's read bandwidth and int8 peak.
fn run_probes(args: &SpeedArgs) -> Result<(), CommandError> {
    let pool = crate::kernels::ThreadPool::global();
    let bytes = match args.membw_buffer {
        Some(b) => usize::try_from(b)
            .map_err(|_| CommandError::InvalidArgs(format!("--membw-buffer {b} is too large")))?,
        None => probe::default_buffer_bytes(),
    };
    if bytes < 1 << 20 {
        return Err(CommandError::InvalidArgs(format!(
            "--membw-buffer {bytes} is under 1 MiB: it would measure a cache, not memory"
        )));
    }
    let reps = args.repetitions.max(1);
    let rows: Vec<probe::ProbeRow> = [
        Some(probe::read_bandwidth(&pool, bytes, reps)),
        probe::int8_peak(&pool, reps),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !args.json {
        let llc = probe::last_level_cache_bytes()
            .map_or("unknown".to_string(), |b| format!("{} MiB", b >> 20));
        println!(
            "wick speed --membw: {} kernel threads, last-level cache {llc}",
            pool.threads()
        );
        println!("| probe | measured over | rate |\n|---|---|---|");
    }
    for r in &rows {
        if args.json {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        } else if r.test == "read_bandwidth" {
            println!(
                "| read bandwidth | {} | {:.1} GB/s |",
                r.detail,
                r.per_second / 1e9
            );
        } else {
            println!(
                "| int8 multiply-adds | {} | {:.0} G/s |",
                r.detail,
                r.per_second / 1e9
            );
        }
    }
    Ok(())
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct SpeedSpec {
    /// Prompt lengths for the prefill tests.
    pub prefill: Vec<usize>,
    /// Steps of the single-sequence decode test (0: skip).
    pub decode: usize,
    /// Sequences in the batched decode test (0: skip).
    pub batch: usize,
    /// Prompt length of each sequence in the batched test.
    pub batch_prompt: usize,
    /// Steps of the batched test.
    pub batch_steps: usize,
    /// Runs of each test; the median is reported.
    pub repetitions: usize,
    /// Tokens per KV cache block.
    pub block_size: usize,
    pub kv_dtype: candle_core::DType,
}

/// One measured test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpeedRow {
    /// `prefill`, `decode` or `batched_decode`.
    pub test: &'static str,
    /// Sequences per step.
    pub sequences: usize,
    /// Tokens per sequence the test times (prompt length, or decode steps).
    pub tokens: usize,
    /// Median seconds of one run.
    pub seconds: f64,
    /// Tokens processed per second (all sequences).
    pub tokens_per_s: f64,
}

/// The ids the speed tests feed: `n` ids for stream `seed`, spread over the vocabulary
/// above its first 100 ids (where special tokens usually live; above half of a tiny
/// vocabulary). The comparison script computes the same formula.
pub fn bench_tokens(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    let low = (vocab / 2).min(100);
    let span = (vocab - low).max(1);
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % span + low) as u32)
        .collect()
}

/// Runs every test in `spec`.
pub fn measure(model: &dyn CausalLm, spec: &SpeedSpec) -> Result<Vec<SpeedRow>, ModelError> {
    let mut rows = Vec::new();
    for &n in &spec.prefill {
        rows.push(prefill(model, spec, n)?);
    }
    if spec.decode > 0 {
        rows.push(decode(model, spec, 1, 0, spec.decode)?);
    }
    if spec.batch > 0 && spec.batch_steps > 0 {
        rows.push(decode(
            model,
            spec,
            spec.batch,
            spec.batch_prompt,
            spec.batch_steps,
        )?);
    }
    Ok(rows)
}

fn cache_for(
    model: &dyn CausalLm,
    spec: &SpeedSpec,
    seqs: usize,
    tokens: usize,
) -> Result<(KvCache, Vec<Vec<u32>>), ModelError> {
    let per_seq = tokens.div_ceil(spec.block_size).max(1);
    let config = KvCacheConfig {
        num_blocks: per_seq * seqs,
        block_size: spec.block_size,
        dtype: spec.kv_dtype,
    };
    let cache = KvCache::new(model.kv_shape(), config, model.device())?;
    let tables = (0..seqs)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    Ok((cache, tables))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn row(test: &'static str, sequences: usize, tokens: usize, runs: Vec<Duration>) -> SpeedRow {
    let seconds = median(runs).as_secs_f64();
    SpeedRow {
        test,
        sequences,
        tokens,
        seconds,
        tokens_per_s: (sequences * tokens) as f64 / seconds.max(1e-12),
    }
}

fn prefill(model: &dyn CausalLm, spec: &SpeedSpec, n: usize) -> Result<SpeedRow, ModelError> {
    let prompt = bench_tokens(n, 0, model.vocab_size());
    let (mut cache, tables) = cache_for(model, spec, 1, n)?;
    let mut runs = Vec::new();
    // One untimed run first: page faults, pool start-up.
    for rep in 0..=spec.repetitions.max(1) {
        let t = Instant::now();
        let seq = SeqChunk {
            tokens: &prompt,
            start_pos: 0,
            blocks: &tables[0],
            logits: LogitsWanted::Last,
        };
        model.forward(&Batch::new(vec![seq]), &mut cache)?;
        if rep > 0 {
            runs.push(t.elapsed());
        }
    }
    Ok(row("prefill", 1, n, runs))
}

/// `seqs` sequences, each prefilled with `prompt` tokens (untimed), then `steps` timed steps.
fn decode(
    model: &dyn CausalLm,
    spec: &SpeedSpec,
    seqs: usize,
    prompt: usize,
    steps: usize,
) -> Result<SpeedRow, ModelError> {
    let vocab = model.vocab_size();
    let streams: Vec<Vec<u32>> = (0..seqs)
        .map(|s| bench_tokens(prompt + steps, s + 1, vocab))
        .collect();
    let (mut cache, tables) = cache_for(model, spec, seqs, prompt + steps)?;
    let mut runs = Vec::new();
    for rep in 0..=spec.repetitions.max(1) {
        if prompt > 0 {
            for (s, t) in streams.iter().zip(&tables) {
                let seq = SeqChunk {
                    tokens: &s[..prompt],
                    start_pos: 0,
                    blocks: t,
                    logits: LogitsWanted::None,
                };
                model.forward(&Batch::new(vec![seq]), &mut cache)?;
            }
        }
        let t0 = Instant::now();
        for step in 0..steps {
            let pos = prompt + step;
            let chunks = streams
                .iter()
                .zip(&tables)
                .map(|(s, t)| SeqChunk {
                    tokens: &s[pos..pos + 1],
                    start_pos: pos,
                    blocks: t,
                    logits: LogitsWanted::Last,
                })
                .collect();
            model.forward(&Batch::new(chunks), &mut cache)?;
        }
        if rep > 0 {
            runs.push(t0.elapsed());
        }
    }
    let test = if seqs == 1 {
        "decode"
    } else {
        "batched_decode"
    };
    Ok(row(test, seqs, steps, runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{random_llama, tiny_config};

    #[test]
    fn every_test_runs_and_reports_its_token_count() {
        let model = random_llama(&tiny_config(), 1, None, &candle_core::Device::Cpu);
        let spec = SpeedSpec {
            prefill: vec![7, 20],
            decode: 5,
            batch: 3,
            batch_prompt: 4,
            batch_steps: 6,
            repetitions: 1,
            block_size: 4,
            kv_dtype: candle_core::DType::F32,
        };
        let rows = measure(&model, &spec).expect("runs");
        let got: Vec<(&str, usize, usize)> = rows
            .iter()
            .map(|r| (r.test, r.sequences, r.tokens))
            .collect();
        assert_eq!(
            got,
            [
                ("prefill", 1, 7),
                ("prefill", 1, 20),
                ("decode", 1, 5),
                ("batched_decode", 3, 6)
            ]
        );
        assert!(rows.iter().all(|r| r.seconds > 0.0 && r.tokens_per_s > 0.0));
    }

    #[test]
    fn bench_tokens_stay_in_the_vocabulary_above_the_specials() {
        let ids = bench_tokens(1000, 3, 300);
        assert!(ids.iter().all(|&t| (100..300).contains(&t)));
        let tiny = bench_tokens(1000, 3, 96);
        assert!(tiny.iter().all(|&t| (48..96).contains(&t)));
        assert_ne!(bench_tokens(10, 1, 49_152), bench_tokens(10, 2, 49_152));
    }
}
