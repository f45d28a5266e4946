//! The model layer: our own Llama-family decoder on candle (Llama, Qwen 2/3, Phi-3, Gemma 2/3), its paged KV cache, and the loaders.
//!
//! Weights are immutable (`&self`); every piece of per-sequence state lives in the [`KvCache`]
//! that the caller owns. One [`CausalLm::forward`] call takes a flat [`Batch`] of token chunks
//! from several sequences, each at its own position with its own block table, so prefill chunks
//! and single decode tokens mix in one step. Runs on whichever thread owns the model (the engine
//! worker, or the CLI); it never blocks on anything but compute.

pub mod arch;
mod decoder;
pub mod device;
pub mod embedding;
pub mod generate;
pub mod hub;
pub mod kv_cache;
pub mod llama;
pub mod loader;
pub mod perplexity;
pub mod testing;
#[cfg(test)]
mod tests;

use candle_core::{Device, Tensor};

pub use kv_cache::{KvCache, KvCacheConfig, KvShape};
pub use llama::{Llama, LlamaConfig, RopeScaling, RopeStyle};
pub use loader::{load, LoadError, LoadedModel, ModelSource};

/// Which rows of a sequence's chunk want logits back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None: a prefill chunk that does not end the prompt.
    None,
    /// The last token's row only: the usual case for the end of a prompt and for decode.
    Last,
    /// Every row: prompt scoring (perplexity, `echo` with logprobs).
    All,
}

impl LogitsWanted {
    /// Rows this chunk contributes to the output, for a chunk of `n` tokens.
    pub fn rows(self, n: usize) -> usize {
        match self {
            LogitsWanted::None => 0,
            LogitsWanted::Last => n.min(1),
            LogitsWanted::All => n,
        }
    }
}

/// One sequence's part of a forward step.
#[derive(Debug, Clone)]
pub struct SeqChunk<'a> {
    /// The new tokens. The cache already holds this sequence's positions `0..start_pos`.
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`.
    pub start_pos: usize,
    /// Block table: block ids in the [`KvCache`] covering positions `0..start_pos + tokens.len()`
    /// (position `p` lives in block `blocks[p / block_size]`, slot `p % block_size`).
    pub blocks: &'a [u32],
    /// Which rows want logits.
    pub logits: LogitsWanted,
}

/// A flat batch: chunks of several sequences, run in one forward step.
#[derive(Debug, Clone, Default)]
pub struct Batch<'a> {
    pub seqs: Vec<SeqChunk<'a>>,
}

impl<'a> Batch<'a> {
    pub fn new(seqs: Vec<SeqChunk<'a>>) -> Self {
        Self { seqs }
    }

    /// Total new tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    /// Rows of the logits tensor that `forward` returns.
    pub fn num_logit_rows(&self) -> usize {
        self.seqs
            .iter()
            .map(|s| s.logits.rows(s.tokens.len()))
            .sum()
    }
}

/// Errors of one forward step. The step's sequences fail; the model stays usable.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// A causal language model that serves many sequences per step.
///
/// Implementations keep no per-sequence state: everything a sequence has computed lives in the
/// `KvCache` passed in, at the blocks its `SeqChunk` names.
pub trait CausalLm: Send {
    /// Runs one step. Returns f32 logits of shape `[batch.num_logit_rows(), vocab]`, rows in
    /// batch order (within a chunk, in token order).
    fn forward(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError>;
    /// Runs one step like [`CausalLm::forward`] but returns the final hidden states (after the
    /// output norm, before the LM head) of the same rows: f32 `[batch.num_logit_rows(),
    /// hidden_size]`. Embeddings pool these.
    fn forward_hidden(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError>;
    /// Width of the hidden states [`CausalLm::forward_hidden`] returns.
    fn hidden_size(&self) -> usize;
    /// The shape of the KV cache this model needs.
    fn kv_shape(&self) -> KvShape;
    fn vocab_size(&self) -> usize;
    /// The longest sequence (prompt + generation) the model supports.
    fn max_context(&self) -> usize;
    fn device(&self) -> &Device;
}
