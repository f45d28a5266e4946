//! Quantized matmul speed, wick's kernels against candle's `QMatMul`, side by side: each GGUF
//! type at the test model's shapes (`[n, k]` of `W`: 576x576 for the attention projections,
//! 1536x576 for gate/up, 576x1536 for down, 49152x576 for the Q8_0 LM head), for m = 1, 4, 16,
//! 64 and 512 activation rows. K-quants need `k` to be a multiple of 256, so they run at
//! 576x1536 and 1536x4096.
//!
//! Run: `cargo bench --bench matmul` (a filter such as `-- Q4_1` picks one group). Throughput
//! is in multiply-adds per second (`m·n·k` per call). `WICK_THREADS` sizes our pool, candle
//! uses rayon's (`RAYON_NUM_THREADS`); both default to every core.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use wick::kernels::Linear;

const ROWS: [usize; 5] = [1, 4, 16, 64, 512];

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 10_007;
            (h as f32 / 10_007.0 - 0.5) * 0.2
        })
        .collect()
}

fn bench_type(c: &mut Criterion, dtype: GgmlDType, shapes: &[(usize, usize)]) {
    let mut g = c.benchmark_group(format!("{dtype:?}"));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &(n, k) in shapes {
        let w = Tensor::from_vec(values(n * k, 1), (n, k), &Device::Cpu).expect("weights");
        let q = QTensor::quantize(&w, dtype).expect("quantize");
        let ours =
            Linear::from_qtensor(QTensor::quantize(&w, dtype).expect("quantize")).expect("pack");
        assert!(matches!(ours, Linear::Cpu(_)), "{dtype:?} has a kernel");
        let theirs = QMatMul::from_qtensor(q).expect("qmatmul");
        for m in ROWS {
            let x = Tensor::from_vec(values(m * k, 2), (m, k), &Device::Cpu).expect("input");
            g.throughput(Throughput::Elements((m * n * k) as u64));
            g.bench_with_input(BenchmarkId::new(format!("wick/{n}x{k}"), m), &m, |b, _| {
                b.iter(|| ours.forward(&x).expect("forward"))
            });
            g.bench_with_input(
                BenchmarkId::new(format!("candle/{n}x{k}"), m),
                &m,
                |b, _| b.iter(|| theirs.forward(&x).expect("forward")),
            );
        }
    }
    g.finish();
}

fn bench_matmul(c: &mut Criterion) {
    let model = [(576, 576), (1536, 576), (576, 1536)];
    bench_type(c, GgmlDType::Q4_1, &model);
    bench_type(
        c,
        GgmlDType::Q8_0,
        &[(576, 576), (1536, 576), (576, 1536), (49152, 576)],
    );
    bench_type(c, GgmlDType::Q4_0, &model);
    bench_type(c, GgmlDType::Q4K, &[(576, 1536), (1536, 4096)]);
    bench_type(c, GgmlDType::Q6K, &[(576, 1536), (1536, 4096)]);
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
