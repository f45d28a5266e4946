//! wick: a local-model LLM inference server. Llama-family models on candle, behind an
//! OpenAI-compatible API. The library holds everything; `src/main.rs` is a thin CLI over it.

/// The OpenAI-compatible HTTP API (axum lives only here).
pub mod api;
/// The command line: `wick serve`, `wick run`, `wick perplexity`, `wick bench`.
pub mod cli;
/// Shared command-line groups and their validation (engine limits).
pub mod config;
/// Grammar-constrained decoding (llguidance): compiled on the HTTP side, stepped by the worker.
pub mod constraint;
/// The continuous-batching engine: worker thread, scheduler, block manager, sampling.
pub mod engine;
/// Quantized matmul kernels for the CPU (AVX2 / AVX-512 / scalar) and their thread pool.
pub mod kernels;
/// `wick bench`: an in-process load test of the engine.
pub mod loadtest;
/// The Llama architecture, its KV cache and the loaders (GGUF, Hugging Face dirs, hub ids).
pub mod model;
/// Logits -> token: the sampler, its processors and logprobs. Pure; depends on nothing.
pub mod sampling;
/// `wick serve`: bind, load, serve, drain on SIGTERM.
pub mod server;
/// `wick speed`: raw forward speed (prefill, decode, batched decode), llama-bench style.
pub mod speed;
/// Logging set-up.
pub mod telemetry;
/// Tokenizers (GGUF-built or `tokenizer.json`), chat templates, incremental detokenizer.
pub mod tokenizer;
/// Request -> `ValidRequest`: template, tokenize, limits.
pub mod validate;
