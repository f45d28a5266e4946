//! Forward-step speed on the test model (SmolLM2-135M-Instruct Q4_1): prefill of 128 and 512
//! tokens, and one decode step for 1, 4, 16 and 64 sequences that each hold 128 tokens of
//! context. Run: `cargo bench --bench forward` (set `WICK_TEST_MODEL` to use another file).
//! Throughput is reported in tokens per second of the step.

use std::path::PathBuf;

use candle_core::{DType, Device};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wick::model::loader::load_gguf_llama;
use wick::model::{Batch, CausalLm, KvCache, KvCacheConfig, LogitsWanted, SeqChunk};

const BLOCK: usize = 16;
const CONTEXT: usize = 128;

fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("WICK_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    p.exists().then_some(p)
}

fn tokens(n: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 40_000 + 100) as u32)
        .collect()
}

fn bench_forward(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("test model missing: run scripts/fetch-test-model.sh");
        return;
    };
    let model = load_gguf_llama(&path, &Device::Cpu).expect("model loads");
    let shape = model.kv_shape();

    let mut g = c.benchmark_group("prefill");
    g.sample_size(10);
    for n in [128usize, 512] {
        let prompt = tokens(n, 1);
        let mut cache = KvCache::new(
            shape,
            KvCacheConfig::for_tokens(n, BLOCK, DType::F16),
            &Device::Cpu,
        )
        .expect("cache");
        let blocks: Vec<u32> = (0..cache.num_blocks() as u32).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let seq = SeqChunk {
                    tokens: &prompt,
                    start_pos: 0,
                    blocks: &blocks,
                    logits: LogitsWanted::Last,
                };
                model
                    .forward(&Batch::new(vec![seq]), &mut cache)
                    .expect("forward")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decode_step");
    g.sample_size(10);
    for batch in [1usize, 4, 16, 64] {
        let per_seq = (CONTEXT + 1).div_ceil(BLOCK);
        let mut cache = KvCache::new(
            shape,
            KvCacheConfig {
                num_blocks: per_seq * batch,
                block_size: BLOCK,
                dtype: DType::F16,
            },
            &Device::Cpu,
        )
        .expect("cache");
        let tables: Vec<Vec<u32>> = (0..batch)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        let prompts: Vec<Vec<u32>> = (0..batch).map(|s| tokens(CONTEXT + 1, s)).collect();
        // Fill every sequence's context once; each timed step then decodes position CONTEXT.
        for (p, t) in prompts.iter().zip(&tables) {
            let seq = SeqChunk {
                tokens: &p[..CONTEXT],
                start_pos: 0,
                blocks: t,
                logits: LogitsWanted::None,
            };
            model
                .forward(&Batch::new(vec![seq]), &mut cache)
                .expect("prefill");
        }
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| {
                let seqs = prompts
                    .iter()
                    .zip(&tables)
                    .map(|(p, t)| SeqChunk {
                        tokens: &p[CONTEXT..],
                        start_pos: CONTEXT,
                        blocks: t,
                        logits: LogitsWanted::Last,
                    })
                    .collect();
                model
                    .forward(&Batch::new(seqs), &mut cache)
                    .expect("decode")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);
