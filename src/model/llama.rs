//! The Llama-family decoder (Llama 2/3, SmolLM, Mistral-style dense models): RMSNorm, GQA
//! attention with RoPE, SwiGLU MLP, optionally tied embeddings; and the options other
//! architectures switch on ([`ArchOptions`], set per architecture in [`super::arch`]): Q/K/V
//! biases, Q/K norms, post-norms, GeGLU, soft-capping, sliding windows, scaled embeddings.
//!
//! Weights are immutable; a forward step reads and writes only the caller's [`KvCache`]. Every
//! token carries its own position, so one step serves sequences at different positions, prefill
//! chunks and decode tokens alike. Each token row is computed independently of the other rows in
//! the step (row-wise matmuls, per-row attention), which keeps results batch-invariant.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

pub use super::arch::{Activation, Arch, ArchOptions};
use super::decoder::{self, StepIndex};
use super::embedding::Embedding;
use super::kv_cache::{KvCache, KvShape};
use super::{Batch, CausalLm, ModelError};
use crate::kernels::{Linear, Scoring};

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
    /// What the architecture adds to the plain Llama decoder.
    pub arch: ArchOptions,
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
        self.arch.validate(self.num_layers)
    }

    /// RoPE inverse frequencies for `theta`, `head_dim / 2` of them, unscaled.
    fn base_inv_freq(&self, theta: f32) -> Vec<f64> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| 1.0 / (theta as f64).powf(2.0 * i as f64 / d))
            .collect()
    }

    /// The sliding-window layers' RoPE inverse frequencies, where they have their own base
    /// (no scaling on them).
    pub fn local_inv_freq(&self) -> Option<Vec<f64>> {
        self.arch.local_rope_theta.map(|t| self.base_inv_freq(t))
    }

    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling applied.
    pub fn inv_freq(&self) -> Vec<f64> {
        let base = self.base_inv_freq(self.rope_theta);
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
    /// What some architectures add; `LayerExtras::default()` for Llama.
    pub extras: LayerExtras,
}

/// Biases of the Q, K and V projections (Qwen 2): `[heads * head_dim]`, `[kv_heads * head_dim]`
/// twice.
pub struct AttnBias {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
}

/// Per-layer weights beyond Llama's, each present only where the architecture has it.
#[derive(Default)]
pub struct LayerExtras {
    pub bias: Option<AttnBias>,
    /// RMSNorm weights over each query / key head, `[head_dim]` (Qwen 3, Gemma 3).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// RMSNorm of the attention output before the residual add, `[hidden]` (Gemma).
    pub post_attn_norm: Option<Tensor>,
    /// RMSNorm of the MLP output before the residual add, `[hidden]` (Gemma).
    pub post_ffn_norm: Option<Tensor>,
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
    /// The sliding layers' own RoPE frequencies (Gemma 3), else `None`.
    local_inv_freq: Option<Vec<f64>>,
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
            check_extras(&n, &l.extras, &cfg)?;
        }
        if !device.is_cpu() && cfg.arch.attn_softcap.is_some() {
            return Err(format!(
                "{}: attention soft-capping runs on the CPU only (use --device cpu)",
                cfg.arch.arch.name()
            ));
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
            local_inv_freq: cfg.local_inv_freq(),
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

    /// cos and sin tables of `inv_freq` for the step's positions: `[tokens, 1, head_dim / 2]`
    /// each.
    fn rope_tables(&self, inv_freq: &[f64], positions: &[usize]) -> Result<Rope, ModelError> {
        let half = self.cfg.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in inv_freq {
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

    /// The step's RoPE tables: the global ones, and the sliding layers' own where they differ.
    fn ropes(&self, positions: &[usize]) -> Result<Ropes, ModelError> {
        let local = match &self.local_inv_freq {
            Some(f) => Some(self.rope_tables(f, positions)?),
            None => None,
        };
        Ok(Ropes {
            global: self.rope_tables(&self.inv_freq, positions)?,
            local,
        })
    }

    fn apply_rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        match self.cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
            RopeStyle::Half => candle_nn::rotary_emb::rope(x, cos, sin),
        }
    }

    /// `x` (`[tokens, heads, head_dim]`) rotated by `rope`, after the per-head RMSNorm `norm`
    /// where the architecture has one.
    fn rope_heads(
        &self,
        x: Tensor,
        norm: Option<&Tensor>,
        rope: &Rope,
    ) -> candle_core::Result<Tensor> {
        let (t, n, hd) = x.dims3()?;
        let x = match norm {
            Some(w) => candle_nn::ops::rms_norm(&x, w, self.cfg.rms_norm_eps as f32)?,
            None => x,
        };
        self.apply_rope(&x.reshape((t, n, 1, hd))?, &rope.0, &rope.1)?
            .reshape((t, n, hd))
    }

    /// Q, K and V of the step, biases added: `[tokens, heads | kv_heads, head_dim]`.
    fn qkv(&self, layer: &LayerWeights, h: &Tensor) -> candle_core::Result<[Tensor; 3]> {
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let t = h.dim(0)?;
        let (mut q, mut k, mut v) = (
            layer.wq.forward(h)?,
            layer.wk.forward(h)?,
            layer.wv.forward(h)?,
        );
        if let Some(b) = &layer.extras.bias {
            q = q.broadcast_add(&b.q)?;
            k = k.broadcast_add(&b.k)?;
            v = v.broadcast_add(&b.v)?;
        }
        Ok([
            q.reshape((t, nh, hd))?,
            k.reshape((t, nkv, hd))?,
            v.reshape((t, nkv, hd))?,
        ])
    }

    /// How layer `idx` scores its keys.
    fn scoring(&self, idx: usize) -> Scoring {
        let a = &self.cfg.arch;
        Scoring {
            scale: a
                .attn_scale
                .unwrap_or(1.0 / (self.cfg.head_dim as f32).sqrt()),
            window: a.window(idx),
            softcap: a.attn_softcap,
        }
    }

    fn attention(
        &self,
        idx: usize,
        h: &Tensor,
        ropes: &Ropes,
        step: &StepIndex,
        batch: &Batch<'_>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let layer = &self.layers[idx];
        let [q, k, v] = self.qkv(layer, h)?;
        // Sliding layers with their own RoPE base (Gemma 3) take the local tables.
        let rope = match (&ropes.local, self.cfg.arch.window(idx)) {
            (Some(local), Some(_)) => local,
            _ => &ropes.global,
        };
        let q = self.rope_heads(q, layer.extras.q_norm.as_ref(), rope)?;
        let k = self.rope_heads(k, layer.extras.k_norm.as_ref(), rope)?;
        decoder::write_kv(idx, &k, &v, batch, cache)?;
        let out = decoder::attend(idx, &q, self.scoring(idx), step, batch, cache)?;
        Ok(layer.wo.forward(&out)?)
    }

    fn mlp(&self, idx: usize, h: &Tensor) -> candle_core::Result<Tensor> {
        let layer = &self.layers[idx];
        let gate = layer.w_gate.forward(h)?;
        let gate = match self.cfg.arch.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            // candle's `gelu` is the tanh approximation, as Gemma's `gelu_pytorch_tanh`.
            Activation::GeluTanh => gate.gelu()?,
        };
        let up = layer.w_up.forward(h)?;
        layer.w_down.forward(&(gate * up)?)
    }

    /// `x` through the RMSNorm `w` where the layer has one.
    fn opt_norm(&self, x: Tensor, w: Option<&Tensor>) -> candle_core::Result<Tensor> {
        match w {
            Some(w) => candle_nn::ops::rms_norm(&x, w, self.cfg.rms_norm_eps as f32),
            None => Ok(x),
        }
    }

    /// Decoder layer `idx` on the residual stream `x` (`[tokens, hidden]`).
    fn layer(
        &self,
        idx: usize,
        x: Tensor,
        ropes: &Ropes,
        step: &StepIndex,
        batch: &Batch<'_>,
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let (layer, eps) = (&self.layers[idx], self.cfg.rms_norm_eps as f32);
        let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
        let a = self.attention(idx, &h, ropes, step, batch, cache)?;
        let x = (x + self.opt_norm(a, layer.extras.post_attn_norm.as_ref())?)?;
        let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
        let m = self.mlp(idx, &h)?;
        Ok((x + self.opt_norm(m, layer.extras.post_ffn_norm.as_ref())?)?)
    }

    /// Final hidden states (after the output norm) of the rows `batch` asks logits for:
    /// `[batch.num_logit_rows(), hidden]`, in the model's dtype.
    fn hidden(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        let step = StepIndex::new(batch, cache, &self.cfg, &self.device)?;
        let eps = self.cfg.rms_norm_eps as f32;
        let mut x = self.embed.lookup(&step.tokens, &self.device)?;
        if let Some(scale) = self.cfg.arch.embed_scale {
            x = (x * scale as f64)?;
        }
        let ropes = self.ropes(&step.positions)?;
        for idx in 0..self.layers.len() {
            x = self.layer(idx, x, &ropes, &step, batch, cache)?;
        }
        let x = if step.logit_rows_all {
            x
        } else {
            x.index_select(&step.logit_rows, 0)?
        };
        Ok(candle_nn::ops::rms_norm(&x, &self.norm, eps)?)
    }
}

/// cos and sin tables, `[tokens, 1, head_dim / 2]` each.
type Rope = (Tensor, Tensor);

/// One step's RoPE tables.
struct Ropes {
    global: Rope,
    /// The sliding layers' own, where their RoPE base differs (Gemma 3).
    local: Option<Rope>,
}

/// Checks the architecture's extra tensors of layer `n("")` against `cfg`.
fn check_extras(
    n: &dyn Fn(&str) -> String,
    e: &LayerExtras,
    cfg: &LlamaConfig,
) -> Result<(), String> {
    let (h, hd) = (cfg.hidden_size, cfg.head_dim);
    let (q_out, kv_out) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
    let dims = |t: &Option<Tensor>| t.as_ref().map(|t| t.dims().to_vec());
    if let Some(b) = &e.bias {
        check_shape(&n("attn_q.bias"), b.q.dims(), &[q_out])?;
        check_shape(&n("attn_k.bias"), b.k.dims(), &[kv_out])?;
        check_shape(&n("attn_v.bias"), b.v.dims(), &[kv_out])?;
    }
    let expected = [
        ("attn_q_norm", dims(&e.q_norm), hd),
        ("attn_k_norm", dims(&e.k_norm), hd),
        ("post_attention_norm", dims(&e.post_attn_norm), h),
        ("post_ffw_norm", dims(&e.post_ffn_norm), h),
    ];
    for (name, found, len) in expected {
        if let Some(found) = found {
            check_shape(&n(name), &found, &[len])?;
        }
    }
    Ok(())
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
        let logits = self.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        Ok(match self.cfg.arch.final_softcap {
            Some(cap) => ((logits / cap as f64)?.tanh()? * cap as f64)?,
            None => logits,
        })
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
