//! The paged attention kernel against a plain f64 oracle over a contiguous context, batch
//! invariance, the same bits on every instruction set, and bad inputs as errors.

use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Plain attention in f64 over a contiguous context: the oracle.
fn reference(
    q: &[f32],
    k: &[Vec<f32>],
    v: &[Vec<f32>],
    pos: usize,
    head_dim: usize,
    scale: f32,
) -> Vec<f32> {
    let scores: Vec<f64> = (0..=pos)
        .map(|j| {
            q.iter()
                .zip(&k[j])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = w.iter().sum();
    (0..head_dim)
        .map(|d| (0..=pos).map(|j| w[j] * v[j][d] as f64).sum::<f64>() / total)
        .map(|x| (x) as f32)
        .collect()
}

struct Case {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    /// (start_pos, new tokens) per sequence.
    seqs: Vec<(usize, usize)>,
}

/// Random K/V for every sequence's context, written into a shuffled paged pool.
struct Built {
    k_pool: Vec<f32>,
    v_pool: Vec<f32>,
    tables: Vec<Vec<u32>>,
    /// Per sequence, per position, per KV head: the K and V rows.
    k: Vec<Vec<Vec<Vec<f32>>>>,
    v: Vec<Vec<Vec<Vec<f32>>>>,
    q: Vec<f32>,
}

fn build(c: &Case, rng: &mut ChaCha8Rng) -> Built {
    let total_blocks: usize = c
        .seqs
        .iter()
        .map(|&(s, n)| (s + n).div_ceil(c.block_size))
        .sum::<usize>()
        + 3;
    let mut ids: Vec<u32> = (0..total_blocks as u32).collect();
    // A scrambled order, so block tables are not contiguous runs.
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.random_range(0..=i));
    }
    let row = c.kv_heads * c.head_dim;
    let mut k_pool = vec![0f32; total_blocks * c.block_size * row];
    let mut v_pool = k_pool.clone();
    let mut next = ids.into_iter();
    let (mut tables, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
    for &(start, n) in &c.seqs {
        let ctx = start + n;
        let table: Vec<u32> = (0..ctx.div_ceil(c.block_size))
            .map(|_| next.next().expect("enough blocks"))
            .collect();
        let mut kseq = Vec::new();
        let mut vseq = Vec::new();
        for p in 0..ctx {
            let slot = table[p / c.block_size] as usize * c.block_size + p % c.block_size;
            let mut kp = Vec::new();
            let mut vp = Vec::new();
            for h in 0..c.kv_heads {
                let kr: Vec<f32> = (0..c.head_dim)
                    .map(|_| rng.random_range(-2.0..2.0))
                    .collect();
                let vr: Vec<f32> = (0..c.head_dim)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let at = slot * row + h * c.head_dim;
                k_pool[at..at + c.head_dim].copy_from_slice(&kr);
                v_pool[at..at + c.head_dim].copy_from_slice(&vr);
                kp.push(kr);
                vp.push(vr);
            }
            kseq.push(kp);
            vseq.push(vp);
        }
        tables.push(table);
        ks.push(kseq);
        vs.push(vseq);
    }
    let tokens: usize = c.seqs.iter().map(|s| s.1).sum();
    let q = (0..tokens * c.heads * c.head_dim)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    Built {
        k_pool,
        v_pool,
        tables,
        k: ks,
        v: vs,
        q,
    }
}

fn attn_seqs<'a>(c: &Case, tables: &'a [Vec<u32>]) -> Vec<AttnSeq<'a>> {
    let mut row = 0;
    c.seqs
        .iter()
        .zip(tables)
        .map(|(&(start_pos, len), t)| {
            let s = AttnSeq {
                row,
                len,
                start_pos,
                blocks: t,
            };
            row += len;
            s
        })
        .collect()
}

fn run(c: &Case, b: &Built, pool: &ThreadPool) -> Vec<f32> {
    let kv = PagedKv {
        k: &b.k_pool,
        v: &b.v_pool,
        block_size: c.block_size,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    paged_attention(pool, &b.q, &attn_seqs(c, &b.tables), kv, c.heads, scale).expect("valid case")
}

fn cases() -> Vec<Case> {
    vec![
        // Mixed step: a long prefill chunk mid-sequence, decode tokens, a fresh prompt.
        Case {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            block_size: 16,
            seqs: vec![(40, 37), (100, 1), (0, 1), (0, 23), (15, 1)],
        },
        // Odd head_dim (not a multiple of the lanes), MHA, block size 1.
        Case {
            heads: 2,
            kv_heads: 2,
            head_dim: 20,
            block_size: 1,
            seqs: vec![(3, 5), (0, 2)],
        },
        // All heads on one KV head, block size larger than the context.
        Case {
            heads: 4,
            kv_heads: 1,
            head_dim: 8,
            block_size: 64,
            seqs: vec![(0, 17), (5, 1)],
        },
    ]
}

#[test]
fn matches_plain_attention_on_paged_random_data() {
    let pool = ThreadPool::new(2);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for c in cases() {
        let b = build(&c, &mut rng);
        let out = run(&c, &b, &pool);
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let group = c.heads / c.kv_heads;
        let mut row = 0;
        let mut worst = 0f32;
        for (si, &(start, n)) in c.seqs.iter().enumerate() {
            for t in 0..n {
                for h in 0..c.heads {
                    let at = ((row + t) * c.heads + h) * c.head_dim;
                    let kv_h = h / group;
                    let k: Vec<Vec<f32>> = b.k[si].iter().map(|p| p[kv_h].clone()).collect();
                    let v: Vec<Vec<f32>> = b.v[si].iter().map(|p| p[kv_h].clone()).collect();
                    let want = reference(
                        &b.q[at..at + c.head_dim],
                        &k,
                        &v,
                        start + t,
                        c.head_dim,
                        scale,
                    );
                    for (x, y) in out[at..at + c.head_dim].iter().zip(&want) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
            row += n;
        }
        assert!(
            worst < 1e-5,
            "max |error| {worst} for heads {} head_dim {}",
            c.heads,
            c.head_dim
        );
    }
}

#[test]
fn a_sequence_alone_is_bit_identical_to_it_in_a_batch() {
    let pool = ThreadPool::new(2);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let c = &cases()[0];
    let b = build(c, &mut rng);
    let batched = run(c, &b, &pool);
    let width = c.heads * c.head_dim;
    let mut row = 0;
    for (i, &(start, n)) in c.seqs.iter().enumerate() {
        let alone = Case {
            seqs: vec![(start, n)],
            ..*c
        };
        let one = Built {
            k_pool: b.k_pool.clone(),
            v_pool: b.v_pool.clone(),
            tables: vec![b.tables[i].clone()],
            k: Vec::new(),
            v: Vec::new(),
            q: b.q[row * width..(row + n) * width].to_vec(),
        };
        let single_thread = ThreadPool::new(1);
        let out = run(&alone, &one, &single_thread);
        assert!(
            out == batched[row * width..(row + n) * width],
            "sequence {i} differs alone and batched"
        );
        // A decode token computed by itself equals the same position inside a prefill.
        if n > 1 {
            let last = Case {
                seqs: vec![(start + n - 1, 1)],
                ..*c
            };
            let tail = Built {
                q: b.q[(row + n - 1) * width..(row + n) * width].to_vec(),
                ..one
            };
            let out = run(&last, &tail, &pool);
            assert!(
                out == batched[(row + n - 1) * width..(row + n) * width],
                "last token of sequence {i} differs as a decode step"
            );
        }
        row += n;
    }
}

#[test]
fn every_instruction_set_gives_the_same_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let c = &cases()[0];
    let b = build(c, &mut rng);
    let seqs = attn_seqs(c, &b.tables);
    same_bits_on_every_isa(c, &b, &seqs, &b.k_pool, &b.v_pool);
    // f16 pools (the default), which the kernels widen with their own instructions.
    let k16: Vec<f16> = b.k_pool.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = b.v_pool.iter().map(|&x| f16::from_f32(x)).collect();
    same_bits_on_every_isa(c, &b, &seqs, &k16, &v16);
}

fn same_bits_on_every_isa<T: KvElem>(c: &Case, b: &Built, seqs: &[AttnSeq<'_>], k: &[T], v: &[T]) {
    let kv = PagedKv {
        k,
        v,
        block_size: c.block_size,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let ctx = Ctx {
        q: &b.q,
        seqs,
        kv,
        heads: c.heads,
        scoring: 0.125.into(),
    };
    let tasks = plan(seqs, c.kv_heads);
    for isa in Isa::supported() {
        for &t in &tasks {
            assert!(
                run_task(isa, &ctx, t) == attend::<T, Portable>(&ctx, t),
                "{isa:?} differs from portable code on {t:?}"
            );
        }
    }
}

#[test]
fn exp_is_within_two_ulp_of_libm_and_zero_far_below() {
    let mut x = -87.0f32;
    while x <= 0.0 {
        let (got, want) = (exp_neg(x), x.exp());
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(ulps <= 2, "exp({x}) = {got}, libm {want}");
        x += 0.0137;
    }
    assert_eq!(exp_neg(0.0), 1.0);
    assert_eq!(exp_neg(-100.0), 0.0);
    assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
}

#[test]
fn half_precision_pools_match_f32_within_rounding() {
    let pool = ThreadPool::new(2);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let c = &cases()[0];
    let b = build(c, &mut rng);
    let want = run(c, &b, &pool);
    let seqs = attn_seqs(c, &b.tables);
    let scale = 1.0 / (c.head_dim as f32).sqrt();
    let k16: Vec<f16> = b.k_pool.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = b.v_pool.iter().map(|&x| f16::from_f32(x)).collect();
    let kv = PagedKv {
        k: &k16[..],
        v: &v16[..],
        block_size: c.block_size,
        kv_heads: c.kv_heads,
        head_dim: c.head_dim,
    };
    let got = paged_attention(&pool, &b.q, &seqs, kv, c.heads, scale).expect("valid");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 5e-3, "f16 pool off by {worst}");
}

#[test]
fn bad_shapes_and_block_ids_are_errors_not_panics() {
    let pool = ThreadPool::new(1);
    let k = vec![0f32; 2 * 4 * 8];
    let kv = PagedKv {
        k: &k[..],
        v: &k[..],
        block_size: 4,
        kv_heads: 1,
        head_dim: 8,
    };
    let q = vec![0f32; 2 * 8];
    let table = [0u32, 1];
    let seq = |start_pos, blocks| AttnSeq {
        row: 0,
        len: 2,
        start_pos,
        blocks,
    };
    // Positions 0..10 need 3 blocks.
    assert!(matches!(
        paged_attention(&pool, &q, &[seq(8, &table)], kv, 1, 1.0),
        Err(AttentionError::Table { needed: 3, .. })
    ));
    assert!(matches!(
        paged_attention(&pool, &q, &[seq(0, &[5])], kv, 1, 1.0),
        Err(AttentionError::Block { block: 5, .. })
    ));
    assert!(matches!(
        paged_attention(&pool, &q[..8], &[seq(0, &table)], kv, 1, 1.0),
        Err(AttentionError::Queries { .. })
    ));
    assert!(matches!(
        paged_attention(&pool, &q, &[seq(0, &table)], kv, 3, 1.0),
        Err(AttentionError::Heads { .. }) | Err(AttentionError::Queries { .. })
    ));
    assert!(paged_attention(&pool, &q, &[seq(0, &table)], kv, 1, 1.0).is_ok());
}

/// The oracle with a sliding window (keys `pos + 1 - window ..= pos`) and a soft cap.
fn reference_scored(
    q: &[f32],
    k: &[Vec<f32>],
    v: &[Vec<f32>],
    pos: usize,
    head_dim: usize,
    s: Scoring,
) -> Vec<f32> {
    let first = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    let scores: Vec<f64> = (first..=pos)
        .map(|j| {
            let dot = q
                .iter()
                .zip(&k[j])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
                * s.scale as f64;
            match s.softcap {
                Some(c) => c as f64 * (dot / c as f64).tanh(),
                None => dot,
            }
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
    let total: f64 = w.iter().sum();
    (0..head_dim)
        .map(|d| {
            (first..=pos)
                .map(|j| w[j - first] * v[j][d] as f64)
                .sum::<f64>()
                / total
        })
        .map(|x| x as f32)
        .collect()
}

/// Sliding windows shorter than, across and longer than a block, with and without a soft
/// cap, on prefill tiles and decode tokens, against the oracle; every instruction set gives
/// the same bits.
#[test]
fn sliding_window_and_softcap_match_the_oracle() {
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    let c = Case {
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
        block_size: 4,
        seqs: vec![(0, 37), (29, 1), (5, 20), (0, 3)],
    };
    let b = build(&c, &mut rng);
    let pool = ThreadPool::new(2);
    for (window, softcap) in [
        (Some(1), None),
        (Some(3), Some(2.0)),
        (Some(6), None),
        (Some(64), Some(0.5)),
        (None, Some(1.0)),
    ] {
        let scoring = Scoring {
            scale: 0.25,
            window,
            softcap,
        };
        let kv = PagedKv {
            k: &b.k_pool,
            v: &b.v_pool,
            block_size: c.block_size,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        let seqs = attn_seqs(&c, &b.tables);
        let got = paged_attention(&pool, &b.q, &seqs, kv, c.heads, scoring).expect("valid");
        let group = c.heads / c.kv_heads;
        for (si, s) in seqs.iter().enumerate() {
            for t in 0..s.len {
                let pos = s.start_pos + t;
                for h in 0..c.heads {
                    let at = ((s.row + t) * c.heads + h) * c.head_dim;
                    let q = &b.q[at..at + c.head_dim];
                    let ks: Vec<Vec<f32>> = b.k[si].iter().map(|p| p[h / group].clone()).collect();
                    let vs: Vec<Vec<f32>> = b.v[si].iter().map(|p| p[h / group].clone()).collect();
                    let want = reference_scored(q, &ks, &vs, pos, c.head_dim, scoring);
                    for (g, w) in got[at..at + c.head_dim].iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-4,
                            "{scoring:?} seq {si} pos {pos} head {h}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }
}
