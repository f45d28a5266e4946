//! Portable kernels: one output at a time, straight from the GGUF blocks. They run on CPUs
//! without the SIMD families and are the oracle the SIMD kernels are tested against.
//!
//! Every kernel, here and in SIMD, computes an output the same way: per block an exact integer
//! dot product (as llama.cpp's), then, block after block in `k` order, the same f32 operations
//! (fused multiply-adds) on one accumulator. That fixed order is what makes a row's result
//! independent of the other rows, of the tiling and of the thread split, and equal across
//! instruction sets bit for bit.

use super::formats::{f16_at, nibbles, Q4KBlock, Q6KBlock, WeightType};
use super::quantize::{Q8Block, Q8KBlock};

/// One output: weight row `w` (GGUF blocks) times one quantized activation row.
pub fn dot(kind: WeightType, w: &[u8], a8: &[Q8Block], ak: &[Q8KBlock]) -> f32 {
    match kind {
        WeightType::Q4_0 => dot_q4_0(w, a8),
        WeightType::Q4_1 => dot_q4_1(w, a8),
        WeightType::Q8_0 => dot_q8_0(w, a8),
        WeightType::Q4K => dot_q4k(w, ak),
        WeightType::Q6K => dot_q6k(w, ak),
    }
}

fn idot(q: &[u8; 32], a: &[i8; 32]) -> i32 {
    q.iter().zip(a).map(|(&q, &a)| q as i32 * a as i32).sum()
}

/// `Σ_b (d_w·d_x) · Σ (q - 8)·x`.
fn dot_q4_0(w: &[u8], a: &[Q8Block]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.chunks_exact(18).zip(a) {
        let isum = idot(&nibbles(&b[2..18]), &a.qs) - 8 * a.sum;
        acc = (f16_at(b, 0) * a.d).mul_add(isum as f32, acc);
    }
    acc
}

/// `Σ_b (d_w·d_x) · Σ q·x + m_w · s_x`.
fn dot_q4_1(w: &[u8], a: &[Q8Block]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.chunks_exact(20).zip(a) {
        let isum = idot(&nibbles(&b[4..20]), &a.qs);
        acc = (f16_at(b, 0) * a.d).mul_add(isum as f32, acc);
        acc = f16_at(b, 2).mul_add(a.s, acc);
    }
    acc
}

/// `Σ_b (d_w·d_x) · Σ w·x`.
fn dot_q8_0(w: &[u8], a: &[Q8Block]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.chunks_exact(34).zip(a) {
        let isum: i32 = b[2..34]
            .iter()
            .zip(&a.qs)
            .map(|(&w, &x)| w as i8 as i32 * x as i32)
            .sum();
        acc = (f16_at(b, 0) * a.d).mul_add(isum as f32, acc);
    }
    acc
}

/// Per superblock: `(d·d_x) · Σ_i sc_i·Σ q·x  -  (dmin·d_x) · Σ_i m_i·Σx`.
fn dot_q4k(w: &[u8], a: &[Q8KBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.chunks_exact(144).zip(a) {
        let blk = Q4KBlock::parse(b);
        let (mut sumi, mut summ) = (0i32, 0i32);
        for i in 0..8 {
            let d: i32 = blk.q[32 * i..32 * i + 32]
                .iter()
                .zip(&a.qs[32 * i..32 * i + 32])
                .map(|(&q, &x)| q as i32 * x as i32)
                .sum();
            sumi += blk.sc[i] as i32 * d;
            summ += blk.m[i] as i32 * a.bsums32[i] as i32;
        }
        acc = (blk.d * a.d).mul_add(sumi as f32, acc);
        acc = (-(blk.dmin * a.d)).mul_add(summ as f32, acc);
    }
    acc
}

/// Per superblock: `(d·d_x) · Σ_i sc_i · (Σ q·x - 32·Σx)` over 16-value sub-blocks.
fn dot_q6k(w: &[u8], a: &[Q8KBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in w.chunks_exact(210).zip(a) {
        let blk = Q6KBlock::parse(b);
        let mut sumi = 0i32;
        for i in 0..16 {
            let d: i32 = blk.q[16 * i..16 * i + 16]
                .iter()
                .zip(&a.qs[16 * i..16 * i + 16])
                .map(|(&q, &x)| q as i32 * x as i32)
                .sum();
            sumi += blk.sc[i] as i32 * (d - 32 * a.bsums[i] as i32);
        }
        acc = (blk.d * a.d).mul_add(sumi as f32, acc);
    }
    acc
}
