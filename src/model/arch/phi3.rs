//! `phi3` GGUFs (Phi-3, Phi-3.5, Phi-4 mini): Q, K and V in one fused matrix (`attn_qkv`),
//! gate and up in one (`ffn_up`, gate rows first), RoPE over halves.
//!
//! The fused matrices are split by rows at load, exactly (rows are whole quantization
//! blocks), so the layer runs as a Llama layer. llama.cpp turns Phi's sliding window off
//! (its converters wrote wrong values), and so does wick. LongRoPE files (128k context, with
//! `rope_factors_long`) are refused.

use super::ArchOptions;
use crate::model::llama::LayerWeights;
use crate::model::loader::gguf::{GgufReader, Meta};
use crate::model::loader::LoadError;

pub(crate) fn gguf_options(meta: &Meta<'_>, base: ArchOptions) -> Result<ArchOptions, LoadError> {
    if meta.has_tensor("rope_factors_long.weight") {
        return Err(meta.unsupported(
            "phi3 with LongRoPE factors (rope_factors_long)",
            "Phi-3 models with the original RoPE (4k context variants)",
        ));
    }
    Ok(base)
}

/// Layer `i`: `attn_qkv` split into Q, K and V (or the three separate matrices where the file
/// has them), `ffn_up` split into gate and up.
pub(crate) fn gguf_layer(r: &mut GgufReader<'_>, i: usize) -> Result<LayerWeights, LoadError> {
    let t = |s: &str| format!("blk.{i}.{s}.weight");
    let (q_out, kv_out) = r.attn_dims();
    let (wq, wk, wv) = if r.has(&t("attn_qkv")) {
        let mut parts = r
            .split_rows(&t("attn_qkv"), &[q_out, kv_out, kv_out])?
            .into_iter();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(q), Some(k), Some(v)) => (q, k, v),
            _ => return Err(r.shape_error(&t("attn_qkv"), "three parts")),
        }
    } else {
        (
            r.matmul(&t("attn_q"))?,
            r.matmul(&t("attn_k"))?,
            r.matmul(&t("attn_v"))?,
        )
    };
    let ff = r.ffn_dim();
    let mut gate_up = r.split_rows(&t("ffn_up"), &[ff, ff])?.into_iter();
    let (Some(w_gate), Some(w_up)) = (gate_up.next(), gate_up.next()) else {
        return Err(r.shape_error(&t("ffn_up"), "two halves"));
    };
    Ok(LayerWeights {
        attn_norm: r.dense(&t("attn_norm"))?,
        wq,
        wk,
        wv,
        wo: r.matmul(&t("attn_output"))?,
        ffn_norm: r.dense(&t("ffn_norm"))?,
        w_gate,
        w_up,
        w_down: r.matmul(&t("ffn_down"))?,
        extras: Default::default(),
    })
}
