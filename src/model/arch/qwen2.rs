//! `qwen2` GGUFs (Qwen 2 / 2.5): the Llama decoder with biases on the Q, K and V projections,
//! RoPE over halves.

use crate::model::llama::{AttnBias, LayerWeights};
use crate::model::loader::gguf::GgufReader;
use crate::model::loader::LoadError;

/// Layer `i`: Llama's tensors plus `attn_{q,k,v}.bias`.
pub(crate) fn gguf_layer(r: &mut GgufReader<'_>, i: usize) -> Result<LayerWeights, LoadError> {
    let mut layer = r.layer(i)?;
    let b = |s: &str| format!("blk.{i}.attn_{s}.bias");
    layer.extras.bias = Some(AttnBias {
        q: r.dense(&b("q"))?,
        k: r.dense(&b("k"))?,
        v: r.dense(&b("v"))?,
    });
    Ok(layer)
}
