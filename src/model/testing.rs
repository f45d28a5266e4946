//! Tiny random-weight Llamas built in code, for tests and benches. Deterministic per seed.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::kernels::Linear;

use super::llama::{LayerWeights, Llama, LlamaConfig, LlamaWeights, RopeScaling, RopeStyle};

/// A small GQA config: 4 query heads over 2 KV heads, dims that quantize in 32-blocks.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 96,
        hidden_size: 64,
        intermediate_size: 128,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::None,
        rope_style: RopeStyle::Interleaved,
        max_position: 512,
        arch: Default::default(),
    }
}

struct Gen {
    rng: ChaCha8Rng,
    device: Device,
}

impl Gen {
    fn tensor(&mut self, dims: &[usize], scale: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| (self.rng.random::<f32>() * 2.0 - 1.0) * scale)
            .collect();
        Tensor::from_vec(data, dims, &self.device).expect("invariant: dims match data")
    }

    fn norm(&mut self, n: usize) -> Tensor {
        let data: Vec<f32> = (0..n)
            .map(|_| 0.8 + 0.4 * self.rng.random::<f32>())
            .collect();
        Tensor::from_vec(data, n, &self.device).expect("invariant: dims match data")
    }

    fn matmul(&mut self, out: usize, inp: usize, quant: Option<GgmlDType>) -> Linear {
        let w = self.tensor(&[out, inp], 1.0 / (inp as f32).sqrt() * 1.7);
        match quant {
            None => QMatMul::Tensor(w).into(),
            Some(dt) => Linear::from_qtensor(
                QTensor::quantize(&w, dt).expect("invariant: test dims are block multiples"),
            )
            .expect("invariant: quantized weights build a matmul"),
        }
    }
}

/// A random model with `cfg`'s shapes. `quant` quantizes the matrices (dims must be multiples
/// of the type's block size); `None` keeps them dense f32.
pub fn random_llama(
    cfg: &LlamaConfig,
    seed: u64,
    quant: Option<GgmlDType>,
    device: &Device,
) -> Llama {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(seed),
        device: device.clone(),
    };
    let (h, ff) = (cfg.hidden_size, cfg.intermediate_size);
    let (q, kv) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
    );
    let layers = (0..cfg.num_layers)
        .map(|_| LayerWeights {
            attn_norm: g.norm(h),
            wq: g.matmul(q, h, quant),
            wk: g.matmul(kv, h, quant),
            wv: g.matmul(kv, h, quant),
            wo: g.matmul(h, q, quant),
            ffn_norm: g.norm(h),
            w_gate: g.matmul(ff, h, quant),
            w_up: g.matmul(ff, h, quant),
            w_down: g.matmul(h, ff, quant),
            extras: Default::default(),
        })
        .collect();
    let embed = g.tensor(&[cfg.vocab_size, h], 1.0);
    // Tied output, stored quantized as GGUF files do; dense models multiply by the table itself.
    let lm_head = quant.map(|dt| {
        let q = QTensor::quantize(&embed, dt).expect("invariant: test dims are block multiples");
        Linear::from_qtensor(q).expect("invariant: quantized weights build a matmul")
    });
    let weights = LlamaWeights {
        embed: embed.into(),
        layers,
        norm: g.norm(h),
        lm_head,
    };
    Llama::new(cfg.clone(), weights, device).expect("invariant: shapes follow the config")
}

use super::{Batch, CausalLm, KvCache, KvCacheConfig, LogitsWanted, ModelError, SeqChunk};
use candle_core::DType;

/// Logits at every position of `tokens`, run alone from an empty cache in one prefill:
/// `tokens.len()` rows of `vocab` values.
pub fn logits_alone(model: &dyn CausalLm, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut cache = KvCache::new(
        model.kv_shape(),
        KvCacheConfig::for_tokens(tokens.len(), 16, DType::F32),
        model.device(),
    )?;
    let blocks: Vec<u32> = (0..cache.num_blocks() as u32).collect();
    let seq = SeqChunk {
        tokens,
        start_pos: 0,
        blocks: &blocks,
        logits: LogitsWanted::All,
    };
    Ok(model
        .forward(&Batch::new(vec![seq]), &mut cache)?
        .to_vec2::<f32>()?)
}

/// Largest absolute difference between two equal-length rows.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "rows differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs several sequences interleaved through one shared cache, in steps that mix prefill
/// chunks and single decode tokens, and returns every position's logits per sequence.
///
/// Block tables are deliberately scattered (sequence `s` takes every `n`-th block), so a
/// sequence's positions are not contiguous in the pool. `chunk(s, step)` gives how many tokens
/// sequence `s` feeds at each step it takes part in.
pub fn logits_interleaved(
    model: &dyn CausalLm,
    seqs: &[Vec<u32>],
    block_size: usize,
    chunk: impl Fn(usize, usize) -> usize,
) -> Result<Vec<Vec<Vec<f32>>>, ModelError> {
    let n = seqs.len();
    let max_blocks = seqs
        .iter()
        .map(|s| s.len().div_ceil(block_size))
        .max()
        .unwrap_or(1);
    let mut cache = KvCache::new(
        model.kv_shape(),
        KvCacheConfig {
            num_blocks: max_blocks * n,
            block_size,
            dtype: DType::F32,
        },
        model.device(),
    )?;
    // Interleave the sequences' blocks, in reverse order for good measure.
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|s| (0..max_blocks).rev().map(|b| (b * n + s) as u32).collect())
        .collect();
    let mut done = vec![0usize; n];
    let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); n];
    let mut step = 0;
    while done.iter().zip(seqs).any(|(d, s)| *d < s.len()) {
        let mut chunks = Vec::new();
        let mut members = Vec::new();
        for s in 0..n {
            let left = seqs[s].len() - done[s];
            if left == 0 {
                continue;
            }
            let take = chunk(s, step).clamp(1, left);
            chunks.push(SeqChunk {
                tokens: &seqs[s][done[s]..done[s] + take],
                start_pos: done[s],
                blocks: &tables[s],
                logits: LogitsWanted::All,
            });
            members.push((s, take));
        }
        let logits = model
            .forward(&Batch::new(chunks), &mut cache)?
            .to_vec2::<f32>()?;
        let mut rows = logits.into_iter();
        for (s, take) in members {
            out[s].extend(rows.by_ref().take(take));
            done[s] += take;
        }
        step += 1;
    }
    Ok(out)
}
