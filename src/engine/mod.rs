//! The engine: many requests share one model worker, and every forward step serves all of them.
//!
//! [`Engine::start`] spawns the worker thread ([`worker`]), which owns the model and the KV cache.
//! [`EngineHandle::submit`] checks a [`ValidRequest`] against the limits, reserves a place in the
//! bounded admission queue (or fails at once with [`SubmitError::QueueFull`]) and returns an
//! [`EventStream`] of tokens for it. Dropping the stream cancels the request: the worker frees
//! its sequences and blocks at its next step, whether they are queued, prefilling or decoding.
//!
//! [`EngineHandle::embed`] queues the other kind of work, an embedding job ([`embed`]): the same
//! worker runs it beside generation, against the same queue limits and KV blocks.
//!
//! Callers run on any thread (the HTTP layer's tasks); nothing here blocks on the worker.

pub mod blocks;
pub mod embed;
pub mod scheduler;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::DType;
use tokio::sync::mpsc as tmpsc;

use crate::constraint::Constraint;
use crate::model::{CausalLm, KvCache, KvCacheConfig, ModelError};
use crate::sampling::{self, SamplingError, SamplingParams, TokenLogprob};
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// Engine limits and sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Tokens one forward step may process (decode tokens + prefill chunks).
    pub max_batch_tokens: usize,
    /// Sequences that may run at once.
    pub max_running: usize,
    /// Requests that may wait for admission; past it, submit fails with `QueueFull`.
    pub max_queue: usize,
    /// Prompt tokens that may wait for admission, in all queued requests together.
    pub max_queue_tokens: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV pool size in bytes; `None` derives it from the model and the free memory.
    pub kv_cache_bytes: Option<u64>,
    pub kv_dtype: DType,
    pub prefix_caching: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 512,
            max_running: 64,
            max_queue: 256,
            max_queue_tokens: 256 * 1024,
            block_size: 16,
            kv_cache_bytes: None,
            kv_dtype: DType::F16,
            prefix_caching: true,
        }
    }
}

/// A request the HTTP layer has validated and tokenized: token ids only from here on.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    pub prompt: Vec<u32>,
    /// Most tokens to generate per choice.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end a choice (EOS and friends).
    pub stop_ids: Vec<u32>,
    /// Parallel choices; they share the prompt's KV blocks.
    pub n: usize,
    /// Higher runs first; FCFS within a priority.
    pub priority: i32,
    /// `Some(k)`: score the prompt too (`echo` with logprobs): one
    /// [`Event::PromptLogprobs`] with every prompt token's logprob and its top `k`
    /// alternatives, before the first token. The prompt is then computed afresh, never taken
    /// from the prefix cache. With it, `max_tokens` may be 0 (score only).
    pub prompt_logprobs: Option<usize>,
    /// The grammar the output must follow (`response_format`, forced tool calls), compiled
    /// on the HTTP side; each choice steps its own copy.
    pub constraint: Option<Constraint>,
}

impl ValidRequest {
    /// A greedy single-choice request.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            sampling: SamplingParams::greedy(),
            stop_ids: Vec::new(),
            n: 1,
            priority: 0,
            prompt_logprobs: None,
            constraint: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token came.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// Cancelled by shutdown.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Token counts of one choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Generated tokens, the stop token included.
    pub completion_tokens: usize,
    /// Prompt tokens whose K/V came from the prefix cache.
    pub cached_tokens: usize,
}

/// Where one choice's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Submit to first admission.
    pub queued: Duration,
    /// Submit to first token.
    pub ttft: Duration,
    /// Submit to finish.
    pub total: Duration,
}

/// One prompt token, scored.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    pub id: u32,
    /// `None` for the first token (nothing predicts it).
    pub logprob: Option<f32>,
    /// The best alternatives at this position, best first (empty for the first token).
    pub top_logprobs: Vec<TokenLogprob>,
}

/// What a request's stream yields. `index` is the choice (0..n).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The prompt's tokens, scored (only when [`ValidRequest::prompt_logprobs`] asked; once,
    /// for choice 0, before its first token: the prompt is the same for every choice).
    PromptLogprobs {
        index: usize,
        tokens: Vec<PromptToken>,
    },
    Token {
        index: usize,
        id: u32,
        /// The text this token completes (UTF-8 safe; may be empty while a character is split
        /// across tokens).
        text: String,
        logprob: Option<f32>,
        top_logprobs: Vec<TokenLogprob>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
        usage: Usage,
        timings: Timings,
        /// Bytes still held by the detokenizer at the end (an unfinished character), lossy.
        text: String,
    },
    /// This choice failed (a forward or sampling error); the engine lives on.
    Failed { index: usize, error: String },
}

/// What the worker sends; `EventStream` turns it into [`Event`]s (adding text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WorkerEvent {
    PromptLogprobs {
        index: usize,
        tokens: Vec<PromptToken>,
    },
    Token {
        index: usize,
        id: u32,
        logprob: Option<f32>,
        top_logprobs: Vec<TokenLogprob>,
    },
    Finished {
        index: usize,
        reason: FinishReason,
        usage: Usage,
        timings: Timings,
    },
    Failed {
        index: usize,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full ({0}); retry later")]
    QueueFull(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt has {prompt} tokens + max_tokens {max_tokens} > context {context}")]
    ContextLength {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error("prompt has {prompt} tokens + max_tokens {max_tokens} = {need} tokens > KV cache capacity {capacity} tokens")]
    TooLarge {
        prompt: usize,
        max_tokens: usize,
        need: usize,
        capacity: usize,
    },
    #[error("token id {id} out of range: the vocabulary has {vocab} tokens")]
    InvalidToken { id: u32, vocab: usize },
    #[error("n must be between 1 and {max}, got {n}")]
    InvalidN { n: usize, max: usize },
    #[error("max_tokens must be at least 1 (0 only when scoring the prompt)")]
    ZeroMaxTokens,
    #[error("input has {tokens} tokens > {what} of {limit} tokens")]
    InputTooLong {
        tokens: usize,
        limit: usize,
        what: &'static str,
    },
    #[error("prompt logprobs: at most {max} alternatives, got {n}")]
    PromptLogprobs { n: usize, max: usize },
    #[error("{0}")]
    Sampling(#[from] SamplingError),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("the engine has stopped")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid engine config: {0}")]
    Config(String),
    #[error("could not start the worker thread: {0}")]
    Thread(std::io::Error),
}

/// Counters for metrics; read with [`EngineHandle::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queued_requests: AtomicUsize,
    queued_tokens: AtomicUsize,
    waiting: AtomicUsize,
    running: AtomicUsize,
    kv_blocks_used: AtomicUsize,
    kv_blocks_total: AtomicUsize,
    prefix_queried_tokens: AtomicU64,
    prefix_hit_tokens: AtomicU64,
    preemptions: AtomicU64,
    cancellations: AtomicU64,
    failures: AtomicU64,
    steps: AtomicU64,
    step_micros: AtomicU64,
    prefill_tokens: AtomicU64,
    decode_tokens: AtomicU64,
    embed_jobs: AtomicUsize,
    embed_tokens: AtomicU64,
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests waiting for admission.
    pub queue_depth: usize,
    pub queued_tokens: usize,
    /// Sequences waiting (queued or preempted) and running.
    pub waiting: usize,
    pub running: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_total: usize,
    pub kv_cache_bytes: u64,
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub preemptions: u64,
    pub cancellations: u64,
    pub failures: u64,
    pub steps: u64,
    pub step_micros_total: u64,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    /// Embedding jobs queued or running.
    pub embed_jobs: usize,
    /// Tokens run for embeddings.
    pub embed_tokens: u64,
}

enum Command {
    Submit(worker::Submission),
    Embed(embed::EmbedSubmission),
    Shutdown { deadline: Instant },
}

struct Shared {
    config: EngineConfig,
    counters: Counters,
    shutting_down: AtomicBool,
    vocab: usize,
    max_context: usize,
    hidden_size: usize,
    capacity_tokens: usize,
    kv_cache_bytes: u64,
    next_id: AtomicU64,
    tokenizer: Option<Arc<Tokenizer>>,
}

/// The caller's side of the engine. Cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Starts engines.
pub struct Engine;

/// Tokens the default KV pool holds (or one full context, if longer): 16 sequences of 4,096
/// tokens, or 128 of 512.
pub const DEFAULT_KV_TOKENS: usize = 64 * 1024;

/// Bytes for the KV pool when none are configured: room for [`DEFAULT_KV_TOKENS`] tokens, or one
/// full context if that is longer, capped at a quarter of the available memory and at 4 GiB.
/// On the CPU the pool's pages become resident only as blocks are used.
pub fn default_kv_cache_bytes(bytes_per_token: usize, max_context: usize) -> u64 {
    let want = (bytes_per_token as u64) * (max_context.max(DEFAULT_KV_TOKENS) as u64);
    let available = available_memory().unwrap_or(8 << 30);
    want.min(available / 4).min(4 << 30)
}

fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Engine {
    /// Builds the KV cache and starts the worker thread that owns `model` from now on.
    pub fn start<M: CausalLm + 'static>(
        model: M,
        tokenizer: Option<Arc<Tokenizer>>,
        config: EngineConfig,
    ) -> Result<EngineHandle, EngineError> {
        if config.block_size == 0 || config.max_batch_tokens == 0 || config.max_running == 0 {
            return Err(EngineError::Config(
                "block_size, max_batch_tokens and max_running must be positive".into(),
            ));
        }
        let shape = model.kv_shape();
        let per_token = shape.bytes_per_token(config.kv_dtype);
        let bytes = config
            .kv_cache_bytes
            .unwrap_or_else(|| default_kv_cache_bytes(per_token, model.max_context()));
        let num_blocks = (bytes / (per_token * config.block_size) as u64) as usize;
        if num_blocks == 0 {
            return Err(EngineError::Config(format!(
                "a KV cache of {bytes} bytes holds no block of {} tokens ({} bytes each)",
                config.block_size,
                per_token * config.block_size
            )));
        }
        let kv = KvCacheConfig {
            num_blocks,
            block_size: config.block_size,
            dtype: config.kv_dtype,
        };
        let cache = KvCache::new(shape, kv, model.device())?;
        let shared = Arc::new(Shared {
            capacity_tokens: num_blocks * config.block_size,
            kv_cache_bytes: cache.bytes() as u64,
            vocab: model.vocab_size(),
            max_context: model.max_context(),
            hidden_size: model.hidden_size(),
            config: config.clone(),
            counters: Counters::default(),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            tokenizer,
        });
        shared
            .counters
            .kv_blocks_total
            .store(num_blocks, Ordering::Relaxed);
        tracing::info!(
            blocks = num_blocks,
            block_size = config.block_size,
            kv_bytes = cache.bytes(),
            "engine started"
        );
        let (tx, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wick-worker".into())
            .spawn(move || {
                let w = worker::Worker::new(model, cache, &worker_shared.config);
                worker::run(w, rx, &worker_shared);
            })
            .map_err(EngineError::Thread)?;
        Ok(EngineHandle {
            tx,
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }
}

/// Most parallel choices per request.
pub const MAX_N: usize = 16;

impl EngineHandle {
    /// Queues a request. Fails at once when it can never run (context, capacity, bad ids or
    /// sampling parameters) or when the queue is full.
    pub fn submit(&self, req: ValidRequest) -> Result<EventStream, SubmitError> {
        let s = &self.shared;
        if s.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        self.check(&req)?;
        let tokens = req.prompt.len();
        self.reserve(tokens)?;
        let (etx, erx) = tmpsc::unbounded_channel();
        let n = req.n;
        let prompt_tokens = req.prompt.len();
        let sub = worker::Submission {
            id: s.next_id.fetch_add(1, Ordering::Relaxed),
            req,
            events: etx,
            arrived: Instant::now(),
        };
        if self.tx.send(Command::Submit(sub)).is_err() {
            s.counters.unqueue(tokens);
            return Err(SubmitError::Stopped);
        }
        let decoders = (0..n)
            .map(|_| {
                s.tokenizer
                    .as_ref()
                    .map(|t| IncrementalDecoder::new(t.clone(), true))
            })
            .collect();
        Ok(EventStream {
            rx: erx,
            decoders,
            open: n,
            prompt_tokens,
        })
    }

    /// Queues an embedding job: each input (token ids) becomes one vector, mean-pooled final
    /// hidden states, L2-normalised. Fails at once on an empty input, one longer than the
    /// context or the KV cache, a bad token id, or a full queue (the job takes one request
    /// place and its tokens). Dropping the returned [`PendingEmbedding`] cancels the job.
    pub fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<PendingEmbedding, SubmitError> {
        let s = &self.shared;
        if s.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
            return Err(SubmitError::EmptyPrompt);
        }
        for input in &inputs {
            let (tokens, limits) = (
                input.len(),
                [
                    (s.max_context, "the context"),
                    (s.capacity_tokens, "the KV cache"),
                ],
            );
            if let Some(&(limit, what)) = limits.iter().find(|(l, _)| tokens > *l) {
                return Err(SubmitError::InputTooLong {
                    tokens,
                    limit,
                    what,
                });
            }
            if let Some(&id) = input.iter().find(|&&t| t as usize >= s.vocab) {
                return Err(SubmitError::InvalidToken { id, vocab: s.vocab });
            }
        }
        let tokens: usize = inputs.iter().map(Vec::len).sum();
        self.reserve(tokens)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sub = embed::EmbedSubmission { inputs, reply };
        if self.tx.send(Command::Embed(sub)).is_err() {
            s.counters.unqueue(tokens);
            return Err(SubmitError::Stopped);
        }
        Ok(PendingEmbedding { rx, tokens })
    }

    /// Takes a place in the admission queue for a request of `tokens` prompt tokens.
    fn reserve(&self, tokens: usize) -> Result<(), SubmitError> {
        let (s, c) = (&self.shared, &self.shared.counters);
        if c.queued_requests.fetch_add(1, Ordering::SeqCst) >= s.config.max_queue {
            c.queued_requests.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(format!(
                "{} requests waiting",
                s.config.max_queue
            )));
        }
        if c.queued_tokens.fetch_add(tokens, Ordering::SeqCst) + tokens > s.config.max_queue_tokens
        {
            c.unqueue(tokens);
            return Err(SubmitError::QueueFull(format!(
                "more than {} prompt tokens waiting",
                s.config.max_queue_tokens
            )));
        }
        Ok(())
    }

    fn check(&self, req: &ValidRequest) -> Result<(), SubmitError> {
        let s = &self.shared;
        if req.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        if req.n == 0 || req.n > MAX_N {
            return Err(SubmitError::InvalidN {
                n: req.n,
                max: MAX_N,
            });
        }
        if req.max_tokens == 0 && req.prompt_logprobs.is_none() {
            return Err(SubmitError::ZeroMaxTokens);
        }
        if let Some(n) = req
            .prompt_logprobs
            .filter(|&n| n > sampling::MAX_TOP_LOGPROBS)
        {
            return Err(SubmitError::PromptLogprobs {
                n,
                max: sampling::MAX_TOP_LOGPROBS,
            });
        }
        let need = req.prompt.len() + req.max_tokens;
        if need > s.max_context {
            return Err(SubmitError::ContextLength {
                prompt: req.prompt.len(),
                max_tokens: req.max_tokens,
                context: s.max_context,
            });
        }
        if need > s.capacity_tokens {
            return Err(SubmitError::TooLarge {
                prompt: req.prompt.len(),
                max_tokens: req.max_tokens,
                need,
                capacity: s.capacity_tokens,
            });
        }
        if let Some(&id) = req.prompt.iter().find(|&&t| t as usize >= s.vocab) {
            return Err(SubmitError::InvalidToken { id, vocab: s.vocab });
        }
        req.sampling.validate(s.vocab)?;
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        let ld = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let ld64 = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            queue_depth: ld(&c.queued_requests),
            queued_tokens: ld(&c.queued_tokens),
            waiting: ld(&c.waiting),
            running: ld(&c.running),
            kv_blocks_used: ld(&c.kv_blocks_used),
            kv_blocks_total: ld(&c.kv_blocks_total),
            kv_cache_bytes: self.shared.kv_cache_bytes,
            prefix_queried_tokens: ld64(&c.prefix_queried_tokens),
            prefix_hit_tokens: ld64(&c.prefix_hit_tokens),
            preemptions: ld64(&c.preemptions),
            cancellations: ld64(&c.cancellations),
            failures: ld64(&c.failures),
            steps: ld64(&c.steps),
            step_micros_total: ld64(&c.step_micros),
            prefill_tokens: ld64(&c.prefill_tokens),
            decode_tokens: ld64(&c.decode_tokens),
            embed_jobs: ld(&c.embed_jobs),
            embed_tokens: ld64(&c.embed_tokens),
        }
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Tokens the KV cache holds.
    pub fn capacity_tokens(&self) -> usize {
        self.shared.capacity_tokens
    }

    /// The model's context length.
    pub fn max_context(&self) -> usize {
        self.shared.max_context
    }

    /// The width of the model's hidden states: the length of an embedding.
    pub fn hidden_size(&self) -> usize {
        self.shared.hidden_size
    }

    /// Stops admitting, lets in-flight requests finish until `grace` has passed, cancels the
    /// rest (they get `Finished { reason: Cancelled }`), and waits for the worker to exit.
    pub fn shutdown(&self, grace: Duration) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.tx.send(Command::Shutdown {
            deadline: Instant::now() + grace,
        });
        let handle = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the engine worker panicked");
            }
        }
    }
}

impl Counters {
    /// Gives back a request's place in the admission queue.
    fn unqueue(&self, tokens: usize) {
        self.queued_tokens.fetch_sub(tokens, Ordering::SeqCst);
        self.queued_requests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The result of an embedding job to come. Dropping it cancels the job.
pub struct PendingEmbedding {
    rx: tokio::sync::oneshot::Receiver<embed::EmbedResult>,
    tokens: usize,
}

impl PendingEmbedding {
    /// Tokens of all inputs together.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The vectors, one per input in order; `Err` when the job failed or the engine stopped.
    pub async fn wait(self) -> embed::EmbedResult {
        self.rx
            .await
            .unwrap_or_else(|_| Err("the engine stopped".into()))
    }

    /// [`PendingEmbedding::wait`] for plain threads (not inside an async runtime).
    pub fn blocking_wait(self) -> embed::EmbedResult {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err("the engine stopped".into()))
    }
}

/// The events of one request. Dropping it cancels the request.
pub struct EventStream {
    rx: tmpsc::UnboundedReceiver<WorkerEvent>,
    decoders: Vec<Option<IncrementalDecoder>>,
    open: usize,
    prompt_tokens: usize,
}

impl EventStream {
    /// The next event; `None` once every choice has finished or failed.
    pub async fn recv(&mut self) -> Option<Event> {
        if self.open == 0 {
            return None;
        }
        let ev = self.rx.recv().await;
        self.convert(ev)
    }

    /// The next event, blocking the calling thread (not for use inside an async runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        if self.open == 0 {
            return None;
        }
        let ev = self.rx.blocking_recv();
        self.convert(ev)
    }

    /// Prompt tokens of the request.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    fn decoder(&mut self, index: usize) -> Option<&mut IncrementalDecoder> {
        self.decoders.get_mut(index).and_then(|d| d.as_mut())
    }

    fn convert(&mut self, ev: Option<WorkerEvent>) -> Option<Event> {
        let Some(ev) = ev else {
            // The worker went away without finishing us: report it rather than hang.
            let open = std::mem::take(&mut self.open);
            return (open > 0).then(|| Event::Failed {
                index: 0,
                error: "the engine stopped".into(),
            });
        };
        Some(match ev {
            WorkerEvent::PromptLogprobs { index, tokens } => {
                Event::PromptLogprobs { index, tokens }
            }
            WorkerEvent::Token {
                index,
                id,
                logprob,
                top_logprobs,
            } => Event::Token {
                index,
                id,
                text: self.decoder(index).map(|d| d.push(id)).unwrap_or_default(),
                logprob,
                top_logprobs,
            },
            WorkerEvent::Finished {
                index,
                reason,
                usage,
                timings,
            } => {
                self.open = self.open.saturating_sub(1);
                Event::Finished {
                    index,
                    reason,
                    usage,
                    timings,
                    text: self.decoder(index).map(|d| d.flush()).unwrap_or_default(),
                }
            }
            WorkerEvent::Failed { index, error } => {
                self.open = self.open.saturating_sub(1);
                Event::Failed { index, error }
            }
        })
    }
}

#[cfg(test)]
mod tests;
