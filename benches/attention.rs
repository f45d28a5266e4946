//! CPU attention per context length, at the test model's shapes (9 query heads, 3 KV heads,
//! head size 64, f16 KV cache in 16-token blocks): wick's paged kernel, which reads the blocks
//! in place, against what the model did before it — gather the context out of the pool with
//! `index_select`, widen it to f32, then candle's `flash_attn_varlen_cpu`.
//!
//! Two shapes per context length L: one decode token for each of 16 sequences (a batched decode
//! step), and one 128-token prefill chunk at the end of an L-token context.
//!
//! Run: `cargo bench --bench attention` (`-- decode` or `-- prefill` picks a group).
//! `WICK_THREADS` sizes our pool; candle uses its own (`CANDLE_NUM_THREADS` / rayon's).

use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::f16;
use std::time::Duration;
use wick::kernels::{paged_attention, AttnSeq, PagedKv, ThreadPool};

const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;
const BLOCK: usize = 16;
const CONTEXTS: [usize; 4] = [128, 512, 1024, 2048];

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
            h as f32 / 10_007.0 - 0.5
        })
        .collect()
}

/// `seqs` sequences of `ctx` positions each, in a pool whose blocks are handed out
/// round-robin across the sequences (so no table is one contiguous run).
struct Setup {
    k: Vec<f16>,
    v: Vec<f16>,
    tables: Vec<Vec<u32>>,
}

fn setup(seqs: usize, ctx: usize) -> Setup {
    let per_seq = ctx.div_ceil(BLOCK);
    let n = seqs * per_seq * BLOCK * KV_HEADS * HEAD_DIM;
    let tables = (0..seqs)
        .map(|s| (0..per_seq).map(|b| (b * seqs + s) as u32).collect())
        .collect();
    Setup {
        k: values(n, 1).into_iter().map(f16::from_f32).collect(),
        v: values(n, 2).into_iter().map(f16::from_f32).collect(),
        tables,
    }
}

/// One step: `q_len` new tokens at the end of a `ctx`-token context, for every sequence.
fn bench_shape(c: &mut Criterion, group: &str, seqs: usize, q_len: usize) {
    let pool = ThreadPool::global();
    let mut g = c.benchmark_group(group);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for ctx in CONTEXTS {
        let s = setup(seqs, ctx);
        let q = values(seqs * q_len * HEADS * HEAD_DIM, 3);
        let attn: Vec<AttnSeq<'_>> = s
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| AttnSeq {
                row: i * q_len,
                len: q_len,
                start_pos: ctx - q_len,
                blocks: t,
            })
            .collect();
        let kv = PagedKv {
            k: &s.k[..],
            v: &s.v[..],
            block_size: BLOCK,
            kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
        };
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        g.throughput(Throughput::Elements((seqs * q_len) as u64));
        g.bench_function(BenchmarkId::new("wick paged", ctx), |b| {
            b.iter(|| paged_attention(&pool, &q, &attn, kv, HEADS, scale).expect("attention"))
        });

        // The previous path: gather the slots, widen, candle's varlen CPU flash attention.
        let dev = Device::Cpu;
        let slots_total = s.k.len() / (KV_HEADS * HEAD_DIM);
        let k_pool =
            Tensor::from_vec(s.k.clone(), (slots_total, KV_HEADS, HEAD_DIM), &dev).expect("k pool");
        let v_pool =
            Tensor::from_vec(s.v.clone(), (slots_total, KV_HEADS, HEAD_DIM), &dev).expect("v pool");
        let slots: Vec<u32> = s
            .tables
            .iter()
            .flat_map(|t| (0..ctx).map(move |p| t[p / BLOCK] * BLOCK as u32 + (p % BLOCK) as u32))
            .collect();
        let slots = Tensor::from_vec(slots, seqs * ctx, &dev).expect("slots");
        let qt = Tensor::from_vec(q.clone(), (seqs * q_len, HEADS, HEAD_DIM), &dev).expect("q");
        let seqlens_q = Tensor::from_vec(vec![q_len as u32; seqs], seqs, &dev).expect("lens");
        let seqlens_k = Tensor::from_vec(vec![ctx as u32; seqs], seqs, &dev).expect("lens");
        g.bench_function(BenchmarkId::new("gather + candle varlen", ctx), |b| {
            b.iter(|| {
                let kc = k_pool.index_select(&slots, 0)?.to_dtype(DType::F32)?;
                let vc = v_pool.index_select(&slots, 0)?.to_dtype(DType::F32)?;
                candle_nn::attention::flash_attn_varlen_cpu(
                    &qt, &kc, &vc, None, &seqlens_q, &seqlens_k, q_len, ctx, scale, true, None,
                    None,
                )
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_shape(c, "decode 16 seqs", 16, 1);
    bench_shape(c, "prefill 128-token chunk", 1, 128);
}

criterion_group!(attention, benches);
criterion_main!(attention);
