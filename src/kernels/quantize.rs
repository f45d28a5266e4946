//! Activations quantized to int8 blocks, once per matmul, exactly as ggml's CPU backend does
//! for the weight type at hand, so the integer dot products equal llama.cpp's:
//!
//! - [`Q8Block`] (32 values) serves Q4_0 and Q8_0 (ggml's `block_q8_0`) and Q4_1 (ggml's
//!   `block_q8_1`, whose extra `s = d·Σq` is kept here too). Like ggml's AVX2 `quantize_row_q8_0`
//!   / `quantize_row_q8_1`: `d = amax / 127`, quants `round_half_even(x · 127 / amax)`, `d`
//!   stored as f16, `s` computed from the f32 `d` and stored as f16.
//! - [`Q8KBlock`] (256 values) serves the K-quants, as ggml's `quantize_row_q8_K_ref`: the scale
//!   comes from the signed value of largest magnitude (first one on ties), `d` stays f32, and
//!   the sums of every 16 quants (`bsums`) go along.

use half::f16;

/// Values per [`Q8Block`].
pub const QK8: usize = 32;
/// Values per [`Q8KBlock`].
pub const QKK: usize = 256;

/// 32 activations as int8 with their scale.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(16))]
pub struct Q8Block {
    pub qs: [i8; QK8],
    /// Scale, rounded through f16 as ggml stores it.
    pub d: f32,
    /// `d · Σ qs` (with the f32 `d`) rounded through f16: ggml's `block_q8_1::s`.
    pub s: f32,
    /// `Σ qs`, for kernels that store weights with an offset.
    pub sum: i32,
}

impl Q8Block {
    pub const ZERO: Q8Block = Q8Block {
        qs: [0; QK8],
        d: 0.0,
        s: 0.0,
        sum: 0,
    };
}

/// 256 activations as int8 with their f32 scale and group sums.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(16))]
pub struct Q8KBlock {
    pub qs: [i8; QKK],
    pub d: f32,
    /// Sums of each 16 quants (ggml's `bsums`).
    pub bsums: [i16; QKK / 16],
    /// Sums of each 32 quants (`bsums[2i] + bsums[2i + 1]`), for Q4_K's minimums.
    pub bsums32: [i16; QKK / 32],
}

impl Q8KBlock {
    pub const ZERO: Q8KBlock = Q8KBlock {
        qs: [0; QKK],
        d: 0.0,
        bsums: [0; QKK / 16],
        bsums32: [0; QKK / 32],
    };
}

/// Round half to even for `|v| < 2^22`, as `_mm256_round_ps(_MM_ROUND_NEAREST)` and ggml's
/// `nearest_int` do; plain adds, so it vectorizes without SSE4.1.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    (v + MAGIC) - MAGIC
}

/// Largest `|x|`; eight independent lanes so the loop vectorizes (max is order-free).
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    lanes.into_iter().fold(0.0, f32::max)
}

/// Quantizes one row (`x.len() == out.len() * 32`).
pub fn quantize_row_q8(x: &[f32], out: &mut [Q8Block]) {
    debug_assert_eq!(x.len(), out.len() * QK8);
    for (xb, o) in x.chunks_exact(QK8).zip(out.iter_mut()) {
        let amax = amax(xb);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut q = [0f32; QK8];
        for (q, &v) in q.iter_mut().zip(xb) {
            *q = round_even(v * id);
        }
        let mut sum = 0i32;
        for (o, &q) in o.qs.iter_mut().zip(&q) {
            *o = q as i8;
            sum += q as i32;
        }
        o.d = f16::from_f32(d).to_f32();
        o.s = f16::from_f32(d * sum as f32).to_f32();
        o.sum = sum;
    }
}

/// Quantizes one row (`x.len() == out.len() * 256`).
pub fn quantize_row_q8k(x: &[f32], out: &mut [Q8KBlock]) {
    debug_assert_eq!(x.len(), out.len() * QKK);
    for (xb, o) in x.chunks_exact(QKK).zip(out.iter_mut()) {
        let amax = amax(xb);
        if amax == 0.0 {
            *o = Q8KBlock::ZERO;
            continue;
        }
        // ggml keeps the sign of the first value of largest magnitude.
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let mut q = [0f32; QKK];
        for (q, &v) in q.iter_mut().zip(xb) {
            *q = round_even(iscale * v).min(127.0);
        }
        for (o, &q) in o.qs.iter_mut().zip(&q) {
            *o = q as i8;
        }
        for (s, g) in o.bsums.iter_mut().zip(o.qs.chunks_exact(16)) {
            *s = g.iter().map(|&v| v as i16).sum();
        }
        for (i, s) in o.bsums32.iter_mut().enumerate() {
            *s = o.bsums[2 * i] + o.bsums[2 * i + 1];
        }
        o.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's `quantize_row_q8_1` AVX2 path, written out value by value.
    fn ggml_q8_1(x: &[f32]) -> ([i8; 32], f16, f16) {
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = max / 127.0;
        let id = if max != 0.0 { 127.0 / max } else { 0.0 };
        let mut qs = [0i8; 32];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(x) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        (qs, f16::from_f32(d), f16::from_f32(d * sum as f32))
    }

    #[test]
    fn q8_blocks_match_ggml_including_ties() {
        // Halves land exactly on .5 after scaling by 127/amax = 1: ties go to even.
        let mut x: Vec<f32> = (0..32).map(|i| i as f32 - 16.5).collect();
        x[3] = 127.0;
        x.extend((0..32).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.013));
        x.extend([0.0; 32]);
        let mut out = vec![Q8Block::ZERO; 3];
        quantize_row_q8(&x, &mut out);
        for (b, o) in out.iter().enumerate() {
            let (qs, d, s) = ggml_q8_1(&x[b * 32..b * 32 + 32]);
            assert_eq!(o.qs, qs, "block {b}");
            assert_eq!(o.d, d.to_f32());
            assert_eq!(o.s, s.to_f32());
            assert_eq!(o.sum, qs.iter().map(|&q| q as i32).sum::<i32>());
        }
        assert_eq!(out[0].qs[0], -16, "-16.5 rounds to even");
        assert_eq!(out[0].qs[1], -16, "-15.5 rounds to even");
    }

    #[test]
    fn q8k_keeps_the_sign_of_the_first_largest_value() {
        let mut x = vec![0.5f32; 256];
        x[7] = -2.0;
        x[9] = 2.0;
        let mut out = vec![Q8KBlock::ZERO];
        quantize_row_q8k(&x, &mut out);
        let o = &out[0];
        assert_eq!(o.d, 2.0 / 127.0);
        assert_eq!(o.qs[7], -127);
        assert_eq!(o.qs[9], 127);
        assert_eq!(o.qs[0], 32); // 0.5 * 63.5 = 31.75
        assert_eq!(o.bsums[0], 14 * 32, "-127 and 127 cancel");
        assert_eq!(o.bsums32[0], o.bsums[0] + o.bsums[1]);
        let zero = vec![0f32; 256];
        quantize_row_q8k(&zero, &mut out);
        assert_eq!(out[0], Q8KBlock::ZERO);
    }
}
