//! The engine's counters: written by the worker (and the admission queue), read as an
//! [`EngineStats`] snapshot from any thread. Relaxed atomics: a snapshot is a consistent-enough
//! view for metrics, never a synchronisation point.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters the worker keeps up to date.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    pub kv_blocks_cached: AtomicUsize,
    pub kv_blocks_resident: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    pub prefix_queried_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub cancellations: AtomicU64,
    pub failures: AtomicU64,
    pub steps: AtomicU64,
    pub step_micros: AtomicU64,
    pub prefill_tokens: AtomicU64,
    pub decode_tokens: AtomicU64,
    pub embed_jobs: AtomicUsize,
    pub embed_tokens: AtomicU64,
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
    /// Unreferenced blocks holding cached prefixes (within the prefix-cache budget).
    pub kv_blocks_cached: usize,
    /// Blocks whose pages may be resident: in use, cached, or free but kept warm.
    pub kv_blocks_resident: usize,
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

impl Counters {
    /// The counters with the queue's figures and the cache size beside them.
    pub fn snapshot(&self, queue: &super::queue::Admission, kv_cache_bytes: u64) -> EngineStats {
        let ld = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let ld64 = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            queue_depth: queue.depth(),
            queued_tokens: queue.tokens(),
            waiting: ld(&self.waiting),
            running: ld(&self.running),
            kv_blocks_used: ld(&self.kv_blocks_used),
            kv_blocks_cached: ld(&self.kv_blocks_cached),
            kv_blocks_resident: ld(&self.kv_blocks_resident),
            kv_blocks_total: ld(&self.kv_blocks_total),
            kv_cache_bytes,
            prefix_queried_tokens: ld64(&self.prefix_queried_tokens),
            prefix_hit_tokens: ld64(&self.prefix_hit_tokens),
            preemptions: ld64(&self.preemptions),
            cancellations: ld64(&self.cancellations),
            failures: ld64(&self.failures),
            steps: ld64(&self.steps),
            step_micros_total: ld64(&self.step_micros),
            prefill_tokens: ld64(&self.prefill_tokens),
            decode_tokens: ld64(&self.decode_tokens),
            embed_jobs: ld(&self.embed_jobs),
            embed_tokens: ld64(&self.embed_tokens),
        }
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}
