//! The architectures wick runs, one file each, on the shared Llama-family decoder of
//! [`super::llama`]: what each architecture reads from a GGUF's metadata (its hyper-parameters
//! under `{arch}.*`), which tensors its layers have, and which of the decoder's options it
//! switches on ([`ArchOptions`]: biases, Q/K norms, post-norms, GeGLU, soft-capping, sliding
//! windows, scaled embeddings).
//!
//! Runs once at load on the caller's thread. Every architecture follows what llama.cpp's
//! converter stores and what llama.cpp computes for it, so the two agree on the same file.

pub mod gemma;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;

use super::llama::{LayerWeights, LlamaConfig, RopeStyle};
use super::loader::gguf::{GgufReader, Meta};
use super::loader::LoadError;

/// An architecture, by its GGUF `general.architecture` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM, TinyLlama, Mistral (with its sliding window where the file has one).
    #[default]
    Llama,
    /// Qwen 2 / 2.5: biases on Q, K and V.
    Qwen2,
    /// Qwen 3: RMSNorm over each Q and K head, no biases.
    Qwen3,
    /// Phi-3: fused QKV and gate/up matrices.
    Phi3,
    /// Gemma 2: scaled embeddings, GeGLU, pre- and post-norms, soft-capping, every other layer
    /// sliding-window.
    Gemma2,
    /// Gemma 3: Gemma 2's layers with Q/K norms, five sliding layers to one global, separate
    /// RoPE bases, no attention soft-capping.
    Gemma3,
}

/// Every architecture the GGUF loader builds, by name.
pub const ARCHITECTURES: &[Arch] = &[
    Arch::Llama,
    Arch::Qwen2,
    Arch::Qwen3,
    Arch::Phi3,
    Arch::Gemma2,
    Arch::Gemma3,
];

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        ARCHITECTURES.iter().copied().find(|a| a.name() == name)
    }

    /// How the GGUF stores Q and K rows for RoPE: llama.cpp's converter permutes them for
    /// `llama` only; the others rotate halves (llama.cpp's NEOX RoPE).
    pub fn gguf_rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Interleaved,
            _ => RopeStyle::Half,
        }
    }

    /// The architecture's options, from the GGUF metadata; `cfg` holds the common
    /// hyper-parameters already read.
    pub(crate) fn gguf_options(
        self,
        meta: &Meta<'_>,
        cfg: &LlamaConfig,
    ) -> Result<ArchOptions, LoadError> {
        let base = ArchOptions {
            arch: self,
            ..ArchOptions::default()
        };
        match self {
            Arch::Llama => llama::gguf_options(meta, cfg, base),
            Arch::Qwen2 | Arch::Qwen3 => Ok(base),
            Arch::Phi3 => phi3::gguf_options(meta, base),
            Arch::Gemma2 => gemma::gguf_options_gemma2(meta, cfg, base),
            Arch::Gemma3 => gemma::gguf_options_gemma3(meta, cfg, base),
        }
    }

    /// Decoder layer `i`'s weights, under the GGUF's `blk.{i}.` names.
    pub(crate) fn gguf_layer(
        self,
        r: &mut GgufReader<'_>,
        i: usize,
    ) -> Result<LayerWeights, LoadError> {
        match self {
            Arch::Llama => r.layer(i),
            Arch::Qwen2 => qwen2::gguf_layer(r, i),
            Arch::Qwen3 => qwen3::gguf_layer(r, i),
            Arch::Phi3 => phi3::gguf_layer(r, i),
            Arch::Gemma2 => gemma::gguf_layer(r, i, false),
            Arch::Gemma3 => gemma::gguf_layer(r, i, true),
        }
    }

    /// Whether the output layer is always the embedding table, even when the file has an
    /// `output.weight` (llama.cpp's Gemma 2 reads only the table).
    pub fn always_tied(self) -> bool {
        self == Arch::Gemma2
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    #[default]
    Silu,
    /// GeGLU with the tanh approximation of GELU (Gemma).
    GeluTanh,
}

/// What an architecture switches on in the shared decoder. The default is plain Llama.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArchOptions {
    pub arch: Arch,
    pub activation: Activation,
    /// Per layer, its sliding window (`None`: global attention). Shorter than the layer count
    /// (empty, for most models) means global for the layers it does not cover.
    pub windows: Vec<Option<usize>>,
    /// Attention logit soft-cap (Gemma 2): scores become `cap * tanh(score / cap)`.
    pub attn_softcap: Option<f32>,
    /// Final logit soft-cap (Gemma 2), the same on the output logits.
    pub final_softcap: Option<f32>,
    /// Multiplies the embeddings before the first layer (Gemma: `sqrt(hidden)`).
    pub embed_scale: Option<f32>,
    /// Query scale when it is not `1 / sqrt(head_dim)`.
    pub attn_scale: Option<f32>,
    /// RoPE base of the sliding-window layers, which use no RoPE scaling, where it differs
    /// from the global one (Gemma 3: 10,000 against 1,000,000).
    pub local_rope_theta: Option<f32>,
}

impl ArchOptions {
    /// Layer `layer`'s sliding window, if it has one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.windows.get(layer).copied().flatten()
    }

    /// Checks the options against a model of `num_layers` layers; the message names the field.
    pub fn validate(&self, num_layers: usize) -> Result<(), String> {
        if self.windows.len() > num_layers {
            return Err(format!(
                "{} sliding-window entries for {num_layers} layers",
                self.windows.len()
            ));
        }
        if self.windows.iter().flatten().any(|&w| w == 0) {
            return Err("a sliding window must be positive, got 0".into());
        }
        let positive = |v: Option<f32>| v.is_none_or(|x| x.is_finite() && x > 0.0);
        let fields = [
            ("attn_softcap", self.attn_softcap),
            ("final_softcap", self.final_softcap),
            ("embed_scale", self.embed_scale),
            ("attn_scale", self.attn_scale),
            ("local_rope_theta", self.local_rope_theta),
        ];
        match fields.iter().find(|(_, v)| !positive(*v)) {
            Some((name, v)) => Err(format!("{name} must be positive, got {v:?}")),
            None => Ok(()),
        }
    }
}

/// A soft-cap read from `key`: absent or 0 (how converters write "none") is no cap.
pub(crate) fn opt_softcap(meta: &Meta<'_>, key: &str) -> Result<Option<f32>, LoadError> {
    Ok(meta.opt_f64(key)?.filter(|&c| c != 0.0).map(|c| c as f32))
}

/// Which layers slide: `{arch}.attention.sliding_window_pattern` as an array of booleans
/// (one per layer), or as `n` (every layer but each `n`-th slides; llama.cpp's convention),
/// else `default_pattern`.
pub(crate) fn sliding_layers(
    meta: &Meta<'_>,
    arch: &str,
    num_layers: usize,
    default_pattern: usize,
) -> Result<Vec<bool>, LoadError> {
    let key = format!("{arch}.attention.sliding_window_pattern");
    if let Some(flags) = meta.opt_bools(&key)? {
        if flags.len() != num_layers {
            return Err(meta.bad_value(&key, &format!("{num_layers} booleans"), flags.len()));
        }
        return Ok(flags);
    }
    let n = meta.opt_usize(&key)?.unwrap_or(default_pattern);
    Ok((0..num_layers).map(|il| n == 0 || il % n < n - 1).collect())
}
