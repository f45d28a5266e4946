//! The Llama architecture (Llama 2/3, SmolLM, Mistral-style dense models): RMSNorm, GQA
//! attention with RoPE, SwiGLU MLP, optionally tied embeddings.
//!
//! Weights are immutable; a forward step reads and writes only the caller's [`KvCache`]. Every
//! token carries its own position, so one step serves sequences at different positions, prefill
//! chunks and decode tokens alike. Each token row is computed independently of the other rows in
//! the step (row-wise matmuls, per-row attention), which keeps results batch-invariant.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use super::embedding::Embedding;
use super::kv_cache::{KvCache, KvShape};
use super::{Batch, CausalLm, LogitsWanted, ModelError};
use crate::kernels::{AttnSeq, Linear};

/// How RoPE pairs up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])`: GGUF files, whose converter permutes Q and K rows.
    Interleaved,
    /// Halves `(x[i], x[i + d/2])`: Hugging Face checkpoints (`rotate_half`).
    Half,
}

/// RoPE frequency scaling.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f32,
    },
    /// Llama 3.1's wavelength-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: usize,
    },
    /// Per-frequency divisors, as GGUF files store them (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

/// Hyper-parameters of a Llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: RopeScaling,
    pub rope_style: RopeStyle,
    /// Longest sequence the model was trained for (`context_length`).
    pub max_position: usize,
}

impl LlamaConfig {
    /// Checks the numbers fit together; the message names the field and the values.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position", self.max_position),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive, got 0"));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim must be even for RoPE, got {}",
                self.head_dim
            ));
        }
        if let RopeScaling::FreqFactors(f) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return Err(format!(
                    "rope frequency factors: expected {} values (head_dim / 2), found {}",
                    self.head_dim / 2,
                    f.len()
                ));
            }
        }
        if self.rope_theta.is_nan() || self.rope_theta <= 0.0 {
            return Err(format!(
                "rope_theta must be positive, got {}",
                self.rope_theta
            ));
        }
        Ok(())
    }

    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling applied.
    pub fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim as f64;
        let base: Vec<f64> = (0..self.head_dim / 2)
            .map(|i| 1.0 / (self.rope_theta as f64).powf(2.0 * i as f64 / d))
            .collect();
        match &self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / *factor as f64).collect(),
            RopeScaling::FreqFactors(ff) => {
                base.iter().zip(ff).map(|(f, s)| f / *s as f64).collect()
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let (factor, low, high) = (
                    *factor as f64,
                    *low_freq_factor as f64,
                    *high_freq_factor as f64,
                );
                let orig = *original_max_position as f64;
                let low_wavelen = orig / low;
                let high_wavelen = orig / high;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (orig / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    pub fn kv_shape(&self) -> KvShape {
        KvShape {
            num_layers: self.num_layers,
            num_kv_heads: self.num_kv_heads,
            head_dim: self.head_dim,
        }
    }
}

/// One decoder layer's weights. Matrices are `[out, in]`.
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Tensor,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
}

/// All weights of a model, as a loader or a test builds them.
pub struct LlamaWeights {
    /// Token embeddings, `[vocab, hidden]`: dense in the activation dtype, or quantized
    /// (`Tensor`s convert with `.into()`).
    pub embed: Embedding,
    pub layers: Vec<LayerWeights>,
    pub norm: Tensor,
    /// `[vocab, hidden]`; `None` ties the output to the embeddings.
    pub lm_head: Option<Linear>,
}

/// A loaded Llama. Immutable; `Sync` so tests may share it.
pub struct Llama {
    cfg: LlamaConfig,
    embed: Embedding,
    layers: Vec<LayerWeights>,
    norm: Tensor,
    lm_head: Linear,
    inv_freq: Vec<f64>,
    device: Device,
}

fn matmul_shape(m: &Linear) -> Vec<usize> {
    m.shape()
}

fn check_shape(name: &str, found: &[usize], expected: &[usize]) -> Result<(), String> {
    if found != expected {
        return Err(format!(
            "tensor {name}: expected shape {expected:?}, found {found:?}"
        ));
    }
    Ok(())
}

impl Llama {
    /// Builds a model from its weights, checking every shape against `cfg`.
    pub fn new(cfg: LlamaConfig, weights: LlamaWeights, device: &Device) -> Result<Self, String> {
        cfg.validate()?;
        let (h, ff, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (q_out, kv_out) = (
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        check_shape("token_embd", &weights.embed.dims(), &[v, h])?;
        check_shape("output_norm", weights.norm.dims(), &[h])?;
        if weights.layers.len() != cfg.num_layers {
            return Err(format!(
                "expected {} layers, found {}",
                cfg.num_layers,
                weights.layers.len()
            ));
        }
        for (i, l) in weights.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}");
            check_shape(&n("attn_norm"), l.attn_norm.dims(), &[h])?;
            check_shape(&n("ffn_norm"), l.ffn_norm.dims(), &[h])?;
            check_shape(&n("attn_q"), &matmul_shape(&l.wq), &[q_out, h])?;
            check_shape(&n("attn_k"), &matmul_shape(&l.wk), &[kv_out, h])?;
            check_shape(&n("attn_v"), &matmul_shape(&l.wv), &[kv_out, h])?;
            check_shape(&n("attn_output"), &matmul_shape(&l.wo), &[h, q_out])?;
            check_shape(&n("ffn_gate"), &matmul_shape(&l.w_gate), &[ff, h])?;
            check_shape(&n("ffn_up"), &matmul_shape(&l.w_up), &[ff, h])?;
            check_shape(&n("ffn_down"), &matmul_shape(&l.w_down), &[h, ff])?;
        }
        let lm_head = match weights.lm_head {
            Some(m) => {
                check_shape("output", &matmul_shape(&m), &[v, h])?;
                m
            }
            None => match weights.embed.dense() {
                Some(t) => Linear::Candle(QMatMul::Tensor(t.clone())),
                None => {
                    return Err(
                        "a tied LM head needs a dense embedding table, or its own Linear".into(),
                    )
                }
            },
        };
        Ok(Self {
            inv_freq: cfg.inv_freq(),
            cfg,
            embed: weights.embed,
            layers: weights.layers,
            norm: weights.norm,
            lm_head,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The activation dtype (that of the embeddings).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }

    /// cos and sin tables for the step's positions: `[tokens, 1, head_dim / 2]` each.
    fn rope_tables(&self, positions: &[usize]) -> Result<(Tensor, Tensor), ModelError> {
        let half = self.cfg.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = (positions.len(), 1, half);
        let dtype = self.dtype();
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?.to_dtype(dtype)?,
            Tensor::from_vec(sin, shape, &self.device)?.to_dtype(dtype)?,
        ))
    }

    fn apply_rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        match self.cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
            RopeStyle::Half => candle_nn::rotary_emb::rope(x, cos, sin),
        }
    }

    fn attention(
        &self,
        idx: usize,
        h: &Tensor,
        rope: &(Tensor, Tensor),
        step: &StepIndex,
        batch: &Batch<'_>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let layer = &self.layers[idx];
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let t = h.dim(0)?;
        // Heads as a batch of one-token sequences so every token gets its own position.
        let q = layer.wq.forward(h)?.reshape((t, nh, 1, hd))?;
        let k = layer.wk.forward(h)?.reshape((t, nkv, 1, hd))?;
        let v = layer.wv.forward(h)?.reshape((t, nkv, hd))?;
        let q = self
            .apply_rope(&q, &rope.0, &rope.1)?
            .reshape((t, nh, hd))?;
        let k = self
            .apply_rope(&k, &rope.0, &rope.1)?
            .reshape((t, nkv, hd))?;

        Self::write_kv(idx, &k, &v, batch, cache)?;
        let out = self.attend(idx, &q, &step.attn, batch, cache)?;
        Ok(layer.wo.forward(&out)?)
    }

    /// Stores the step's keys and values, `[tokens, kv_heads, head_dim]`, in each sequence's
    /// blocks.
    fn write_kv(
        idx: usize,
        k: &Tensor,
        v: &Tensor,
        batch: &Batch<'_>,
        cache: &mut KvCache,
    ) -> Result<(), ModelError> {
        let mut offset = 0;
        for s in &batch.seqs {
            let n = s.tokens.len();
            cache.write(
                idx,
                s.blocks,
                s.start_pos,
                &k.narrow(0, offset, n)?,
                &v.narrow(0, offset, n)?,
            )?;
            offset += n;
        }
        Ok(())
    }

    /// Causal attention of `q` (`[tokens, heads, head_dim]`) over each sequence's cached
    /// context: `[tokens, heads * head_dim]` in `q`'s dtype.
    fn attend(
        &self,
        idx: usize,
        q: &Tensor,
        attn: &AttnIndex,
        batch: &Batch<'_>,
        cache: &KvCache,
    ) -> Result<Tensor, ModelError> {
        let (nh, hd) = (self.cfg.num_heads, self.cfg.head_dim);
        let t = q.dim(0)?;
        let scale = 1.0 / (hd as f32).sqrt();
        match attn {
            // CPU: our kernel reads the blocks in place.
            AttnIndex::InPlace { rows } => {
                let seqs = attn_seqs(rows, batch);
                let qv = q.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let out = cache.attend_cpu(idx, &qv, &seqs, nh, scale)?;
                Ok(Tensor::from_vec(out, (t, nh * hd), &self.device)?.to_dtype(q.dtype())?)
            }
            AttnIndex::Gathered {
                slots,
                seqlens_q,
                seqlens_k,
                max_q,
                max_k,
            } => {
                let (kc, vc) = cache.gather(idx, slots)?;
                let (kc, vc) = (kc.to_dtype(q.dtype())?, vc.to_dtype(q.dtype())?);
                Ok(candle_nn::attention::flash_attn_varlen_unfused(
                    q, &kc, &vc, None, seqlens_q, seqlens_k, *max_q, *max_k, scale, true, None,
                    None,
                )?
                .reshape((t, nh * hd))?)
            }
        }
    }

    fn mlp(&self, idx: usize, h: &Tensor) -> candle_core::Result<Tensor> {
        let layer = &self.layers[idx];
        let gate = candle_nn::ops::silu(&layer.w_gate.forward(h)?)?;
        let up = layer.w_up.forward(h)?;
        layer.w_down.forward(&(gate * up)?)
    }

    /// Final hidden states (after the output norm) of the rows `batch` asks logits for:
    /// `[batch.num_logit_rows(), hidden]`, in the model's dtype.
    fn hidden(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        let step = StepIndex::new(batch, cache, &self.cfg, &self.device)?;
        let eps = self.cfg.rms_norm_eps as f32;
        let mut x = self.embed.lookup(&step.tokens, &self.device)?;
        let rope = self.rope_tables(&step.positions)?;
        for (idx, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            x = (x + self.attention(idx, &h, &rope, &step, batch, cache)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (x + self.mlp(idx, &h)?)?;
        }
        let x = if step.logit_rows_all {
            x
        } else {
            x.index_select(&step.logit_rows, 0)?
        };
        Ok(candle_nn::ops::rms_norm(&x, &self.norm, eps)?)
    }
}

impl CausalLm for Llama {
    fn forward(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        let x = self.hidden(batch, cache)?;
        if x.dim(0)? == 0 {
            return Ok(Tensor::zeros(
                (0, self.cfg.vocab_size),
                DType::F32,
                &self.device,
            )?);
        }
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }

    fn forward_hidden(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        Ok(self.hidden(batch, cache)?.to_dtype(DType::F32)?)
    }

    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    fn kv_shape(&self) -> KvShape {
        self.cfg.kv_shape()
    }

    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn max_context(&self) -> usize {
        self.cfg.max_position
    }

    fn device(&self) -> &Device {
        &self.device
    }
}

/// The index tensors of one step, built once and shared by every layer.
struct StepIndex {
    /// The step's token ids, sequence after sequence.
    tokens: Vec<u32>,
    /// Position of every token.
    positions: Vec<usize>,
    /// Rows (token indices in the step) that want logits.
    logit_rows: Tensor,
    logit_rows_all: bool,
    attn: AttnIndex,
}

/// Where attention finds each sequence's context: what the device's attention path needs.
enum AttnIndex {
    /// CPU: our kernel reads the blocks in place. Per sequence, its first token's row in the
    /// step.
    InPlace { rows: Vec<usize> },
    /// Off the CPU: the context is gathered out of the blocks into one varlen batch.
    Gathered {
        /// `[sum of context lengths]` cache slots, sequence after sequence, positions in order.
        slots: Tensor,
        /// `[B]` new tokens per sequence.
        seqlens_q: Tensor,
        /// `[B]` context length (cached + new) per sequence.
        seqlens_k: Tensor,
        max_q: usize,
        max_k: usize,
    },
}

impl StepIndex {
    fn new(
        batch: &Batch<'_>,
        cache: &KvCache,
        cfg: &LlamaConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        check_batch(batch, cache, cfg)?;
        let total = batch.num_tokens();
        let mut tokens = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut logit_rows = Vec::new();
        for s in &batch.seqs {
            let row0 = tokens.len();
            match s.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => logit_rows.push((row0 + s.tokens.len() - 1) as u32),
                LogitsWanted::All => {
                    logit_rows.extend((row0..row0 + s.tokens.len()).map(|r| r as u32))
                }
            }
            tokens.extend_from_slice(s.tokens);
            positions.extend(s.start_pos..s.start_pos + s.tokens.len());
        }
        let logit_rows_all = logit_rows.len() == total;
        let n_rows = logit_rows.len();
        Ok(Self {
            tokens,
            positions,
            logit_rows: Tensor::from_vec(logit_rows, n_rows, device)?,
            logit_rows_all,
            attn: AttnIndex::new(batch, cache, device)?,
        })
    }
}

/// Checks every sequence of the batch has tokens, stays inside the model's context and
/// vocabulary, and has the cache blocks its positions need.
fn check_batch(batch: &Batch<'_>, cache: &KvCache, cfg: &LlamaConfig) -> Result<(), ModelError> {
    if batch.seqs.is_empty() {
        return Err(ModelError::InvalidBatch(
            "the batch has no sequences".into(),
        ));
    }
    for (i, s) in batch.seqs.iter().enumerate() {
        if s.tokens.is_empty() {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {i} has no tokens"
            )));
        }
        let end = s.start_pos + s.tokens.len();
        if end > cfg.max_position {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {i} reaches position {end}, past the model's context of {}",
                cfg.max_position
            )));
        }
        if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::InvalidBatch(format!(
                "token id {bad} out of range: vocabulary has {} tokens",
                cfg.vocab_size
            )));
        }
        cache.check_blocks(s.blocks, end)?;
    }
    Ok(())
}

impl AttnIndex {
    /// The index for `device`'s attention path; `batch` has passed [`check_batch`].
    fn new(batch: &Batch<'_>, cache: &KvCache, device: &Device) -> Result<Self, ModelError> {
        if device.is_cpu() {
            let rows = batch
                .seqs
                .iter()
                .scan(0, |row, s| {
                    let row0 = *row;
                    *row += s.tokens.len();
                    Some(row0)
                })
                .collect();
            return Ok(Self::InPlace { rows });
        }
        let mut slots = Vec::new();
        let (mut seqlens_q, mut seqlens_k) = (Vec::new(), Vec::new());
        for s in &batch.seqs {
            let end = s.start_pos + s.tokens.len();
            slots.extend((0..end).map(|p| cache.slot(s.blocks, p) as u32));
            seqlens_q.push(s.tokens.len() as u32);
            seqlens_k.push(end as u32);
        }
        let max_q = seqlens_q.iter().copied().max().unwrap_or(0) as usize;
        let max_k = seqlens_k.iter().copied().max().unwrap_or(0) as usize;
        let (nq, nk, ns) = (seqlens_q.len(), seqlens_k.len(), slots.len());
        Ok(Self::Gathered {
            slots: Tensor::from_vec(slots, ns, device)?,
            seqlens_q: Tensor::from_vec(seqlens_q, nq, device)?,
            seqlens_k: Tensor::from_vec(seqlens_k, nk, device)?,
            max_q,
            max_k,
        })
    }
}

/// The step's sequences as the CPU attention kernel takes them; `rows[i]` is sequence i's
/// first row.
fn attn_seqs<'a>(rows: &[usize], batch: &Batch<'a>) -> Vec<AttnSeq<'a>> {
    batch
        .seqs
        .iter()
        .zip(rows)
        .map(|(s, &row)| AttnSeq {
            row,
            len: s.tokens.len(),
            start_pos: s.start_pos,
            blocks: s.blocks,
        })
        .collect()
}
