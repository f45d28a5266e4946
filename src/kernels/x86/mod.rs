//! x86-64 SIMD kernels. One `#[target_feature]` entry point per [`Isa`] runs a whole task
//! (rows x column groups); everything below it is `#[inline(always)]` and generic over the
//! vector width ([`simd::Simd`]) and the weight type ([`tiles::Tile`]), so each entry point
//! compiles into straight-line code for its instruction set.
//!
//! Runs on the thread-pool workers and the caller of a matmul. Only entered through
//! [`run_task`], which checks the CPU features and every bound the unsafe code relies on.
#![allow(unsafe_code)]

mod quant;
mod simd;
mod tiles;

use std::ops::Range;

use simd::{Avx2, Avx512, Simd};
use tiles::Tile;

use super::pack::{qs_bytes, sc_bytes, Interleaved, COLS};
use super::quantize::{Q8Block, Q8KBlock};
use super::{Isa, WeightType};

/// Quantized activations, `rows x blocks`, row-major.
#[derive(Clone, Copy)]
pub(crate) enum Acts<'a> {
    Q8(&'a [Q8Block]),
    K(&'a [Q8KBlock]),
}

/// One task: output rows `rows` x the columns of groups `groups` (clamped to `n`).
pub(crate) struct Task<'a> {
    pub w: &'a Interleaved,
    pub acts: Acts<'a>,
    pub rows: Range<usize>,
    pub groups: Range<usize>,
}

impl Task<'_> {
    /// The task's output columns.
    pub fn cols(&self) -> Range<usize> {
        self.groups.start * COLS..(self.groups.end * COLS).min(self.w.n)
    }
}

/// Computes a task into `out` (`rows.len()` rows of `cols().len()` values, row-major).
///
/// # Panics
/// If `isa` is [`Isa::Scalar`] or not supported by this CPU, or the task is out of bounds.
pub(crate) fn run_task(isa: Isa, t: &Task<'_>, out: &mut [f32]) {
    let w = t.w;
    let act_rows = match (w.kind.k_quant(), t.acts) {
        (false, Acts::Q8(a)) => a.len() / w.blocks.max(1),
        (true, Acts::K(a)) => a.len() / w.blocks.max(1),
        _ => panic!("invariant: activations are quantized for {:?}", w.kind),
    };
    assert!(t.rows.end <= act_rows && t.groups.end <= w.groups);
    assert_eq!(out.len(), t.rows.len() * t.cols().len());
    assert!(
        isa != Isa::Scalar && isa.is_supported(),
        "{isa:?} cannot run here"
    );
    // SAFETY: the CPU has the entry point's features (checked just above). The packed buffers
    // hold `groups * blocks` (group, block) records of `qs_bytes` / `sc_bytes` by construction
    // (`Interleaved::pack`), the task's groups and rows are within them and within the
    // activations (checked above), and the kernels read nothing else; they write only through
    // `out`, whose length is checked.
    unsafe {
        match isa {
            Isa::Avx2 => run_avx2(t, out),
            Isa::Avx512 => run_avx512(t, out),
            Isa::Avx512Vnni => run_avx512_vnni(t, out),
            Isa::Scalar => unreachable!("checked above"),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2(t: &Task<'_>, out: &mut [f32]) {
    drive::<Avx2>(t, out)
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn run_avx512(t: &Task<'_>, out: &mut [f32]) {
    drive::<Avx512<false>>(t, out)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
unsafe fn run_avx512_vnni(t: &Task<'_>, out: &mut [f32]) {
    drive::<Avx512<true>>(t, out)
}

#[inline(always)]
unsafe fn drive<S: Simd>(t: &Task<'_>, out: &mut [f32]) {
    match (t.w.kind, t.acts) {
        (WeightType::Q4_0, Acts::Q8(a)) => drive_kind::<S, tiles::Q4_0>(t, a, out),
        (WeightType::Q4_1, Acts::Q8(a)) => drive_kind::<S, tiles::Q4_1>(t, a, out),
        (WeightType::Q8_0, Acts::Q8(a)) => drive_kind::<S, tiles::Q8_0>(t, a, out),
        (WeightType::Q4K, Acts::K(a)) => drive_kind::<S, tiles::Q4K>(t, a, out),
        (WeightType::Q6K, Acts::K(a)) => drive_kind::<S, tiles::Q6K>(t, a, out),
        _ => unreachable!("checked by run_task"),
    }
}

/// Where one tile's results go: the task's output and the position of its first column.
struct Dest<'o> {
    out: &'o mut [f32],
    /// Output row length (the task's column count).
    ld: usize,
    /// Task row of the tile's first row, and the tile's first column within the task.
    row: usize,
    col: usize,
    /// Valid columns in the tile (fewer than `LANES` at the right edge of `W`).
    n: usize,
}

/// Column groups outer, row tiles inner: a group's weights (a few KiB) stay in L1 while every
/// row of the task passes over them.
#[inline(always)]
unsafe fn drive_kind<S: Simd, K: Tile>(t: &Task<'_>, acts: &[K::Act], out: &mut [f32]) {
    let w = t.w;
    let (qb, sb) = (qs_bytes(K::KIND), sc_bytes(K::KIND));
    let cols = t.cols();
    let ld = cols.len();
    let max = K::max_rows(S::LANES);
    for g in t.groups.clone() {
        let qs = w.qs.as_slice().as_ptr().add(g * w.blocks * qb);
        let sc = w.sc.as_slice().as_ptr().add(g * w.blocks * sb);
        for col0 in (0..COLS).step_by(S::LANES) {
            let c = g * COLS + col0;
            if c >= w.n {
                break;
            }
            let mut r = t.rows.start;
            while r < t.rows.end {
                let left = t.rows.end - r;
                let mut d = Dest {
                    out: &mut *out,
                    ld,
                    row: r - t.rows.start,
                    col: c - cols.start,
                    n: S::LANES.min(w.n - c),
                };
                let a = acts.as_ptr().add(r * w.blocks);
                r += if left >= 8 && max >= 8 {
                    emit::<S, K, 8>(qs, sc, col0, a, w.blocks, &mut d)
                } else if left >= 4 && max >= 4 {
                    emit::<S, K, 4>(qs, sc, col0, a, w.blocks, &mut d)
                } else if left >= 2 {
                    emit::<S, K, 2>(qs, sc, col0, a, w.blocks, &mut d)
                } else {
                    emit::<S, K, 1>(qs, sc, col0, a, w.blocks, &mut d)
                };
            }
        }
    }
}

/// Runs one `R`-row tile starting at activation row `a` and stores it; returns `R`.
#[inline(always)]
unsafe fn emit<S: Simd, K: Tile, const R: usize>(
    qs: *const u8,
    sc: *const u8,
    col0: usize,
    a: *const K::Act,
    blocks: usize,
    d: &mut Dest<'_>,
) -> usize {
    let rows: [*const K::Act; R] = std::array::from_fn(|i| a.add(i * blocks));
    let res = K::tile::<S, R>(qs, sc, col0, rows, blocks);
    let mut tmp = [0f32; COLS];
    for (i, v) in res.into_iter().enumerate() {
        S::store(tmp.as_mut_ptr(), v);
        let at = (d.row + i) * d.ld + d.col;
        d.out[at..at + d.n].copy_from_slice(&tmp[..d.n]);
    }
    R
}

/// Quantizes one activation row to [`Q8Block`]s with `isa`'s instructions; the same bits as
/// [`crate::kernels::quantize_row_q8`].
pub(crate) fn quantize_row_q8(isa: Isa, x: &[f32], out: &mut [Q8Block]) {
    assert!(isa.is_supported() && x.len() == out.len() * super::quantize::QK8);
    // SAFETY: the CPU has the features of the function called (checked above); the functions
    // touch only `x` and `out`, whose lengths match.
    unsafe {
        match isa {
            Isa::Avx512 | Isa::Avx512Vnni => quant::q8_avx512(x, out),
            Isa::Avx2 => quant::q8_avx2(x, out),
            Isa::Scalar => super::quantize::quantize_row_q8(x, out),
        }
    }
}

/// As [`quantize_row_q8`], to [`Q8KBlock`]s.
pub(crate) fn quantize_row_q8k(isa: Isa, x: &[f32], out: &mut [Q8KBlock]) {
    assert!(isa.is_supported() && x.len() == out.len() * super::quantize::QKK);
    match isa {
        // SAFETY: as in `quantize_row_q8`.
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { quant::q8k_avx512(x, out) },
        _ => super::quantize::quantize_row_q8k(x, out),
    }
}
