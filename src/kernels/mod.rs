//! wick's own CPU kernels: quantized matmuls `y[m, n] = x[m, k] · W[n, k]ᵀ` for GGUF weights
//! (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), with the activations quantized to int8 exactly as
//! llama.cpp's CPU backend does, so the integer dot products are llama.cpp's.
//!
//! - [`Linear`] is what the model holds: our [`QuantMatmul`] for quantized weights on the CPU,
//!   candle's `QMatMul` for everything else.
//! - [`QuantMatmul`] packs the weights once at load time and runs them on the [`Isa`] detected
//!   then (AVX-512 VNNI, AVX-512, AVX2, or portable scalar code), split over a [`ThreadPool`].
//! - [`paged_attention`] is causal attention over the paged KV cache, reading blocks in place
//!   with an online softmax, GQA-aware, for mixed prefill chunks and decode tokens.
//! - Results are batch-invariant: a row's outputs are bit-identical whatever else is in the
//!   batch, however the work is tiled or split over threads, and on every instruction set.
//!
//! Runs on whichever thread calls the model, plus the pool's workers. Never allocates per
//! element, never spins while idle, never splits a reduction across threads.

mod attention;
mod formats;
mod isa;
mod linear;
mod matmul;
mod pack;
mod pool;
mod quantize;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use attention::{paged_attention, AttentionError, AttnSeq, KvElem, PagedKv, Scoring};
pub use formats::{dequantize_row, WeightType};
pub use isa::Isa;
pub use linear::Linear;
pub use matmul::{KernelError, QuantMatmul};
pub use pool::{default_threads, ThreadPool};
pub use quantize::{quantize_row_q8, quantize_row_q8k, Q8Block, Q8KBlock};
