//! SIMD versions of the activation quantizers in [`crate::kernels::quantize`], bit-identical to
//! them (the max is order-free, `cvtps2dq` rounds half to even as the scalar code does, and
//! the integer sums are exact). With the matmuls this fast, quantizing `x` is a visible part
//! of a call.

use std::arch::x86_64::*;

use half::f16;

use crate::kernels::quantize::{Q8Block, Q8KBlock, QK8, QKK};

/// # Safety
/// The CPU must have AVX-512 F/BW (and AVX2, FMA, F16C).
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn q8_avx512(x: &[f32], out: &mut [Q8Block]) {
    for (xb, o) in x.chunks_exact(QK8).zip(out.iter_mut()) {
        // SAFETY: `xb` holds 32 f32 and `o.qs` 32 bytes: the two loads and two stores stay
        // inside them.
        unsafe {
            let p = xb.as_ptr();
            let (v0, v1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
            let d = amax / 127.0;
            let id = _mm512_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
            let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
            let qs = o.qs.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(qs, _mm512_cvtepi32_epi8(q0));
            _mm_storeu_si128(qs.add(1), _mm512_cvtepi32_epi8(q1));
            let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
            o.d = f16::from_f32(d).to_f32();
            o.s = f16::from_f32(d * sum as f32).to_f32();
            o.sum = sum;
        }
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW (and AVX2, FMA, F16C).
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub(crate) unsafe fn q8k_avx512(x: &[f32], out: &mut [Q8KBlock]) {
    for (xb, o) in x.chunks_exact(QKK).zip(out.iter_mut()) {
        // SAFETY: `xb` holds 256 f32 (16 loads of 16) and `o.qs` 256 bytes (16 stores of 16).
        unsafe {
            let p = xb.as_ptr();
            let mut m = _mm512_setzero_ps();
            for i in 0..16 {
                m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(p.add(16 * i))));
            }
            let amax = _mm512_reduce_max_ps(m);
            if amax == 0.0 {
                *o = Q8KBlock::ZERO;
                continue;
            }
            let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
            let iscale = -127.0 / max;
            let s = _mm512_set1_ps(iscale);
            let top = _mm512_set1_epi32(127);
            let qs = o.qs.as_mut_ptr().cast::<__m128i>();
            for i in 0..16 {
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(p.add(16 * i)), s));
                let q = _mm512_min_epi32(q, top);
                _mm_storeu_si128(qs.add(i), _mm512_cvtepi32_epi8(q));
                o.bsums[i] = _mm512_reduce_add_epi32(q) as i16;
            }
            for (i, s) in o.bsums32.iter_mut().enumerate() {
                *s = o.bsums[2 * i] + o.bsums[2 * i + 1];
            }
            o.d = 1.0 / iscale;
        }
    }
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_avx2(x: &[f32], out: &mut [Q8Block]) {
    for (xb, o) in x.chunks_exact(QK8).zip(out.iter_mut()) {
        // SAFETY: `xb` holds 32 f32 (4 loads of 8) and `o.qs` 32 bytes (one 32-byte store).
        unsafe {
            let p = xb.as_ptr();
            let v = [0, 8, 16, 24].map(|i| _mm256_loadu_ps(p.add(i)));
            let sign = _mm256_set1_ps(-0.0);
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_hadd_epi32(s, s);
            let sum = _mm_cvtsi128_si32(_mm_hadd_epi32(s, s));
            // Packing interleaves 128-bit lanes; the permute puts the bytes back in order.
            let b = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(o.qs.as_mut_ptr().cast(), b);
            o.d = f16::from_f32(d).to_f32();
            o.s = f16::from_f32(d * sum as f32).to_f32();
            o.sum = sum;
        }
    }
}
