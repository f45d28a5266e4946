//! wick: a local-model LLM inference server. Llama-family models on candle, behind an
//! OpenAI-compatible API. The library holds everything; `src/main.rs` is a thin CLI over it.

/// The OpenAI-compatible HTTP API (axum lives only here).
pub mod api;
/// The command line: `Cli`, its subcommands and the dispatch to [`commands`].
pub mod cli;
/// One file per subcommand (`run`, `perplexity`, `bench`, `speed`, `serve`, `pull`): its flags
/// and body.
pub mod commands;
/// Shared command-line groups (model, engine, server, sampling) and their validation.
pub mod config;
/// Grammar-constrained decoding (llguidance): compiled on the HTTP side, stepped by the worker.
pub mod constraint;
/// The continuous-batching engine: token ids in, events out; worker thread, admission queue,
/// scheduler, block manager.
pub mod engine;
/// The Hugging Face hub client and cache behind `wick pull`, `list` and `rm`.
pub mod hub;
/// Quantized matmul kernels for the CPU (AVX2 / AVX-512 / scalar) and their thread pool.
pub mod kernels;
/// The Llama architecture, its KV cache and the loaders (GGUF, Hugging Face dirs, hub ids).
pub mod model;
/// Logits -> token: the sampler, its processors and logprobs. Pure; depends on nothing.
pub mod sampling;
/// The server's SQLite database (`wick.db` under `--data-dir`): schema migrations, the usage
/// tables and their writer thread.
pub mod store;
/// Logging set-up and the OpenTelemetry tracer provider (OTLP export) of `wick serve`.
pub mod telemetry;
/// Tokenizers (GGUF-built or `tokenizer.json`), chat templates, incremental detokenizer.
pub mod tokenizer;
