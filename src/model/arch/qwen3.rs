//! `qwen3` GGUFs (Qwen 3, dense): the Llama decoder with an RMSNorm over every Q and K head
//! before RoPE, no biases, RoPE over halves.

use crate::model::llama::LayerWeights;
use crate::model::loader::gguf::GgufReader;
use crate::model::loader::LoadError;

/// Layer `i`: Llama's tensors plus `attn_q_norm` and `attn_k_norm` (`[head_dim]` each).
pub(crate) fn gguf_layer(r: &mut GgufReader<'_>, i: usize) -> Result<LayerWeights, LoadError> {
    let mut layer = r.layer(i)?;
    layer.extras.q_norm = Some(r.dense(&format!("blk.{i}.attn_q_norm.weight"))?);
    layer.extras.k_norm = Some(r.dense(&format!("blk.{i}.attn_k_norm.weight"))?);
    Ok(layer)
}
