//! Perplexity over a token stream, computed the way llama.cpp's `llama-perplexity` does:
//! non-overlapping chunks of `ctx` tokens, each from an empty cache at positions `0..ctx`, each
//! scored on its second half (the logits at `ctx/2 .. ctx-2` predict tokens `ctx/2+1 .. ctx-1`),
//! NLL under a log-softmax over the full vocabulary.

use candle_core::DType;

use super::{Batch, CausalLm, KvCache, KvCacheConfig, LogitsWanted, ModelError, SeqChunk};

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("need at least 2 * ctx = {need} tokens, the text has {have}")]
    TooShort { need: usize, have: usize },
    #[error("ctx must be even and at least 8, got {0}")]
    BadContext(usize),
}

#[derive(Debug, Clone)]
pub struct PerplexityReport {
    /// Mean NLL of each chunk.
    pub chunk_nll: Vec<f64>,
    pub mean_nll: f64,
    pub ppl: f64,
    /// Standard error of `ppl` (llama.cpp's estimate: ppl * sqrt(var(nll) / (n - 1))).
    pub ppl_stderr: f64,
    pub scored_tokens: usize,
}

const BLOCK_SIZE: usize = 16;

/// Scores `tokens` in chunks of `ctx`, `batch` chunks per forward call. `on_chunk(i, running
/// ppl)` is called after each chunk.
pub fn perplexity(
    model: &dyn CausalLm,
    tokens: &[u32],
    ctx: usize,
    batch: usize,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityReport, PerplexityError> {
    let n_chunks = count_chunks(tokens.len(), ctx)?;
    let batch = batch.clamp(1, n_chunks);
    let mut slots = ChunkSlots::new(model, ctx, batch)?;
    let mut stats = NllStats::default();
    let mut chunk_nll = Vec::with_capacity(n_chunks);
    let half = ctx / 2;
    let mut first = 0;
    while first < n_chunks {
        let group: Vec<&[u32]> = (first..(first + batch).min(n_chunks))
            .map(|c| &tokens[c * ctx..(c + 1) * ctx])
            .collect();
        let logp = slots.second_half_logp(model, &group)?;
        for (g, t) in group.iter().enumerate() {
            chunk_nll.push(stats.add_chunk(&logp[g * half..(g + 1) * half], t));
            on_chunk(chunk_nll.len() - 1, stats.running_ppl());
        }
        first += group.len();
    }
    Ok(stats.report(chunk_nll))
}

/// How many whole chunks of `ctx` tokens `len` tokens make, checking `ctx` first.
fn count_chunks(len: usize, ctx: usize) -> Result<usize, PerplexityError> {
    if ctx < 8 || !ctx.is_multiple_of(2) {
        return Err(PerplexityError::BadContext(ctx));
    }
    let n_chunks = len / ctx;
    if n_chunks == 0 {
        return Err(PerplexityError::TooShort {
            need: ctx,
            have: len,
        });
    }
    Ok(n_chunks)
}

/// A cache with room for `batch` chunks of `ctx` tokens, each in its own fixed blocks, which
/// every group of chunks reuses from position 0.
struct ChunkSlots {
    cache: KvCache,
    tables: Vec<Vec<u32>>,
    half: usize,
}

impl ChunkSlots {
    fn new(model: &dyn CausalLm, ctx: usize, batch: usize) -> Result<Self, ModelError> {
        let blocks_per_seq = ctx.div_ceil(BLOCK_SIZE);
        let cache = KvCache::new(
            model.kv_shape(),
            KvCacheConfig {
                num_blocks: blocks_per_seq * batch,
                block_size: BLOCK_SIZE,
                dtype: DType::F32,
            },
            model.device(),
        )?;
        let tables = (0..batch)
            .map(|s| ((s * blocks_per_seq) as u32..((s + 1) * blocks_per_seq) as u32).collect())
            .collect();
        Ok(Self {
            cache,
            tables,
            half: ctx / 2,
        })
    }

    /// Runs `group` (at most `batch` chunks of `ctx` tokens) and returns the log-softmax of
    /// every second-half row, chunk after chunk: `group.len() * ctx / 2` rows of `vocab`.
    fn second_half_logp(
        &mut self,
        model: &dyn CausalLm,
        group: &[&[u32]],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let half = self.half;
        // First half: fill the cache only. Second half: every row's logits.
        let prefill = group
            .iter()
            .zip(&self.tables)
            .map(|(t, b)| SeqChunk {
                tokens: &t[..half],
                start_pos: 0,
                blocks: b,
                logits: LogitsWanted::None,
            })
            .collect();
        model.forward(&Batch::new(prefill), &mut self.cache)?;
        let scored = group
            .iter()
            .zip(&self.tables)
            .map(|(t, b)| SeqChunk {
                tokens: &t[half..],
                start_pos: half,
                blocks: b,
                logits: LogitsWanted::All,
            })
            .collect();
        let logits = model.forward(&Batch::new(scored), &mut self.cache)?;
        Ok(
            candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 1)
                .and_then(|t| t.to_vec2::<f32>())?,
        )
    }
}

/// Running sums over every scored token, in the order they are scored.
#[derive(Default)]
struct NllStats {
    sum: f64,
    sum2: f64,
    count: usize,
}

impl NllStats {
    /// Adds one chunk's scores and returns its mean NLL. `logp` holds the chunk's second-half
    /// rows; row i sits at position half + i and predicts token half + i + 1.
    fn add_chunk(&mut self, logp: &[Vec<f32>], chunk: &[u32]) -> f64 {
        let half = logp.len();
        let mut nll_chunk = 0f64;
        for i in 0..half - 1 {
            let nll = -(logp[i][chunk[half + i + 1] as usize] as f64);
            nll_chunk += nll;
            self.sum += nll;
            self.sum2 += nll * nll;
            self.count += 1;
        }
        nll_chunk / (half - 1) as f64
    }

    fn running_ppl(&self) -> f64 {
        (self.sum / self.count as f64).exp()
    }

    fn report(&self, chunk_nll: Vec<f64>) -> PerplexityReport {
        let (sum, sum2, count) = (self.sum, self.sum2, self.count);
        let mean = sum / count as f64;
        let var = sum2 / count as f64 - mean * mean;
        let ppl = mean.exp();
        let ppl_stderr = if var > 0.0 && count > 1 {
            ppl * (var / (count - 1) as f64).sqrt()
        } else {
            0.0
        };
        PerplexityReport {
            chunk_nll,
            mean_nll: mean,
            ppl,
            ppl_stderr,
            scored_tokens: count,
        }
    }
}
