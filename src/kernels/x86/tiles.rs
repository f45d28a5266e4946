//! One tile per call: `R` activation rows times one vector of output columns of one group,
//! over the whole `k`. Each weight line is loaded (and unpacked) once for all `R` rows; each
//! row keeps its own accumulators and sees exactly the operations of the scalar kernel in the
//! same order, whatever `R` is.
//!
//! Arguments shared by all kernels: `qs` / `sc` point at the group's quants and scales for
//! block 0 (layouts in [`crate::kernels::pack`]), `col0` is the first column of the vector
//! within the group (0, or 8 for AVX2's second half), `acts[r]` is row `r`'s first activation
//! block, `blocks` the number of blocks along `k`. The caller guarantees `qs`, `sc` and every
//! `acts[r]` are valid for `blocks` blocks.

use super::simd::Simd;
use crate::kernels::pack::{qs_bytes, sc_bytes, COLS};
use crate::kernels::quantize::{Q8Block, Q8KBlock};
use crate::kernels::WeightType;

const LINE: usize = 64;

/// A weight type's tile kernel.
pub(crate) trait Tile {
    type Act;
    const KIND: WeightType;
    /// Largest row tile worth its registers for this vector width.
    fn max_rows(lanes: usize) -> usize;
    /// # Safety
    /// See the module doc and [`Simd`].
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Self::Act; R],
        blocks: usize,
    ) -> [S::F; R];
}

pub(crate) struct Q4_0;
pub(crate) struct Q4_1;
pub(crate) struct Q8_0;
pub(crate) struct Q4K;
pub(crate) struct Q6K;

/// 4 nibble lines (a 32-value block, or a Q4_K sub-block) into `s[r] += Σ q·x`, per row.
#[inline(always)]
unsafe fn nibble_block<S: Simd, const R: usize>(
    q: *const u8,
    xs: [*const u8; R],
    s: &mut [S::I; R],
) {
    let m4 = S::splat(0x0F0F_0F0F);
    for l in 0..4 {
        let raw = S::load(q.add(l * LINE));
        let (lo, hi) = (S::and(raw, m4), S::and(S::shr4(raw), m4));
        for r in 0..R {
            let x = xs[r];
            s[r] = S::dpbusd2(
                s[r],
                lo,
                S::bcast4(x.add(4 * l)),
                hi,
                S::bcast4(x.add(16 + 4 * l)),
            );
        }
    }
}

impl Tile for Q4_0 {
    type Act = Q8Block;
    const KIND: WeightType = WeightType::Q4_0;
    fn max_rows(lanes: usize) -> usize {
        if lanes == 16 {
            8
        } else {
            4
        }
    }
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Q8Block; R],
        blocks: usize,
    ) -> [S::F; R] {
        let (qb, sb) = (qs_bytes(Self::KIND), sc_bytes(Self::KIND));
        let mut acc = [S::fzero(); R];
        for b in 0..blocks {
            let x: [&Q8Block; R] = std::array::from_fn(|r| &*acts[r].add(b));
            let mut s = [S::zero(); R];
            nibble_block::<S, R>(
                qs.add(b * qb + 4 * col0),
                x.map(|x| x.qs.as_ptr().cast()),
                &mut s,
            );
            let d = S::load_f16(sc.add(b * sb + 2 * col0));
            for r in 0..R {
                let s = S::sub(s[r], S::splat(8 * x[r].sum));
                acc[r] = S::fmadd(S::fmul(d, S::fsplat(x[r].d)), S::cvt(s), acc[r]);
            }
        }
        acc
    }
}

impl Tile for Q4_1 {
    type Act = Q8Block;
    const KIND: WeightType = WeightType::Q4_1;
    fn max_rows(lanes: usize) -> usize {
        if lanes == 16 {
            8
        } else {
            4
        }
    }
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Q8Block; R],
        blocks: usize,
    ) -> [S::F; R] {
        let (qb, sb) = (qs_bytes(Self::KIND), sc_bytes(Self::KIND));
        let mut acc = [S::fzero(); R];
        for b in 0..blocks {
            let x: [&Q8Block; R] = std::array::from_fn(|r| &*acts[r].add(b));
            let mut s = [S::zero(); R];
            nibble_block::<S, R>(
                qs.add(b * qb + 4 * col0),
                x.map(|x| x.qs.as_ptr().cast()),
                &mut s,
            );
            let d = S::load_f16(sc.add(b * sb + 2 * col0));
            let m = S::load_f16(sc.add(b * sb + 2 * COLS + 2 * col0));
            for r in 0..R {
                acc[r] = S::fmadd(S::fmul(d, S::fsplat(x[r].d)), S::cvt(s[r]), acc[r]);
                acc[r] = S::fmadd(m, S::fsplat(x[r].s), acc[r]);
            }
        }
        acc
    }
}

impl Tile for Q8_0 {
    type Act = Q8Block;
    const KIND: WeightType = WeightType::Q8_0;
    fn max_rows(lanes: usize) -> usize {
        if lanes == 16 {
            8
        } else {
            4
        }
    }
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Q8Block; R],
        blocks: usize,
    ) -> [S::F; R] {
        let (qb, sb) = (qs_bytes(Self::KIND), sc_bytes(Self::KIND));
        let mut acc = [S::fzero(); R];
        for b in 0..blocks {
            let x: [&Q8Block; R] = std::array::from_fn(|r| &*acts[r].add(b));
            let q = qs.add(b * qb + 4 * col0);
            let mut s = [S::zero(); R];
            for l in 0..8 {
                let w = S::prep_q8(S::load(q.add(l * LINE)));
                for r in 0..R {
                    s[r] = S::dot_q8(s[r], w, S::bcast4(x[r].qs.as_ptr().add(4 * l).cast()));
                }
            }
            let d = S::load_f16(sc.add(b * sb + 2 * col0));
            for r in 0..R {
                let s = if S::Q8_OFFSET {
                    S::sub(s[r], S::splat(128 * x[r].sum))
                } else {
                    s[r]
                };
                acc[r] = S::fmadd(S::fmul(d, S::fsplat(x[r].d)), S::cvt(s), acc[r]);
            }
        }
        acc
    }
}

impl Tile for Q4K {
    type Act = Q8KBlock;
    const KIND: WeightType = WeightType::Q4K;
    fn max_rows(lanes: usize) -> usize {
        if lanes == 16 {
            4
        } else {
            2
        }
    }
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Q8KBlock; R],
        blocks: usize,
    ) -> [S::F; R] {
        let (qb, sb) = (qs_bytes(Self::KIND), sc_bytes(Self::KIND));
        let mut acc = [S::fzero(); R];
        for b in 0..blocks {
            let x: [&Q8KBlock; R] = std::array::from_fn(|r| &*acts[r].add(b));
            let (q, s) = (qs.add(b * qb + 4 * col0), sc.add(b * sb));
            let mut sumi = [S::zero(); R];
            for i in 0..8 {
                let mut d = [S::zero(); R];
                let xs = x.map(|x| x.qs.as_ptr().add(32 * i).cast::<u8>());
                nibble_block::<S, R>(q.add(i * 4 * LINE), xs, &mut d);
                let scale = S::u8_to_i32(s.add(4 * COLS + i * COLS + col0));
                for r in 0..R {
                    sumi[r] = S::add(sumi[r], S::mullo(d[r], scale));
                }
            }
            let mut summ = [S::zero(); R];
            for p in 0..4 {
                let mins = S::u8_to_i16(s.add(12 * COLS + p * 2 * COLS + 2 * col0));
                for r in 0..R {
                    let bs = S::bcast4(x[r].bsums32.as_ptr().add(2 * p).cast());
                    summ[r] = S::add(summ[r], S::madd16(mins, bs));
                }
            }
            let d = S::load_f16(s.add(2 * col0));
            let dmin = S::load_f16(s.add(2 * COLS + 2 * col0));
            for r in 0..R {
                let dx = S::fsplat(x[r].d);
                acc[r] = S::fmadd(S::fmul(d, dx), S::cvt(sumi[r]), acc[r]);
                acc[r] = S::fnmadd(S::fmul(dmin, dx), S::cvt(summ[r]), acc[r]);
            }
        }
        acc
    }
}

impl Tile for Q6K {
    type Act = Q8KBlock;
    const KIND: WeightType = WeightType::Q6K;
    fn max_rows(lanes: usize) -> usize {
        if lanes == 16 {
            4
        } else {
            2
        }
    }
    #[inline(always)]
    unsafe fn tile<S: Simd, const R: usize>(
        qs: *const u8,
        sc: *const u8,
        col0: usize,
        acts: [*const Q8KBlock; R],
        blocks: usize,
    ) -> [S::F; R] {
        let (qb, sb) = (qs_bytes(Self::KIND), sc_bytes(Self::KIND));
        let (m4, m30) = (S::splat(0x0F0F_0F0F), S::splat(0x3030_3030));
        let mut acc = [S::fzero(); R];
        for b in 0..blocks {
            let x: [&Q8KBlock; R] = std::array::from_fn(|r| &*acts[r].add(b));
            let (q, s) = (qs.add(b * qb + 4 * col0), sc.add(b * sb));
            let (mut sumi, mut corr) = ([S::zero(); R], [S::zero(); R]);
            for p in 0..8 {
                let pair = S::i8_to_i16(s.add(2 * COLS + p * 2 * COLS + 2 * col0));
                for (half, scale) in [S::lo16(pair), S::hi16(pair)].into_iter().enumerate() {
                    let i = 2 * p + half;
                    let l = q.add(i * 3 * LINE);
                    let (ql0, ql1, qh) =
                        (S::load(l), S::load(l.add(LINE)), S::load(l.add(2 * LINE)));
                    let v0 = S::or(S::and(ql0, m4), S::and(S::shl4(qh), m30));
                    let v1 = S::or(S::and(S::shr4(ql0), m4), S::and(S::shl2(qh), m30));
                    let v2 = S::or(S::and(ql1, m4), S::and(qh, m30));
                    let v3 = S::or(S::and(S::shr4(ql1), m4), S::and(S::shr2(qh), m30));
                    for r in 0..R {
                        let xq = x[r].qs.as_ptr().add(16 * i).cast::<u8>();
                        let d = S::dpbusd2(S::zero(), v0, S::bcast4(xq), v1, S::bcast4(xq.add(4)));
                        let d = S::dpbusd2(d, v2, S::bcast4(xq.add(8)), v3, S::bcast4(xq.add(12)));
                        sumi[r] = S::add(sumi[r], S::mullo(d, scale));
                    }
                }
                for r in 0..R {
                    let bs = S::bcast4(x[r].bsums.as_ptr().add(2 * p).cast());
                    corr[r] = S::add(corr[r], S::madd16(pair, bs));
                }
            }
            let d = S::load_f16(s.add(2 * col0));
            for r in 0..R {
                let total = S::sub(sumi[r], S::mullo(corr[r], S::splat(32)));
                acc[r] = S::fmadd(S::fmul(d, S::fsplat(x[r].d)), S::cvt(total), acc[r]);
            }
        }
        acc
    }
}
