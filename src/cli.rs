//! The command line: `wick run` (one prompt, streamed to the terminal), `wick perplexity`,
//! `wick bench` and `wick serve` (in [`crate::server`]).
//! Runs on the main thread; the model runs inline (the server's engine is not involved).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::EngineArgs;
use crate::engine::Engine;
use crate::loadtest::{run_level, LoadSpec, TABLE_HEADER};
use crate::model::generate::{generate, Finish, GenerateError, GenerateOptions};
use crate::model::perplexity::{perplexity, PerplexityError};
use crate::model::{device, CausalLm, LoadError};
use crate::sampling::{SamplingError, SamplingParams};
use crate::telemetry::LogFormat;
use crate::tokenizer::IncrementalDecoder;

/// The embedded default model: the small test model `scripts/fetch-test-model.sh` fetches.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Debug, Parser)]
#[command(
    name = "wick",
    version,
    about = "Llama-family models behind an OpenAI-compatible API"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "WICK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a reply to one prompt, streamed to the terminal.
    Run(RunArgs),
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(PerplexityArgs),
    /// Load-test the engine in process: streamed greedy requests at several concurrency levels.
    Bench(BenchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Raw forward speed: prefill, decode and batched decode tok/s, as llama-bench measures.
    Speed(SpeedArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Address to bind.
    #[arg(long, env = "WICK_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind.
    #[arg(long, env = "WICK_PORT", default_value_t = 8080)]
    pub port: u16,
    /// The model name requests must use (default: the --model value).
    #[arg(long, env = "WICK_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,
    /// Largest request body in bytes (413 past it).
    #[arg(long, env = "WICK_MAX_BODY_BYTES", default_value_t = crate::api::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds in-flight requests get to finish on SIGTERM or ctrl-c.
    #[arg(long, env = "WICK_DRAIN_GRACE_SECS", default_value_t = 30)]
    pub drain_grace_secs: u64,
}

/// Which model, on which device.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A .gguf file, a Hugging Face model directory, or a hub id `org/name[:file]`.
    #[arg(long, short, env = "WICK_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// cpu, cuda, cuda:N, metal or auto.
    #[arg(long, env = "WICK_DEVICE", default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (a user message, unless --raw).
    pub prompt: String,
    /// Feed the prompt as raw text: no chat template.
    #[arg(long)]
    pub raw: bool,
    /// A system message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// 0 is off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prompt tokens per forward call.
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
}

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The text file to score (one trailing newline is dropped, as llama.cpp's -f does).
    #[arg(long, short)]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, short = 'c', default_value_t = 512)]
    pub ctx: usize,
    /// Chunks per forward call.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
}

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
    /// KV cache dtype: f16, bf16 or f32.
    #[arg(long, default_value = "f16", value_parser = crate::config::parse_dtype)]
    pub kv_cache_dtype: candle_core::DType,
    /// One JSON object per test on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Perplexity(#[from] PerplexityError),
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] SamplingError),
    #[error("{0}")]
    Prompt(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Run(args) => run_prompt(&args),
        Command::Perplexity(args) => run_perplexity(&args),
        Command::Bench(args) => run_bench(&args),
        Command::Serve(args) => crate::server::run(&args),
        Command::Speed(args) => run_speed(&args),
    }
}

fn load(args: &ModelArgs) -> Result<crate::model::LoadedModel, CliError> {
    let dev = device::parse(&args.device)?;
    let t = std::time::Instant::now();
    let loaded = crate::model::load(&args.model, &dev)?;
    tracing::info!(
        model = %loaded.name,
        device = %args.device,
        secs = format!("{:.2}", t.elapsed().as_secs_f64()),
        "model loaded"
    );
    Ok(loaded)
}

fn run_prompt(args: &RunArgs) -> Result<(), CliError> {
    let loaded = load(&args.model)?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let text = if args.raw {
        args.prompt.clone()
    } else {
        let template = loaded.chat_template.as_ref().ok_or_else(|| {
            CliError::Prompt(
                "the model has no chat template; use --raw to send the prompt as plain text".into(),
            )
        })?;
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": args.prompt}));
        template
            .render(&messages, None, true)
            .map_err(|e| CliError::Prompt(format!("chat template: {e}")))?
    };
    // Templated prompts carry special-token text on purpose; raw prompts are plain text.
    let prompt = tokenizer
        .encode_prompt(&text, !args.raw)
        .map_err(|e| CliError::Prompt(format!("tokenizer: {e}")))?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        logit_bias: Vec::new(),
        seed: args.seed,
        logprobs: None,
    };
    sampling.validate(loaded.model.vocab_size())?;
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        stop_ids: tokenizer.stop_token_ids().to_vec(),
        prefill_chunk: args.prefill_chunk,
        kv_dtype: candle_core::DType::F16,
    };
    let mut detok = IncrementalDecoder::new(tokenizer.clone(), true);
    let mut out = std::io::stdout().lock();
    let gen = generate(&loaded.model, &prompt, &opts, |tok| {
        let piece = detok.push(tok.id);
        // A closed stdout (a pipe into `head`) ends generation quietly.
        out.write_all(piece.as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
    })?;
    let rest = detok.flush();
    let _ = writeln!(out, "{rest}");
    let n = gen.tokens.len();
    let rate = |count: usize, d: std::time::Duration| count as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "\n[prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s | finish: {}]",
        prompt.len(),
        rate(prompt.len(), gen.prompt_time),
        n,
        rate(n.saturating_sub(1), gen.gen_time),
        match gen.finish {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::Cancelled => "cancelled",
        }
    );
    Ok(())
}

fn run_perplexity(args: &PerplexityArgs) -> Result<(), CliError> {
    let loaded = load(&args.model)?;
    let mut text = std::fs::read_to_string(&args.file).map_err(|source| CliError::Io {
        path: args.file.clone(),
        source,
    })?;
    if text.ends_with('\n') {
        text.pop();
    }
    let tokens = loaded
        .tokenizer
        .encode(&text, false)
        .map_err(|e| CliError::Prompt(format!("tokenizer: {e}")))?;
    eprintln!(
        "perplexity: {} tokens, {} chunks of {}",
        tokens.len(),
        tokens.len() / args.ctx.max(1),
        args.ctx
    );
    let t = std::time::Instant::now();
    let report = perplexity(&loaded.model, &tokens, args.ctx, args.batch, |i, ppl| {
        print!("[{}]{:.4},", i + 1, ppl);
        let _ = std::io::stdout().flush();
    })?;
    println!();
    eprintln!(
        "{} tokens scored in {:.1} s",
        report.scored_tokens,
        t.elapsed().as_secs_f64()
    );
    println!(
        "Final estimate: PPL = {:.4} +/- {:.5}",
        report.ppl, report.ppl_stderr
    );
    Ok(())
}

/// Filler for bench prompts: ordinary prose, repeated as needed.
const BENCH_TEXT: &str = "The lighthouse stood at the edge of the cliff, its white tower \
weathered by a century of storms. Every evening the keeper climbed the spiral stairs, trimmed the \
wick and wound the clockwork that turned the great lens, and every morning he wrote the weather, \
the ships he had seen and the state of the sea into a leather-bound log.";

fn run_bench(args: &BenchArgs) -> Result<(), CliError> {
    let config = args.engine.resolve().map_err(CliError::Config)?;
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        return Err(CliError::Config(
            "--concurrency needs levels of at least 1".into(),
        ));
    }
    let loaded = load(&args.model)?;
    let tokenizer = Arc::new(loaded.tokenizer);
    let text = BENCH_TEXT.repeat(args.prompt_tokens / 40 + 2);
    let base = tokenizer
        .encode(&text, false)
        .map_err(|e| CliError::Prompt(format!("tokenizer: {e}")))?;
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
    let engine = Engine::start(loaded.model, Some(tokenizer.clone()), config)?;
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

fn run_speed(args: &SpeedArgs) -> Result<(), CliError> {
    let loaded = load(&args.model)?;
    let spec = crate::speed::SpeedSpec {
        prefill: args.prefill.clone(),
        decode: args.decode,
        batch: args.batch,
        batch_prompt: args.batch_prompt,
        batch_steps: args.batch_steps,
        repetitions: args.repetitions,
        block_size: 16,
        kv_dtype: args.kv_cache_dtype,
    };
    let context = args
        .prefill
        .iter()
        .copied()
        .chain([args.decode, args.batch_prompt + args.batch_steps])
        .max()
        .unwrap_or(0);
    if context > loaded.model.max_context() {
        return Err(CliError::Config(format!(
            "the tests reach {context} positions, past the model's context of {}",
            loaded.model.max_context()
        )));
    }
    let rows = crate::speed::measure(&loaded.model, &spec)
        .map_err(|e| CliError::Config(format!("forward failed: {e}")))?;
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
