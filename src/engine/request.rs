//! What the engine takes: a [`ValidRequest`] (token ids, limits already checked against the
//! [`ModelLimits`] the engine reported at start), and those limits.

use crate::constraint::Constraint;
use crate::sampling::{SamplingParams, MAX_TOP_LOGPROBS};

/// Most parallel choices per request.
pub const MAX_N: usize = 16;

/// A request validated against [`ModelLimits`]: token ids only from here on. The engine trusts
/// these limits (the API's validation stage checks them); a prompt id outside the vocabulary
/// still fails the request with an event rather than reaching the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRequest {
    /// Not empty.
    pub prompt: Vec<u32>,
    /// Most tokens to generate per choice; `prompt.len() + max_tokens` fits
    /// [`ModelLimits::max_sequence_tokens`]. 0 only when scoring the prompt (score only: each
    /// choice then finishes with `Length` once the prompt is scored).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end a choice (EOS and friends).
    pub stop_ids: Vec<u32>,
    /// Parallel choices (1..=[`MAX_N`]); they share the prompt's KV blocks.
    pub n: usize,
    /// Higher runs first; FCFS within a priority.
    pub priority: i32,
    /// `Some(k)`: score the prompt too: one [`super::Event::PromptScores`] with every prompt
    /// token's logprob and its top `k` alternatives, before the first token. The prompt is
    /// then computed afresh, never taken from the prefix cache.
    pub prompt_logprobs: Option<usize>,
    /// The grammar the output must follow (`response_format`, forced tool calls), compiled
    /// on the HTTP side; each choice steps its own copy.
    pub constraint: Option<Constraint>,
}

impl ValidRequest {
    /// The most tokens this request can count: its prompt and `n` choices of `max_tokens`.
    pub fn token_budget(&self) -> usize {
        self.prompt.len() + self.n * self.max_tokens
    }

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

/// The facts requests are validated against, fixed when the engine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelLimits {
    /// Token ids are below this.
    pub vocab: usize,
    /// The model's context length.
    pub max_context: usize,
    /// Tokens the KV cache holds, all sequences together.
    pub kv_capacity_tokens: usize,
    /// Most choices per request.
    pub max_n: usize,
    /// Most alternatives per token in a logprobs report.
    pub max_top_logprobs: usize,
    /// The width of the model's hidden states: the length of an embedding.
    pub hidden_size: usize,
}

impl ModelLimits {
    /// Limits of a model with this vocabulary, context and width over a cache of
    /// `kv_capacity_tokens`.
    pub fn new(vocab: usize, max_context: usize, hidden_size: usize, kv: usize) -> Self {
        Self {
            vocab,
            max_context,
            kv_capacity_tokens: kv,
            max_n: MAX_N,
            max_top_logprobs: MAX_TOP_LOGPROBS,
            hidden_size,
        }
    }

    /// Tokens one sequence may hold: the context, capped by the KV cache.
    pub fn max_sequence_tokens(&self) -> usize {
        self.max_context.min(self.kv_capacity_tokens)
    }
}
