//! One sequence, generated start to finish on the calling thread: what `wick run` and the
//! model tests use. The server uses the engine instead; this is its single-sequence baseline.

use std::time::{Duration, Instant};

use candle_core::{DType, Tensor};

use super::{Batch, CausalLm, KvCache, KvCacheConfig, LogitsWanted, ModelError, SeqChunk};
use crate::sampling::{Sampler, SamplingError, SamplingParams, Token};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt has {prompt} tokens + max_tokens {max_tokens} > context {context}")]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token came (it is in the output, not in the text).
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The callback asked to stop.
    Cancelled,
}

pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end generation (the tokenizer's stop ids).
    pub stop_ids: Vec<u32>,
    /// Prompt tokens per forward call.
    pub prefill_chunk: usize,
    /// The KV cache's element type.
    pub kv_dtype: DType,
}

pub struct Generation {
    pub tokens: Vec<Token>,
    pub finish: Finish,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

const BLOCK_SIZE: usize = 16;

/// Generates from `prompt`. `on_token` sees every sampled token and returns false to stop.
pub fn generate(
    model: &dyn CausalLm,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(&Token) -> bool,
) -> Result<Generation, GenerateError> {
    let mut seq = OneSequence::new(model, prompt, opts)?;
    let t0 = Instant::now();
    let logits = seq.prefill(prompt, opts.prefill_chunk.max(1))?;
    let prompt_time = t0.elapsed();

    let t1 = Instant::now();
    let (tokens, finish) = seq.decode(logits, prompt.len(), opts, on_token)?;
    Ok(Generation {
        tokens,
        finish,
        prompt_time,
        gen_time: t1.elapsed(),
    })
}

/// The one sequence being generated: a cache sized for it, all of whose blocks it owns.
struct OneSequence<'m> {
    model: &'m dyn CausalLm,
    cache: KvCache,
    blocks: Vec<u32>,
    sampler: Sampler,
}

impl<'m> OneSequence<'m> {
    /// Checks the prompt against the model's context and sizes the cache for the prompt plus
    /// `max_tokens`.
    fn new(
        model: &'m dyn CausalLm,
        prompt: &[u32],
        opts: &GenerateOptions,
    ) -> Result<Self, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let context = model.max_context();
        let total = prompt.len() + opts.max_tokens;
        if total > context {
            return Err(GenerateError::TooLong {
                prompt: prompt.len(),
                max_tokens: opts.max_tokens,
                context,
            });
        }
        let cache = KvCache::new(
            model.kv_shape(),
            KvCacheConfig::for_tokens(total, BLOCK_SIZE, opts.kv_dtype),
            model.device(),
        )?;
        let blocks: Vec<u32> = (0..cache.num_blocks() as u32).collect();
        Ok(Self {
            model,
            cache,
            blocks,
            sampler: Sampler::new(opts.sampling.clone(), prompt),
        })
    }

    /// Feeds the prompt `chunk` tokens per forward call; returns the last position's logits
    /// (`[1, vocab]`).
    fn prefill(&mut self, prompt: &[u32], chunk: usize) -> Result<Option<Tensor>, ModelError> {
        let mut logits = None;
        for (i, part) in prompt.chunks(chunk).enumerate() {
            let last = (i + 1) * chunk >= prompt.len();
            let seq = SeqChunk {
                tokens: part,
                start_pos: i * chunk,
                blocks: &self.blocks,
                logits: if last {
                    LogitsWanted::Last
                } else {
                    LogitsWanted::None
                },
            };
            let out = self
                .model
                .forward(&Batch::new(vec![seq]), &mut self.cache)?;
            if last {
                logits = Some(out);
            }
        }
        Ok(logits)
    }

    /// Samples from `logits`, then feeds each sampled token back from position `pos` on,
    /// until a stop token, `max_tokens` or `on_token` asking to stop.
    fn decode(
        &mut self,
        mut logits: Option<Tensor>,
        mut pos: usize,
        opts: &GenerateOptions,
        mut on_token: impl FnMut(&Token) -> bool,
    ) -> Result<(Vec<Token>, Finish), GenerateError> {
        let mut tokens = Vec::new();
        let mut finish = Finish::Length;
        while let Some(l) = logits.take() {
            let row = l
                .squeeze(0)
                .and_then(|r| r.to_vec1::<f32>())
                .map_err(ModelError::from)?;
            let tok = self.sampler.sample(&row)?;
            let id = tok.id;
            let keep_going = on_token(&tok);
            tokens.push(tok);
            if opts.stop_ids.contains(&id) {
                finish = Finish::Stop;
                break;
            }
            if !keep_going {
                finish = Finish::Cancelled;
                break;
            }
            if tokens.len() >= opts.max_tokens {
                break;
            }
            let next = [id];
            let seq = SeqChunk {
                tokens: &next,
                start_pos: pos,
                blocks: &self.blocks,
                logits: LogitsWanted::Last,
            };
            logits = Some(
                self.model
                    .forward(&Batch::new(vec![seq]), &mut self.cache)?,
            );
            pos += 1;
        }
        Ok((tokens, finish))
    }
}
