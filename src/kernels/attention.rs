//! Causal attention over the paged KV cache on the CPU, reading K and V where they lie in
//! their blocks: no gather, no copy of the context, no dtype conversion of the whole pool.
//!
//! A step's queries are `[tokens, heads, head_dim]` f32, sequences back to back, each
//! sequence a run of new tokens (a prefill chunk or one decode token) at known positions.
//! The work is split into tasks of (sequence, KV head, tile of up to [`TILE`] query tokens):
//! every query head of a GQA group shares the K/V rows it reads, and a tile of prefill tokens
//! shares them too, so a block is widened to f32 once per task, not once per query.
//!
//! Per query the softmax is online (flash-style): over the context one cache block at a time,
//! keeping the running maximum, the running sum and the weighted sum of values. Block
//! boundaries are absolute positions, and a query only ever touches positions up to its own,
//! so a query's result is one fixed sequence of operations: bit-identical whatever else is in
//! the step, whatever the tiling, the thread count or the instruction set (Rust never fuses
//! `a * b + c`, so wider vectors give the same sums). Runs on the calling thread plus the
//! kernel pool; never allocates per position.

use std::sync::OnceLock;

use half::{bf16, f16};

use super::pool::ThreadPool;
use super::Isa;

/// Query tokens per task: enough to reuse each widened K/V block many times in a prefill,
/// few enough that a 512-token chunk still makes dozens of tasks for the pool.
pub const TILE: usize = 16;

/// Lanes of the dot-product accumulator: a fixed summation order for every instruction set.
const LANES: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttentionError {
    #[error("{heads} query heads are not a multiple of {kv_heads} KV heads")]
    Heads { heads: usize, kv_heads: usize },
    #[error(
        "queries hold {found} values, {tokens} tokens x {heads} heads x {head_dim} need {expected}"
    )]
    Queries {
        tokens: usize,
        heads: usize,
        head_dim: usize,
        expected: usize,
        found: usize,
    },
    #[error("sequence {seq} covers query rows {start}..{end}, the step has {tokens}")]
    Rows {
        seq: usize,
        start: usize,
        end: usize,
        tokens: usize,
    },
    #[error(
        "sequence {seq} needs {needed} blocks for {positions} positions, its table has {found}"
    )]
    Table {
        seq: usize,
        positions: usize,
        needed: usize,
        found: usize,
    },
    #[error("sequence {seq} names block {block}, the pool has {blocks}")]
    Block {
        seq: usize,
        block: u32,
        blocks: usize,
    },
    #[error(
        "K pool of {k} values and V pool of {v} values are not whole blocks of {block} values"
    )]
    Pool { k: usize, v: usize, block: usize },
}

/// Element types a KV pool may hold.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// Widens `src` into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);

    /// The IEEE half-precision bits of `src`, when `Self` is f16 (the default KV dtype), so
    /// the kernels can widen with their own vector instructions.
    fn as_f16_bits(src: &[Self]) -> Option<&[u16]> {
        let _ = src;
        None
    }
}

impl KvElem for f32 {
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl KvElem for f16 {
    fn widen(src: &[f16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }

    fn as_f16_bits(src: &[f16]) -> Option<&[u16]> {
        use half::slice::HalfFloatSliceExt;
        Some(src.reinterpret_cast())
    }
}

impl KvElem for bf16 {
    fn widen(src: &[bf16], dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        src.convert_to_f32_slice(dst);
    }
}

/// One layer's K and V pools, borrowed in place: `[num_blocks * block_size, kv_heads,
/// head_dim]` each, token-major (the layout of `model::KvCache`).
#[derive(Clone, Copy)]
pub struct PagedKv<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub block_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy)]
pub struct AttnSeq<'a> {
    /// Row (token index in the step) of this sequence's first query.
    pub row: usize,
    /// New tokens, i.e. queries; their positions are `start_pos..start_pos + len`.
    pub len: usize,
    /// Position of the first new token. The context is positions `0..start_pos + len`, whose
    /// K and V must already be in the cache (the new tokens' included).
    pub start_pos: usize,
    /// The sequence's block table: position `p` lives in block `blocks[p / block_size]`.
    pub blocks: &'a [u32],
}

/// How a query scores its keys: the scale, the sliding window, the soft cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    /// Multiplies every `q · k` (`1 / sqrt(head_dim)` for most models).
    pub scale: f32,
    /// Sliding-window attention: a query at position `p` sees keys `p + 1 - window ..= p`
    /// only (llama.cpp's and Hugging Face's convention: the window counts the query itself).
    pub window: Option<usize>,
    /// Logit soft-capping (Gemma 2): a scaled score `s` becomes `cap * tanh(s / cap)`.
    pub softcap: Option<f32>,
}

impl From<f32> for Scoring {
    /// Plain causal attention with `scale`.
    fn from(scale: f32) -> Self {
        Self {
            scale,
            window: None,
            softcap: None,
        }
    }
}

impl Scoring {
    /// The first position a query at `pos` may see.
    fn first_key(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }

    /// A raw `q · k` turned into the score the softmax takes.
    #[inline(always)]
    fn score(&self, dot: f32) -> f32 {
        let s = dot * self.scale;
        match self.softcap {
            Some(cap) => cap * (s / cap).tanh(),
            None => s,
        }
    }
}

/// A task: one sequence, one KV head, query tokens `t0..t1` of the sequence.
#[derive(Debug, Clone, Copy)]
struct Task {
    seq: usize,
    kv_head: usize,
    t0: usize,
    t1: usize,
}

/// What every task reads.
struct Ctx<'a, T> {
    q: &'a [f32],
    seqs: &'a [AttnSeq<'a>],
    kv: PagedKv<'a, T>,
    heads: usize,
    scoring: Scoring,
}

/// Causal attention of `q` (`[tokens, heads, head_dim]`, f32) over the cache: returns
/// `[tokens, heads, head_dim]` f32. `scoring` is the score scale (`1 / sqrt(head_dim)`), and
/// where the model asks for them the sliding window and the soft cap.
pub fn paged_attention<T: KvElem>(
    pool: &ThreadPool,
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    kv: PagedKv<'_, T>,
    heads: usize,
    scoring: impl Into<Scoring>,
) -> Result<Vec<f32>, AttentionError> {
    let scoring = scoring.into();
    let tokens = check(q, seqs, &kv, heads)?;
    let hd = kv.head_dim;
    let group = heads / kv.kv_heads;
    let tasks = plan(seqs, kv.kv_heads);
    let ctx = Ctx {
        q,
        seqs,
        kv,
        heads,
        scoring,
    };
    let isa = Isa::detect();
    let results: Vec<OnceLock<Vec<f32>>> = tasks.iter().map(|_| OnceLock::new()).collect();
    pool.run(tasks.len(), &|i| {
        let _ = results[i].set(run_task(isa, &ctx, tasks[i]));
    });
    let mut out = vec![0f32; tokens * heads * hd];
    for (task, res) in tasks.iter().zip(&results) {
        let res = res.get().expect("invariant: the pool ran every task");
        let s = &seqs[task.seq];
        for (i, t) in (task.t0..task.t1).enumerate() {
            let at = ((s.row + t) * heads + task.kv_head * group) * hd;
            out[at..at + group * hd].copy_from_slice(&res[i * group * hd..][..group * hd]);
        }
    }
    Ok(out)
}

/// Validates the shapes and every block id a task will read; returns the token count.
fn check<T>(
    q: &[f32],
    seqs: &[AttnSeq<'_>],
    kv: &PagedKv<'_, T>,
    heads: usize,
) -> Result<usize, AttentionError> {
    if kv.kv_heads == 0 || !heads.is_multiple_of(kv.kv_heads) {
        return Err(AttentionError::Heads {
            heads,
            kv_heads: kv.kv_heads,
        });
    }
    let hd = kv.head_dim;
    let tokens = seqs.iter().map(|s| s.row + s.len).max().unwrap_or(0);
    let expected = tokens * heads * hd;
    if q.len() != expected {
        return Err(AttentionError::Queries {
            tokens,
            heads,
            head_dim: hd,
            expected,
            found: q.len(),
        });
    }
    let block = kv.block_size * kv.kv_heads * hd;
    if block == 0 || kv.k.len() != kv.v.len() || !kv.k.len().is_multiple_of(block) {
        return Err(AttentionError::Pool {
            k: kv.k.len(),
            v: kv.v.len(),
            block,
        });
    }
    let blocks = kv.k.len() / block;
    for (i, s) in seqs.iter().enumerate() {
        let positions = s.start_pos + s.len;
        let needed = positions.div_ceil(kv.block_size);
        if s.blocks.len() < needed {
            return Err(AttentionError::Table {
                seq: i,
                positions,
                needed,
                found: s.blocks.len(),
            });
        }
        if let Some(&b) = s.blocks[..needed].iter().find(|&&b| b as usize >= blocks) {
            return Err(AttentionError::Block {
                seq: i,
                block: b,
                blocks,
            });
        }
    }
    Ok(tokens)
}

/// Tasks, the costliest first (later tiles attend over longer contexts), so the pool's last
/// tasks are short ones.
fn plan(seqs: &[AttnSeq<'_>], kv_heads: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (i, s) in seqs.iter().enumerate() {
        for t0 in (0..s.len).step_by(TILE) {
            let t1 = (t0 + TILE).min(s.len);
            for kv_head in 0..kv_heads {
                tasks.push(Task {
                    seq: i,
                    kv_head,
                    t0,
                    t1,
                });
            }
        }
    }
    let cost = |t: &Task| {
        let s = &seqs[t.seq];
        (t.t1 - t.t0) * (s.start_pos + t.t1)
    };
    // Stable: equal costs keep their (deterministic) order.
    tasks.sort_by_key(|t| std::cmp::Reverse(cost(t)));
    tasks
}

fn run_task<T: KvElem>(isa: Isa, ctx: &Ctx<'_, T>, task: Task) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if ctx.kv.head_dim.is_multiple_of(LANES) {
        if isa >= Isa::Avx512 {
            // SAFETY: `isa` comes from `Isa::detect` (or the tests' `Isa::supported`), which
            // only yields families whose features this CPU has.
            #[allow(unsafe_code)]
            return unsafe { simd::attend_avx512(ctx, task) };
        }
        if isa >= Isa::Avx2 {
            // SAFETY: as above.
            #[allow(unsafe_code)]
            return unsafe { simd::attend_avx2(ctx, task) };
        }
    }
    let _ = isa;
    attend::<T, Portable>(ctx, task)
}

/// The two inner loops, one implementation per instruction set. Every implementation does
/// each output element's arithmetic in the same order (see [`Portable`]), so they agree to the
/// bit.
trait Ops {
    /// `a · b` (equal lengths).
    fn dot(a: &[f32], b: &[f32]) -> f32;
    /// `acc += Σ_j w[j] * v[j * acc.len()..][..acc.len()]`, keys in order.
    fn accumulate(acc: &mut [f32], w: &[f32], v: &[f32]);
    /// `x = exp(x - max)` for each `x <= max`, by [`exp_neg`]'s steps.
    fn exp_shift(xs: &mut [f32], max: f32);
    /// Widens IEEE half-precision bits (exact, whatever the instructions).
    fn widen_f16(src: &[u16], dst: &mut [f32]) {
        for (d, &h) in dst.iter_mut().zip(src) {
            *d = f16::from_bits(h).to_f32();
        }
    }
}

/// `src` widened into `dst`, with `O`'s instructions for f16.
#[inline(always)]
fn widen<T: KvElem, O: Ops>(src: &[T], dst: &mut [f32]) {
    match T::as_f16_bits(src) {
        Some(bits) => O::widen_f16(bits, dst),
        None => T::widen(src, dst),
    }
}

/// `exp(x)` for `x <= 0` in plain f32 steps that a vector unit repeats exactly: `x = n ln2 + r`
/// with `n` rounded to even and `|r| <= ln2 / 2`, Cephes' degree-7 polynomial for `exp(r)`,
/// then `2^n` by exponent bits. About 1 ulp; 0 below -87 (where `2^n` would be subnormal).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    // NaN gives 0 too, as the vector compare does.
    if x.is_nan() || x < EXP_MIN {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_C[0];
    for c in &EXP_C[1..] {
        p = p * r + c;
    }
    let y = (p * (r * r) + r) + 1.0;
    y * f32::from_bits((((n as i32) + 127) << 23) as u32)
}

const EXP_MIN: f32 = -87.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_C: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Plain Rust. `dot` keeps [`LANES`] partial sums (element `i` goes to lane `i % LANES`),
/// then adds lane `i + 8` into `i`, `i + 4` into `i`, `i + 2`, `i + 1`: the order a 16-wide
/// vector and its halving reduction give.
struct Portable;

impl Ops for Portable {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            lanes[i % LANES] += x * y;
        }
        let mut width = LANES / 2;
        while width > 0 {
            for i in 0..width {
                lanes[i] += lanes[i + width];
            }
            width /= 2;
        }
        lanes[0]
    }

    #[inline(always)]
    fn exp_shift(xs: &mut [f32], max: f32) {
        for x in xs {
            *x = exp_neg(*x - max);
        }
    }

    #[inline(always)]
    fn accumulate(acc: &mut [f32], w: &[f32], v: &[f32]) {
        let hd = acc.len();
        for (j, &e) in w.iter().enumerate() {
            for (x, y) in acc.iter_mut().zip(&v[j * hd..][..hd]) {
                *x += e * y;
            }
        }
    }
}

/// Running softmax state of one query.
struct Online {
    max: f32,
    sum: f32,
}

/// One task: `(t1 - t0) * group` queries against the sequence's context. Returns their
/// outputs, token-major then head: `[t1 - t0, group, head_dim]`.
#[inline(always)]
fn attend<T: KvElem, O: Ops>(ctx: &Ctx<'_, T>, task: Task) -> Vec<f32> {
    let kv = &ctx.kv;
    let (hd, bs) = (kv.head_dim, kv.block_size);
    let group = ctx.heads / kv.kv_heads;
    let s = &ctx.seqs[task.seq];
    let n_q = (task.t1 - task.t0) * group;
    let mut state: Vec<Online> = (0..n_q)
        .map(|_| Online {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        })
        .collect();
    let mut acc = vec![0f32; n_q * hd];
    let mut kb = vec![0f32; bs * hd];
    let mut vb = vec![0f32; bs * hd];
    let mut scores = vec![0f32; bs];
    let context = s.start_pos + task.t1;
    let row_stride = kv.kv_heads * hd;
    // Blocks wholly older than the tile's first query's window are never read.
    let first_block = ctx.scoring.first_key(s.start_pos + task.t0) / bs;
    for b in first_block..context.div_ceil(bs) {
        let p0 = b * bs;
        let n = bs.min(context - p0);
        let slot0 = s.blocks[b] as usize * bs;
        for j in 0..n {
            let at = (slot0 + j) * row_stride + task.kv_head * hd;
            widen::<T, O>(&kv.k[at..at + hd], &mut kb[j * hd..][..hd]);
            widen::<T, O>(&kv.v[at..at + hd], &mut vb[j * hd..][..hd]);
        }
        for t in task.t0..task.t1 {
            let pos = s.start_pos + t;
            if pos < p0 {
                // The whole block lies after this query (only in a prefill tile).
                continue;
            }
            let valid = n.min(pos + 1 - p0);
            // Keys before the window: masked, i.e. skipped (the block's first `skip` slots).
            let skip = ctx.scoring.first_key(pos).saturating_sub(p0);
            if skip >= valid {
                continue;
            }
            for h in 0..group {
                let qi = (t - task.t0) * group + h;
                let head = task.kv_head * group + h;
                let qv = &ctx.q[((s.row + t) * ctx.heads + head) * hd..][..hd];
                let scores = &mut scores[skip..valid];
                let mut block_max = f32::NEG_INFINITY;
                for (j, sc) in scores.iter_mut().enumerate() {
                    *sc = ctx.scoring.score(O::dot(qv, &kb[(skip + j) * hd..][..hd]));
                    block_max = block_max.max(*sc);
                }
                let st = &mut state[qi];
                let new_max = st.max.max(block_max);
                let a = &mut acc[qi * hd..][..hd];
                if st.max != new_max {
                    // exp(-inf) = 0 on the first block, where `a` and `sum` are still zero.
                    let corr = (st.max - new_max).exp();
                    st.sum *= corr;
                    a.iter_mut().for_each(|x| *x *= corr);
                }
                O::exp_shift(scores, new_max);
                st.sum += scores.iter().sum::<f32>();
                O::accumulate(a, scores, &vb[skip * hd..valid * hd]);
                st.max = new_max;
            }
        }
    }
    for (st, a) in state.iter().zip(acc.chunks_exact_mut(hd)) {
        // Every query sees at least its own position, so `sum >= 1`.
        let inv = 1.0 / st.sum;
        a.iter_mut().for_each(|x| *x *= inv);
    }
    acc
}

/// The x86-64 loops. Products and sums are separate instructions (no FMA), as in
/// [`Portable`], and the 16 lanes reduce in its order.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod simd {
    use std::arch::x86_64::*;

    use super::{
        attend, exp_neg, Ctx, KvElem, Ops, Task, EXP_C, EXP_MIN, LANES, LN2_HI, LN2_LO, LOG2E,
    };

    /// # Safety
    /// The CPU must have AVX-512 F/BW, AVX2, FMA and F16C; `head_dim % 16 == 0`.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn attend_avx512<T: KvElem>(ctx: &Ctx<'_, T>, task: Task) -> Vec<f32> {
        attend::<T, Avx512>(ctx, task)
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; `head_dim % 16 == 0`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn attend_avx2<T: KvElem>(ctx: &Ctx<'_, T>, task: Task) -> Vec<f32> {
        attend::<T, Avx2>(ctx, task)
    }

    struct Avx512;

    impl Ops for Avx512 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            assert!(a.len() == b.len() && a.len().is_multiple_of(LANES));
            // SAFETY: only reached from `attend_avx512` (the features are enabled); every
            // load reads 16 values at `i`, `i + 16 <= len` (asserted lengths).
            unsafe {
                let mut s = _mm512_setzero_ps();
                for i in (0..a.len()).step_by(LANES) {
                    let p = _mm512_mul_ps(
                        _mm512_loadu_ps(a.as_ptr().add(i)),
                        _mm512_loadu_ps(b.as_ptr().add(i)),
                    );
                    s = _mm512_add_ps(s, p);
                }
                let h = _mm256_add_ps(
                    _mm512_castps512_ps256(s),
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s))),
                );
                reduce8(h)
            }
        }

        #[inline(always)]
        fn widen_f16(src: &[u16], dst: &mut [f32]) {
            assert_eq!(src.len(), dst.len());
            let n = src.len() / LANES * LANES;
            // SAFETY: F16C and AVX-512 F are enabled (see `dot`); each step reads 16 `u16`
            // and writes 16 `f32` at `i`, `i + 16 <= n <= len`.
            unsafe {
                for i in (0..n).step_by(LANES) {
                    let h = _mm256_loadu_si256(src.as_ptr().add(i).cast());
                    _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
                }
            }
            for (d, &h) in dst[n..].iter_mut().zip(&src[n..]) {
                *d = half::f16::from_bits(h).to_f32();
            }
        }

        #[inline(always)]
        fn exp_shift(xs: &mut [f32], max: f32) {
            let mut chunks = xs.chunks_exact_mut(LANES);
            for c in &mut chunks {
                // SAFETY: `c` holds exactly 16 values; AVX-512 F is enabled (see `dot`).
                unsafe {
                    let x = _mm512_sub_ps(_mm512_loadu_ps(c.as_ptr()), _mm512_set1_ps(max));
                    _mm512_storeu_ps(c.as_mut_ptr(), exp16(x));
                }
            }
            for x in chunks.into_remainder() {
                *x = exp_neg(*x - max);
            }
        }

        #[inline(always)]
        fn accumulate(acc: &mut [f32], w: &[f32], v: &[f32]) {
            let hd = acc.len();
            assert!(hd.is_multiple_of(LANES) && v.len() >= w.len() * hd);
            // SAFETY: features as in `dot`; `acc[c..c + 16]` and `v[j * hd + c..][..16]` are
            // in bounds (`c + 16 <= hd`, `j < w.len()`, asserted lengths).
            unsafe {
                for c in (0..hd).step_by(LANES) {
                    let mut r = _mm512_loadu_ps(acc.as_ptr().add(c));
                    for (j, &e) in w.iter().enumerate() {
                        let x = _mm512_loadu_ps(v.as_ptr().add(j * hd + c));
                        r = _mm512_add_ps(r, _mm512_mul_ps(_mm512_set1_ps(e), x));
                    }
                    _mm512_storeu_ps(acc.as_mut_ptr().add(c), r);
                }
            }
        }
    }

    /// [`super::exp_neg`] on 16 lanes.
    #[inline(always)]
    fn exp16(x: __m512) -> __m512 {
        // SAFETY: only inlined into `attend_avx512` (AVX-512 F is enabled).
        unsafe {
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(EXP_MIN));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
            );
            let r = _mm512_sub_ps(
                _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(LN2_HI))),
                _mm512_mul_ps(n, _mm512_set1_ps(LN2_LO)),
            );
            let mut p = _mm512_set1_ps(EXP_C[0]);
            for &c in &EXP_C[1..] {
                p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(c));
            }
            let y = _mm512_add_ps(
                _mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r),
                _mm512_set1_ps(1.0),
            );
            let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
                _mm512_cvtps_epi32(n),
                _mm512_set1_epi32(127),
            ));
            _mm512_maskz_mul_ps(keep, y, _mm512_castsi512_ps(bits))
        }
    }

    /// [`super::exp_neg`] on 8 lanes.
    #[inline(always)]
    fn exp8(x: __m256) -> __m256 {
        // SAFETY: only inlined into `attend_avx2` (AVX2 is enabled).
        unsafe {
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(x, _mm256_set1_ps(EXP_MIN));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
            );
            let r = _mm256_sub_ps(
                _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI))),
                _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)),
            );
            let mut p = _mm256_set1_ps(EXP_C[0]);
            for &c in &EXP_C[1..] {
                p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
            }
            let y = _mm256_add_ps(
                _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
                _mm256_set1_ps(1.0),
            );
            let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                _mm256_cvtps_epi32(n),
                _mm256_set1_epi32(127),
            ));
            _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(bits)))
        }
    }

    struct Avx2;

    impl Ops for Avx2 {
        #[inline(always)]
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            assert!(a.len() == b.len() && a.len().is_multiple_of(LANES));
            // SAFETY: only reached from `attend_avx2`; loads of 8 at `i` and `i + 8`,
            // `i + 16 <= len`.
            unsafe {
                let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                for i in (0..a.len()).step_by(LANES) {
                    let (pa, pb) = (a.as_ptr().add(i), b.as_ptr().add(i));
                    let p_lo = _mm256_mul_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb));
                    let p_hi =
                        _mm256_mul_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)));
                    lo = _mm256_add_ps(lo, p_lo);
                    hi = _mm256_add_ps(hi, p_hi);
                }
                reduce8(_mm256_add_ps(lo, hi))
            }
        }

        #[inline(always)]
        fn widen_f16(src: &[u16], dst: &mut [f32]) {
            assert_eq!(src.len(), dst.len());
            let n = src.len() / 8 * 8;
            // SAFETY: F16C and AVX are enabled (see `dot`); each step reads 8 `u16` and
            // writes 8 `f32` at `i`, `i + 8 <= n <= len`.
            unsafe {
                for i in (0..n).step_by(8) {
                    let h = _mm_loadu_si128(src.as_ptr().add(i).cast());
                    _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                }
            }
            for (d, &h) in dst[n..].iter_mut().zip(&src[n..]) {
                *d = half::f16::from_bits(h).to_f32();
            }
        }

        #[inline(always)]
        fn exp_shift(xs: &mut [f32], max: f32) {
            let mut chunks = xs.chunks_exact_mut(8);
            for c in &mut chunks {
                // SAFETY: `c` holds exactly 8 values; AVX2 is enabled (see `dot`).
                unsafe {
                    let x = _mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), _mm256_set1_ps(max));
                    _mm256_storeu_ps(c.as_mut_ptr(), exp8(x));
                }
            }
            for x in chunks.into_remainder() {
                *x = exp_neg(*x - max);
            }
        }

        #[inline(always)]
        fn accumulate(acc: &mut [f32], w: &[f32], v: &[f32]) {
            let hd = acc.len();
            assert!(hd.is_multiple_of(LANES) && v.len() >= w.len() * hd);
            // SAFETY: as in `Avx512::accumulate`, 8 values at a time.
            unsafe {
                for c in (0..hd).step_by(8) {
                    let mut r = _mm256_loadu_ps(acc.as_ptr().add(c));
                    for (j, &e) in w.iter().enumerate() {
                        let x = _mm256_loadu_ps(v.as_ptr().add(j * hd + c));
                        r = _mm256_add_ps(r, _mm256_mul_ps(_mm256_set1_ps(e), x));
                    }
                    _mm256_storeu_ps(acc.as_mut_ptr().add(c), r);
                }
            }
        }
    }

    /// Lanes 0..8 of a 16-lane sum after its first halving: adds `i + 4`, `i + 2`, `i + 1`.
    #[inline(always)]
    fn reduce8(h: __m256) -> f32 {
        // SAFETY: only inlined into the `target_feature` functions above (AVX is enabled).
        unsafe {
            let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
            let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let o = _mm_add_ss(d, _mm_shuffle_ps::<1>(d, d));
            _mm_cvtss_f32(o)
        }
    }
}

#[cfg(test)]
mod tests;
