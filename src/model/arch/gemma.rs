//! `gemma2` and `gemma3` GGUFs: embeddings scaled by `sqrt(hidden)`, GeGLU (tanh GELU on the
//! gate), an RMSNorm before and after both attention and MLP, sliding-window layers
//! alternating with global ones, RoPE over halves; Gemma 2 soft-caps attention and output
//! logits, Gemma 3 normalizes Q and K per head and gives its sliding layers their own RoPE base.
//!
//! Gemma's RMSNorm multiplies by `1 + w`; llama.cpp's converter stores `1 + w` in the GGUF
//! (every `*norm.weight`), so the file's weights are used as they are, as llama.cpp does.
//! The query scale is `1 / sqrt(head_dim)`, except for the 27B models (46 and 62 layers),
//! whose `query_pre_attn_scalar` is `hidden / heads`: llama.cpp keys it on the layer count,
//! the metadata does not carry it.

use super::{opt_softcap, sliding_layers, Activation, ArchOptions};
use crate::model::llama::{LayerWeights, LlamaConfig};
use crate::model::loader::gguf::{GgufReader, Meta};
use crate::model::loader::LoadError;

/// What Gemma 2 and 3 share: scaled embeddings, GeGLU, the query scale.
fn common(cfg: &LlamaConfig, base: ArchOptions, layers_27b: usize) -> ArchOptions {
    let query_pre_attn = if cfg.num_layers == layers_27b {
        cfg.hidden_size / cfg.num_heads
    } else {
        cfg.head_dim
    };
    ArchOptions {
        activation: Activation::GeluTanh,
        embed_scale: Some((cfg.hidden_size as f32).sqrt()),
        attn_scale: Some(1.0 / (query_pre_attn as f32).sqrt()),
        ..base
    }
}

/// Per layer its window: `window` on the sliding layers, `None` on the global ones.
fn windows(sliding: &[bool], window: usize) -> Vec<Option<usize>> {
    sliding.iter().map(|&s| s.then_some(window)).collect()
}

pub(crate) fn gguf_options_gemma2(
    meta: &Meta<'_>,
    cfg: &LlamaConfig,
    base: ArchOptions,
) -> Result<ArchOptions, LoadError> {
    // llama.cpp's defaults where the keys are missing: a 4096 window on every other layer,
    // caps of 50 (attention) and 30 (output).
    let window = meta
        .opt_usize("gemma2.attention.sliding_window")?
        .unwrap_or(4096);
    let sliding = sliding_layers(meta, "gemma2", cfg.num_layers, 2)?;
    let local_theta = meta.opt_f64("gemma2.rope.freq_base_swa")?;
    Ok(ArchOptions {
        windows: windows(&sliding, window),
        attn_softcap: opt_softcap(meta, "gemma2.attn_logit_softcapping")?.or(Some(50.0)),
        final_softcap: opt_softcap(meta, "gemma2.final_logit_softcapping")?.or(Some(30.0)),
        local_rope_theta: local_theta.map(|t| t as f32),
        ..common(cfg, base, 46)
    })
}

pub(crate) fn gguf_options_gemma3(
    meta: &Meta<'_>,
    cfg: &LlamaConfig,
    base: ArchOptions,
) -> Result<ArchOptions, LoadError> {
    let window = meta
        .opt_usize("gemma3.attention.sliding_window")?
        .filter(|&w| w > 0);
    let (windows, local_theta) = match window {
        Some(w) => {
            let sliding = sliding_layers(meta, "gemma3", cfg.num_layers, 6)?;
            let theta = meta
                .opt_f64("gemma3.rope.freq_base_swa")?
                .unwrap_or(10_000.0);
            (windows(&sliding, w), Some(theta as f32))
        }
        None => (Vec::new(), None),
    };
    Ok(ArchOptions {
        windows,
        final_softcap: opt_softcap(meta, "gemma3.final_logit_softcapping")?,
        local_rope_theta: local_theta,
        ..common(cfg, base, 62)
    })
}

/// Layer `i`: Llama's tensors plus `post_attention_norm` and `post_ffw_norm`, and for Gemma 3
/// (`qk_norm`) `attn_q_norm` and `attn_k_norm`.
pub(crate) fn gguf_layer(
    r: &mut GgufReader<'_>,
    i: usize,
    qk_norm: bool,
) -> Result<LayerWeights, LoadError> {
    let t = |s: &str| format!("blk.{i}.{s}.weight");
    let mut layer = r.layer(i)?;
    layer.extras.post_attn_norm = Some(r.dense(&t("post_attention_norm"))?);
    layer.extras.post_ffn_norm = Some(r.dense(&t("post_ffw_norm"))?);
    if qk_norm {
        layer.extras.q_norm = Some(r.dense(&t("attn_q_norm"))?);
        layer.extras.k_norm = Some(r.dense(&t("attn_k_norm"))?);
    }
    Ok(layer)
}
