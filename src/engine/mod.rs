//! The engine: many requests share one model worker, and every forward step serves all of them.
//!
//! The engine speaks token ids only. [`Engine::start`] sizes the KV cache, reports the
//! [`ModelLimits`] requests are validated against, and spawns the worker thread ([`worker`]),
//! which owns the model and the cache. [`EngineHandle::submit`] takes a [`ValidRequest`],
//! reserves a place in the bounded admission queue ([`queue`]; or fails at once with
//! [`SubmitError::QueueFull`]) and returns the request's [`EventStream`] ([`events`]).
//! Dropping the stream cancels the request: the worker frees its sequences and blocks at its
//! next step, whether they are queued, prefilling or decoding. Counters: [`stats`].
//!
//! [`EngineHandle::embed`] queues the other kind of work, an embedding job ([`embed`]): the same
//! worker runs it beside generation, against the same queue limits and KV blocks.
//!
//! Callers run on any thread (the HTTP layer's tasks); nothing here blocks on the worker.

pub mod blocks;
pub mod embed;
mod events;
mod queue;
mod request;
pub mod scheduler;
mod stats;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::DType;

use crate::model::{CausalLm, KvCache, KvCacheConfig, ModelError};
pub use embed::PendingEmbedding;
pub use events::{Event, EventStream, Finish, FinishReason, Timings, Token, TokenLogprob, Usage};
pub use queue::{Admission, QueueFull, Ticket};
pub use request::{ModelLimits, ValidRequest, MAX_N};
use stats::Counters;
pub use stats::EngineStats;

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
    /// Bytes of KV blocks that cached prefixes nobody uses may keep, past which the oldest
    /// are dropped and their pages given back; `None`: [`default_prefix_cache_bytes`].
    pub prefix_cache_bytes: Option<u64>,
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
            prefix_cache_bytes: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
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

enum Command {
    Submit(worker::Submission),
    Embed(embed::EmbedSubmission),
    Shutdown { deadline: Instant },
}

/// What the handles and the worker share.
struct Shared {
    config: EngineConfig,
    limits: ModelLimits,
    counters: Counters,
    queue: Arc<Admission>,
    shutting_down: AtomicBool,
    kv_cache_bytes: u64,
    next_id: AtomicU64,
}

impl Shared {
    /// What `model` over `cache` shares: the limits derive from both.
    fn new<M: CausalLm>(config: EngineConfig, model: &M, cache: &KvCache) -> Self {
        let limits = ModelLimits::new(
            model.vocab_size(),
            model.max_context(),
            model.hidden_size(),
            cache.num_blocks() * cache.block_size(),
        );
        let counters = Counters::default();
        counters
            .kv_blocks_total
            .store(cache.num_blocks(), Ordering::Relaxed);
        Self {
            queue: Admission::new(config.max_queue, config.max_queue_tokens),
            config,
            limits,
            counters,
            shutting_down: AtomicBool::new(false),
            kv_cache_bytes: cache.bytes() as u64,
            next_id: AtomicU64::new(0),
        }
    }
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

/// Largest default prefix-cache budget.
pub const MAX_DEFAULT_PREFIX_CACHE_BYTES: u64 = 512 << 20;

/// The prefix-cache budget when none is configured: an eighth of the KV pool, at most 512 MiB.
pub fn default_prefix_cache_bytes(kv_cache_bytes: u64) -> u64 {
    (kv_cache_bytes / 8).min(MAX_DEFAULT_PREFIX_CACHE_BYTES)
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
        let shared = Arc::new(Shared::new(config.clone(), &model, &cache));
        tracing::info!(
            blocks = num_blocks,
            block_size = config.block_size,
            kv_bytes = cache.bytes(),
            prefix_cache_bytes = config
                .prefix_cache_bytes
                .unwrap_or_else(|| default_prefix_cache_bytes(cache.bytes() as u64)),
            "engine started"
        );
        let (tx, rx) = mpsc::channel();
        let worker_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wick-worker".into())
            .spawn(move || {
                worker::run(worker::Worker::new(model, cache, worker_shared), rx);
            })
            .map_err(EngineError::Thread)?;
        Ok(EngineHandle {
            tx,
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }
}

impl EngineHandle {
    /// Queues a request (validated against [`Self::limits`]); fails at once when the queue is
    /// full or the engine is shutting down. Dropping the returned stream cancels the request.
    pub fn submit(&self, req: ValidRequest) -> Result<EventStream, SubmitError> {
        let ticket = self.reserve(req.prompt.len())?;
        let (events, stream) = EventStream::new(req.n);
        let sub = worker::Submission {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            req,
            events,
            ticket,
            arrived: Instant::now(),
        };
        self.tx
            .send(Command::Submit(sub))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(stream)
    }

    /// Queues an embedding job: each input (token ids, none empty, each within the context and
    /// the KV cache) becomes one vector, mean-pooled final hidden states, L2-normalised. The job
    /// takes one queue place and its tokens. Dropping the returned [`PendingEmbedding`] cancels
    /// the job.
    pub fn embed(&self, inputs: Vec<Vec<u32>>) -> Result<PendingEmbedding, SubmitError> {
        let tokens: usize = inputs.iter().map(Vec::len).sum();
        let ticket = self.reserve(tokens)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let sub = embed::EmbedSubmission {
            inputs,
            reply,
            ticket,
        };
        self.tx
            .send(Command::Embed(sub))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(PendingEmbedding { rx, tokens })
    }

    fn reserve(&self, tokens: usize) -> Result<Ticket, SubmitError> {
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        Ok(self.shared.queue.try_reserve(tokens)?)
    }

    /// What requests are validated against; fixed for the engine's life.
    pub fn limits(&self) -> &ModelLimits {
        &self.shared.limits
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EngineStats {
        let s = &self.shared;
        s.counters.snapshot(&s.queue, s.kv_cache_bytes)
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Stops admitting, lets in-flight requests finish until `grace` has passed, ends the rest
    /// (they get `Finished` with [`FinishReason::Shutdown`]), and waits for the worker to exit.
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

#[cfg(test)]
mod tests;
