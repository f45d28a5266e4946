//! The handful of vector operations the tile kernels use, for AVX2 (8 i32/f32 lanes) and
//! AVX-512 (16 lanes, with or without VNNI). Every method is `#[inline(always)]` so it compiles
//! into the `#[target_feature]` entry point that calls it, with that entry point's features.
//!
//! # Safety
//!
//! Every method is `unsafe`: it may only run on a CPU with the implementation's features
//! (checked once by [`crate::kernels::Isa`] before any kernel runs), and a pointer argument
//! must be valid for reading (or writing) the bytes the method's doc states.

use std::arch::x86_64::*;

pub(crate) trait Simd: Copy {
    /// i32 / f32 lanes per vector: output columns one vector holds.
    const LANES: usize;
    /// Whether [`Simd::dot_q8`] works on the `w + 128` bytes as stored, leaving `128 · Σx`
    /// for the caller to subtract (VNNI), rather than on signed weights.
    const Q8_OFFSET: bool;
    type I: Copy;
    type F: Copy;
    /// Q8_0 weights made ready for [`Simd::dot_q8`].
    type W8: Copy;

    /// `4 · LANES` bytes.
    unsafe fn load(p: *const u8) -> Self::I;
    /// 4 bytes at `p`, repeated in every 32-bit lane.
    unsafe fn bcast4(p: *const u8) -> Self::I;
    unsafe fn splat(x: i32) -> Self::I;
    unsafe fn zero() -> Self::I;
    unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
    /// Shifts within 16-bit lanes (callers mask the bits that cross bytes).
    unsafe fn shr4(a: Self::I) -> Self::I;
    unsafe fn shr2(a: Self::I) -> Self::I;
    unsafe fn shl2(a: Self::I) -> Self::I;
    unsafe fn shl4(a: Self::I) -> Self::I;
    unsafe fn add(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn sub(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn mullo(a: Self::I, b: Self::I) -> Self::I;
    /// Pairs of i16 multiplied and summed into i32 lanes.
    unsafe fn madd16(a: Self::I, b: Self::I) -> Self::I;
    /// `acc + Σ` of the 4 products `u8 · i8` in each 32-bit lane, for weights up to 63, so the
    /// i16 pair sums of the non-VNNI path cannot saturate (`4 · 63 · 127 < 2^15`).
    unsafe fn dpbusd2(acc: Self::I, w0: Self::I, x0: Self::I, w1: Self::I, x1: Self::I) -> Self::I;
    /// Prepares Q8_0 lines as stored (`w ^ 0x80`).
    unsafe fn prep_q8(u: Self::I) -> Self::W8;
    /// `acc + Σ w·x` per lane (plus `128 · Σx` when `Q8_OFFSET`).
    unsafe fn dot_q8(acc: Self::I, w: Self::W8, x: Self::I) -> Self::I;
    /// `LANES` bytes, zero-extended to i32 lanes.
    unsafe fn u8_to_i32(p: *const u8) -> Self::I;
    /// `2 · LANES` bytes, zero-extended to i16 lanes.
    unsafe fn u8_to_i16(p: *const u8) -> Self::I;
    /// `2 · LANES` bytes, sign-extended to i16 lanes.
    unsafe fn i8_to_i16(p: *const u8) -> Self::I;
    /// The low / high i16 of each 32-bit lane, sign-extended.
    unsafe fn lo16(a: Self::I) -> Self::I;
    unsafe fn hi16(a: Self::I) -> Self::I;

    unsafe fn fzero() -> Self::F;
    unsafe fn cvt(a: Self::I) -> Self::F;
    unsafe fn fsplat(x: f32) -> Self::F;
    unsafe fn fmul(a: Self::F, b: Self::F) -> Self::F;
    /// `a · b + c`, rounded once.
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `c - a · b`, rounded once.
    unsafe fn fnmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `LANES` f16 values at `p`.
    unsafe fn load_f16(p: *const u8) -> Self::F;
    /// `LANES` f32 values to `p`.
    unsafe fn store(p: *mut f32, a: Self::F);
}

/// AVX2 + FMA + F16C.
#[derive(Clone, Copy)]
pub(crate) struct Avx2;

impl Simd for Avx2 {
    const LANES: usize = 8;
    const Q8_OFFSET: bool = false;
    type I = __m256i;
    type F = __m256;
    type W8 = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> __m256i {
        _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn splat(x: i32) -> __m256i {
        _mm256_set1_epi32(x)
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn shr4(a: __m256i) -> __m256i {
        _mm256_srli_epi16::<4>(a)
    }
    #[inline(always)]
    unsafe fn shr2(a: __m256i) -> __m256i {
        _mm256_srli_epi16::<2>(a)
    }
    #[inline(always)]
    unsafe fn shl2(a: __m256i) -> __m256i {
        _mm256_slli_epi16::<2>(a)
    }
    #[inline(always)]
    unsafe fn shl4(a: __m256i) -> __m256i {
        _mm256_slli_epi16::<4>(a)
    }
    #[inline(always)]
    unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn mullo(a: __m256i, b: __m256i) -> __m256i {
        _mm256_mullo_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn madd16(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(a, b)
    }
    #[inline(always)]
    unsafe fn dpbusd2(acc: __m256i, w0: __m256i, x0: __m256i, w1: __m256i, x1: __m256i) -> __m256i {
        let p = _mm256_add_epi16(_mm256_maddubs_epi16(w0, x0), _mm256_maddubs_epi16(w1, x1));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn prep_q8(u: __m256i) -> (__m256i, __m256i) {
        let w = _mm256_xor_si256(u, _mm256_set1_epi8(-128));
        (w, _mm256_abs_epi8(w))
    }
    #[inline(always)]
    unsafe fn dot_q8(acc: __m256i, (w, wabs): (__m256i, __m256i), x: __m256i) -> __m256i {
        // |w| · (x with w's sign): u8 · i8 pairs of at most 2 · 128 · 127, no saturation.
        let p = _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(x, w));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn u8_to_i32(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()))
    }
    #[inline(always)]
    unsafe fn u8_to_i16(p: *const u8) -> __m256i {
        _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn i8_to_i16(p: *const u8) -> __m256i {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn lo16(a: __m256i) -> __m256i {
        _mm256_srai_epi32::<16>(_mm256_slli_epi32::<16>(a))
    }
    #[inline(always)]
    unsafe fn hi16(a: __m256i) -> __m256i {
        _mm256_srai_epi32::<16>(a)
    }
    #[inline(always)]
    unsafe fn fzero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn cvt(a: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn fsplat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn fmul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn fnmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fnmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, a: __m256) {
        _mm256_storeu_ps(p, a)
    }
}

/// AVX-512 F/BW; `VNNI` switches the int8 dot products to `vpdpbusd`.
#[derive(Clone, Copy)]
pub(crate) struct Avx512<const VNNI: bool>;

impl<const VNNI: bool> Simd for Avx512<VNNI> {
    const LANES: usize = 16;
    const Q8_OFFSET: bool = VNNI;
    type I = __m512i;
    type F = __m512;
    type W8 = (__m512i, __m512i, __mmask64);

    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn bcast4(p: *const u8) -> __m512i {
        _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn splat(x: i32) -> __m512i {
        _mm512_set1_epi32(x)
    }
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
        _mm512_and_si512(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m512i, b: __m512i) -> __m512i {
        _mm512_or_si512(a, b)
    }
    #[inline(always)]
    unsafe fn shr4(a: __m512i) -> __m512i {
        _mm512_srli_epi16::<4>(a)
    }
    #[inline(always)]
    unsafe fn shr2(a: __m512i) -> __m512i {
        _mm512_srli_epi16::<2>(a)
    }
    #[inline(always)]
    unsafe fn shl2(a: __m512i) -> __m512i {
        _mm512_slli_epi16::<2>(a)
    }
    #[inline(always)]
    unsafe fn shl4(a: __m512i) -> __m512i {
        _mm512_slli_epi16::<4>(a)
    }
    #[inline(always)]
    unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512i, b: __m512i) -> __m512i {
        _mm512_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn mullo(a: __m512i, b: __m512i) -> __m512i {
        _mm512_mullo_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn madd16(a: __m512i, b: __m512i) -> __m512i {
        _mm512_madd_epi16(a, b)
    }
    #[inline(always)]
    unsafe fn dpbusd2(acc: __m512i, w0: __m512i, x0: __m512i, w1: __m512i, x1: __m512i) -> __m512i {
        if VNNI {
            _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc, w0, x0), w1, x1)
        } else {
            let p = _mm512_add_epi16(_mm512_maddubs_epi16(w0, x0), _mm512_maddubs_epi16(w1, x1));
            _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn prep_q8(u: __m512i) -> (__m512i, __m512i, __mmask64) {
        if VNNI {
            (u, u, 0)
        } else {
            let w = _mm512_xor_si512(u, _mm512_set1_epi8(-128));
            (w, _mm512_abs_epi8(w), _mm512_movepi8_mask(w))
        }
    }
    #[inline(always)]
    unsafe fn dot_q8(
        acc: __m512i,
        (u, wabs, neg): (__m512i, __m512i, __mmask64),
        x: __m512i,
    ) -> __m512i {
        if VNNI {
            _mm512_dpbusd_epi32(acc, u, x)
        } else {
            // |w| · (x negated where w < 0), as AVX2's sign trick.
            let xs = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
            let p = _mm512_maddubs_epi16(wabs, xs);
            _mm512_add_epi32(acc, _mm512_madd_epi16(p, _mm512_set1_epi16(1)))
        }
    }
    #[inline(always)]
    unsafe fn u8_to_i32(p: *const u8) -> __m512i {
        _mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn u8_to_i16(p: *const u8) -> __m512i {
        _mm512_cvtepu8_epi16(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn i8_to_i16(p: *const u8) -> __m512i {
        _mm512_cvtepi8_epi16(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn lo16(a: __m512i) -> __m512i {
        _mm512_srai_epi32::<16>(_mm512_slli_epi32::<16>(a))
    }
    #[inline(always)]
    unsafe fn hi16(a: __m512i) -> __m512i {
        _mm512_srai_epi32::<16>(a)
    }
    #[inline(always)]
    unsafe fn fzero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn cvt(a: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(a)
    }
    #[inline(always)]
    unsafe fn fsplat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn fmul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn fnmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fnmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, a: __m512) {
        _mm512_storeu_ps(p, a)
    }
}
