//! [`QuantMatmul`]: `y[m, n] = x[m, k] · W[n, k]ᵀ` for a GGUF-quantized `W`, packed once at
//! load time for the instruction set chosen then, and split over a [`ThreadPool`] per call.
//!
//! A call quantizes `x` once (per row, [`super::quantize`]), then runs tasks of (row chunk x
//! column-group chunk) on the pool. No task splits `k`, so every output is one fixed sequence
//! of operations: a row's result does not depend on `m`, on the rows beside it, on the tiling
//! or on the thread count.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::quantized::{GgmlDType, QTensor};

use super::formats::WeightType;
use super::pack::{Interleaved, COLS};
use super::pool::ThreadPool;
use super::quantize::{Q8Block, Q8KBlock};
use super::{scalar, Isa};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no quantized kernel for weight type {0:?}")]
    UnsupportedType(GgmlDType),
    #[error("quantized weights must be a 2-d matrix in CPU memory, got shape {0:?}")]
    Shape(Vec<usize>),
    #[error("row length k = {k} is not a multiple of the {kind:?} block of {block} values")]
    BlockMultiple {
        kind: WeightType,
        k: usize,
        block: usize,
    },
    #[error("{kind:?} weights [{n}, {k}]: expected {expected} bytes, found {found}")]
    Size {
        kind: WeightType,
        n: usize,
        k: usize,
        expected: usize,
        found: usize,
    },
    #[error("kernel family {0:?} does not run on this CPU")]
    Isa(Isa),
    #[error("input of {found} values is not m·k = {m}·{k}")]
    Input { m: usize, k: usize, found: usize },
    #[error("output of {found} values is not m·n = {m}·{n}")]
    Output { m: usize, n: usize, found: usize },
    #[error("reading quantized weights: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The weights as the chosen kernels read them.
enum Weights {
    /// GGUF blocks as the file holds them: the scalar kernels' input.
    Plain(Vec<u8>),
    /// Column-interleaved for the SIMD kernels.
    Interleaved(Interleaved),
}

/// A quantized weight matrix with its kernels. Immutable; `Sync`, shared by every thread that
/// runs the model.
pub struct QuantMatmul {
    kind: WeightType,
    n: usize,
    k: usize,
    isa: Isa,
    weights: Weights,
    pool: Arc<ThreadPool>,
}

impl std::fmt::Debug for QuantMatmul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantMatmul")
            .field("kind", &self.kind)
            .field("n", &self.n)
            .field("k", &self.k)
            .field("isa", &self.isa)
            .finish()
    }
}

impl QuantMatmul {
    /// Whether `dtype` has a kernel here.
    pub fn supports(dtype: GgmlDType) -> bool {
        WeightType::from_ggml(dtype).is_some()
    }

    /// Packs a `[n, k]` GGUF tensor for `isa`'s kernels.
    pub fn new(w: &QTensor, isa: Isa, pool: Arc<ThreadPool>) -> Result<Self, KernelError> {
        let kind =
            WeightType::from_ggml(w.dtype()).ok_or(KernelError::UnsupportedType(w.dtype()))?;
        let (n, k) = match *w.shape().dims() {
            [n, k] if w.device().is_cpu() => (n, k),
            _ => return Err(KernelError::Shape(w.shape().dims().to_vec())),
        };
        Self::from_blocks(kind, &w.data()?, n, k, isa, pool)
    }

    /// Packs `n` rows of `k` values given as GGUF blocks (`raw`, as the file holds them).
    pub fn from_blocks(
        kind: WeightType,
        raw: &[u8],
        n: usize,
        k: usize,
        isa: Isa,
        pool: Arc<ThreadPool>,
    ) -> Result<Self, KernelError> {
        let block = kind.block_len();
        if !k.is_multiple_of(block) {
            return Err(KernelError::BlockMultiple { kind, k, block });
        }
        let expected = n * (k / block) * kind.block_bytes();
        if raw.len() != expected {
            return Err(KernelError::Size {
                kind,
                n,
                k,
                expected,
                found: raw.len(),
            });
        }
        if !isa.is_supported() {
            return Err(KernelError::Isa(isa));
        }
        let weights = match isa {
            Isa::Scalar => Weights::Plain(raw.to_vec()),
            _ => Weights::Interleaved(Interleaved::pack(kind, raw, n, k / block)),
        };
        Ok(Self {
            kind,
            n,
            k,
            isa,
            weights,
            pool,
        })
    }

    /// `(n, k)`: output and input features.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    pub fn weight_type(&self) -> WeightType {
        self.kind
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `y = x · Wᵀ` for `x: [m, k]` and `y: [m, n]`, both row-major.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let (n, k) = (self.n, self.k);
        if x.len() != m * k {
            return Err(KernelError::Input {
                m,
                k,
                found: x.len(),
            });
        }
        if y.len() != m * n {
            return Err(KernelError::Output {
                m,
                n,
                found: y.len(),
            });
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let blocks = k / self.kind.block_len();
        let isa = self.isa;
        let (a8, ak) = if self.kind.k_quant() {
            let a = self.quantize(x, m, blocks, Q8KBlock::ZERO, |x, a| quantize_q8k(isa, x, a));
            (Vec::new(), a)
        } else {
            let a = self.quantize(x, m, blocks, Q8Block::ZERO, |x, a| quantize_q8(isa, x, a));
            (a, Vec::new())
        };
        let groups = n.div_ceil(COLS);
        let plan = Plan::new(m, groups, self.pool.threads());
        let out = SharedOut {
            ptr: y.as_mut_ptr(),
            rows: m,
            ld: n,
        };
        self.pool.run(plan.tasks(), &|t| {
            let (rows, groups) = plan.task(t);
            let cols = groups.start * COLS..(groups.end * COLS).min(n);
            let mut tile = vec![0f32; rows.len() * cols.len()];
            self.run_task(&a8, &ak, blocks, rows.clone(), groups, &mut tile);
            out.write(rows, cols, &tile);
        });
        Ok(())
    }

    /// Quantizes the `m` rows of `x`, on the pool when there are many.
    fn quantize<T: Copy + Send>(
        &self,
        x: &[f32],
        m: usize,
        blocks: usize,
        zero: T,
        f: impl Fn(&[f32], &mut [T]) + Sync,
    ) -> Vec<T> {
        const ROWS_PER_TASK: usize = 16;
        let k = self.k;
        let mut acts = vec![zero; m * blocks];
        if m < 2 * ROWS_PER_TASK || self.pool.threads() == 1 {
            for (xr, ar) in x.chunks_exact(k).zip(acts.chunks_exact_mut(blocks)) {
                f(xr, ar);
            }
            return acts;
        }
        let chunks: Vec<Mutex<(usize, &mut [T])>> = acts
            .chunks_mut(ROWS_PER_TASK * blocks)
            .enumerate()
            .map(|(i, c)| Mutex::new((i * ROWS_PER_TASK, c)))
            .collect();
        self.pool.run(chunks.len(), &|i| {
            let mut chunk = chunks[i].lock().unwrap_or_else(|p| p.into_inner());
            let (r0, a) = &mut *chunk;
            for (j, ar) in a.chunks_exact_mut(blocks).enumerate() {
                f(&x[(*r0 + j) * k..][..k], ar);
            }
        });
        drop(chunks);
        acts
    }

    fn run_task(
        &self,
        a8: &[Q8Block],
        ak: &[Q8KBlock],
        blocks: usize,
        rows: Range<usize>,
        groups: Range<usize>,
        out: &mut [f32],
    ) {
        match &self.weights {
            Weights::Plain(raw) => {
                let cols = groups.start * COLS..(groups.end * COLS).min(self.n);
                let row_bytes = blocks * self.kind.block_bytes();
                let mut o = out.iter_mut();
                for r in rows {
                    let (x8, xk) = if self.kind.k_quant() {
                        (&[][..], &ak[r * blocks..][..blocks])
                    } else {
                        (&a8[r * blocks..][..blocks], &[][..])
                    };
                    for c in cols.clone() {
                        let w = &raw[c * row_bytes..][..row_bytes];
                        if let Some(o) = o.next() {
                            *o = scalar::dot(self.kind, w, x8, xk);
                        }
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            Weights::Interleaved(w) => {
                use super::x86::{run_task, Acts, Task};
                let acts = if self.kind.k_quant() {
                    Acts::K(ak)
                } else {
                    Acts::Q8(a8)
                };
                let task = Task {
                    w,
                    acts,
                    rows,
                    groups,
                };
                run_task(self.isa, &task, out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Weights::Interleaved(_) => unreachable!("invariant: only x86-64 packs for SIMD"),
        }
    }
}

/// One row of activations to [`Q8Block`]s, with `isa`'s instructions where there are some.
fn quantize_q8(isa: Isa, x: &[f32], out: &mut [Q8Block]) {
    #[cfg(target_arch = "x86_64")]
    super::x86::quantize_row_q8(isa, x, out);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        super::quantize::quantize_row_q8(x, out);
    }
}

/// One row of activations to [`Q8KBlock`]s, with `isa`'s instructions where there are some.
fn quantize_q8k(isa: Isa, x: &[f32], out: &mut [Q8KBlock]) {
    #[cfg(target_arch = "x86_64")]
    super::x86::quantize_row_q8k(isa, x, out);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        super::quantize::quantize_row_q8k(x, out);
    }
}

/// How a call is cut into tasks: chunks of up to 64 rows (their activations stay in L2 while
/// the weights stream past) times chunks of column groups, enough tasks for ~4 per thread so
/// the shared task counter balances uneven threads.
struct Plan {
    m: usize,
    groups: usize,
    row_chunk: usize,
    group_chunk: usize,
    group_chunks: usize,
    tasks: usize,
}

impl Plan {
    fn new(m: usize, groups: usize, threads: usize) -> Self {
        let row_chunk = m.clamp(1, 64);
        let row_chunks = m.div_ceil(row_chunk);
        let want = (threads * 4).div_ceil(row_chunks).clamp(1, groups.max(1));
        let group_chunk = groups.div_ceil(want).max(1);
        let group_chunks = groups.div_ceil(group_chunk);
        Self {
            m,
            groups,
            row_chunk,
            group_chunk,
            group_chunks,
            tasks: row_chunks * group_chunks,
        }
    }

    fn tasks(&self) -> usize {
        self.tasks
    }

    /// Rows and column groups of task `t`.
    fn task(&self, t: usize) -> (Range<usize>, Range<usize>) {
        let (rc, gc) = (t / self.group_chunks, t % self.group_chunks);
        let r0 = rc * self.row_chunk;
        let g0 = gc * self.group_chunk;
        (
            r0..(r0 + self.row_chunk).min(self.m),
            g0..(g0 + self.group_chunk).min(self.groups),
        )
    }
}

/// The output matrix, written by the tasks in disjoint (rows x columns) tiles.
struct SharedOut {
    ptr: *mut f32,
    rows: usize,
    ld: usize,
}

// SAFETY: `SharedOut` is only a pointer to the caller's `y`; `forward` keeps `y` borrowed
// mutably for the whole `pool.run`, and the tasks write disjoint tiles of it (see `write`).
#[allow(unsafe_code)]
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Copies a `rows x cols` tile (row-major) into place.
    fn write(&self, rows: Range<usize>, cols: Range<usize>, tile: &[f32]) {
        assert!(rows.end <= self.rows && cols.end <= self.ld);
        assert_eq!(tile.len(), rows.len() * cols.len());
        for (i, r) in rows.enumerate() {
            let src = &tile[i * cols.len()..][..cols.len()];
            #[allow(unsafe_code)]
            // SAFETY: the destination `r * ld + cols` lies inside `y` (bounds asserted above,
            // `y.len() == rows * ld` checked in `forward`). The `Plan` gives every task its own
            // rows x column-groups, so no other task touches these elements, and nothing
            // reads `y` until `pool.run` has returned.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    self.ptr.add(r * self.ld + cols.start),
                    cols.len(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_covers_every_output_once() {
        for (m, groups, threads) in [
            (1, 36, 2),
            (3, 1, 4),
            (513, 96, 2),
            (64, 3072, 16),
            (7, 2, 1),
        ] {
            let p = Plan::new(m, groups, threads);
            let mut seen = vec![0u8; m * groups];
            for t in 0..p.tasks() {
                let (rows, gs) = p.task(t);
                for r in rows {
                    for g in gs.clone() {
                        seen[r * groups + g] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "m {m} groups {groups}");
        }
    }
}
