//! `llama` GGUFs (Llama 1/2/3, SmolLM, TinyLlama, Mistral): the plain decoder, plus the
//! sliding window a Mistral file may declare in `llama.attention.sliding_window`.
//!
//! llama.cpp reads no sliding window for `llama` (it attends over the whole context); wick
//! follows the metadata, as Hugging Face's Mistral does, so the two differ only on prompts
//! longer than the window.

use super::ArchOptions;
use crate::model::llama::LlamaConfig;
use crate::model::loader::gguf::Meta;
use crate::model::loader::LoadError;

pub(crate) fn gguf_options(
    meta: &Meta<'_>,
    cfg: &LlamaConfig,
    base: ArchOptions,
) -> Result<ArchOptions, LoadError> {
    let window = meta
        .opt_usize("llama.attention.sliding_window")?
        .filter(|&w| w > 0 && w < cfg.max_position);
    Ok(ArchOptions {
        windows: window.map_or_else(Vec::new, |w| vec![Some(w); cfg.num_layers]),
        ..base
    })
}
