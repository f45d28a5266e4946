//! The kernels on fresh random data: every type, every instruction set this CPU runs, shapes
//! that are no multiple of any tile. Each result is checked three ways:
//!
//! 1. against `W · x` in f64 with `W` dequantized by candle and the true `x`, within what
//!    8-bit activation quantization allows (a 6-sigma bound from each block's step);
//! 2. against `W · x̂` in f64 with `x̂` our quantized activations dequantized, tightly: only f32
//!    rounding separates the two, so a wrong scale, offset or layout shows;
//! 3. SIMD against the scalar kernels, bit for bit.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::formats::f16_at;
use super::*;

/// Random `[rows, cols]` values with a per-row scale and a few outliers, like real weights and
/// activations; every 7th row of 32 values is zero when `zero_blocks` (the `amax == 0` path).
fn random(rows: usize, cols: usize, seed: u64, zero_blocks: bool) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = 0.2 + rng.random::<f32>() * 2.0;
        for c in 0..cols {
            let g: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            let outlier = if rng.random::<f32>() < 0.01 { 6.0 } else { 1.0 };
            let zero = zero_blocks && (c / 32) % 7 == 3;
            v.push(if zero { 0.0 } else { g * scale * outlier });
        }
    }
    v
}

fn quantized(kind: WeightType, n: usize, k: usize, seed: u64) -> QTensor {
    let w = Tensor::from_vec(random(n, k, seed, false), (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&w, kind.ggml()).unwrap()
}

fn run(q: &QTensor, isa: Isa, threads: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mm = QuantMatmul::new(q, isa, Arc::new(ThreadPool::new(threads))).unwrap();
    let (n, _) = mm.shape();
    let mut y = vec![f32::NAN; m * n];
    mm.forward(x, m, &mut y).unwrap();
    y
}

/// Our quantized activations, dequantized, and per value its block's step (`d`).
fn dequantized_acts(kind: WeightType, x: &[f32], k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut xh, mut step) = (Vec::new(), Vec::new());
    for row in x.chunks_exact(k) {
        if kind.k_quant() {
            let mut a = vec![Q8KBlock::ZERO; k / 256];
            quantize_row_q8k(row, &mut a);
            for b in &a {
                xh.extend(b.qs.iter().map(|&q| b.d as f64 * q as f64));
                step.extend([b.d.abs() as f64; 256]);
            }
        } else {
            let mut a = vec![Q8Block::ZERO; k / 32];
            quantize_row_q8(row, &mut a);
            for b in &a {
                xh.extend(b.qs.iter().map(|&q| b.d as f64 * q as f64));
                step.extend([b.d as f64; 32]);
            }
        }
    }
    (xh, step)
}

/// Q4_1's minimum term uses `s = f16(d · Σq)`, not `d_f16 · Σq`: the difference, per output.
fn q4_1_s_correction(q: &QTensor, x: &[f32], m: usize) -> Vec<f64> {
    let (n, k) = q.shape().dims2().unwrap();
    let raw = q.data().unwrap();
    let mut corr = vec![0f64; m * n];
    for r in 0..m {
        let mut a = vec![Q8Block::ZERO; k / 32];
        quantize_row_q8(&x[r * k..][..k], &mut a);
        for c in 0..n {
            corr[r * n + c] = a
                .iter()
                .enumerate()
                .map(|(b, a)| {
                    let min = f16_at(&raw[(c * k / 32 + b) * 20..], 2) as f64;
                    min * (a.s as f64 - a.d as f64 * a.sum as f64)
                })
                .sum();
        }
    }
    corr
}

/// Checks 1 and 2 of the module doc for one result.
fn check_against_f64(kind: WeightType, q: &QTensor, x: &[f32], m: usize, y: &[f32], what: &str) {
    let (n, k) = q.shape().dims2().unwrap();
    let w = q
        .dequantize(&Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let (xh, step) = dequantized_acts(kind, x, k);
    let corr = (kind == WeightType::Q4_1).then(|| q4_1_s_correction(q, x, m));
    for r in 0..m {
        for c in 0..n {
            let (mut exact, mut on_xh, mut var, mut mag) = (0f64, 0f64, 0f64, 0f64);
            for j in 0..k {
                let (wj, xj, xq) = (w[c][j] as f64, x[r * k + j] as f64, xh[r * k + j]);
                exact += wj * xj;
                on_xh += wj * xq;
                var += wj * wj * step[r * k + j].powi(2) / 12.0;
                mag += (wj * xq).abs();
            }
            if let Some(corr) = &corr {
                on_xh += corr[r * n + c];
            }
            let got = y[r * n + c] as f64;
            let loose = 6.0 * var.sqrt() + 2e-3 * mag + 1e-5;
            assert!(
                (got - exact).abs() <= loose,
                "{what}: row {r} col {c}: {got} vs exact {exact} (allowed {loose})"
            );
            let tight = 1e-4 * mag + 1e-5;
            assert!(
                (got - on_xh).abs() <= tight,
                "{what}: row {r} col {c}: {got} vs {on_xh} on the quantized activations (allowed {tight})"
            );
        }
    }
}

fn shapes(kind: WeightType) -> Vec<(usize, usize, usize)> {
    if kind.k_quant() {
        vec![
            (1, 17, 11008),
            (3, 16, 4096),
            (17, 33, 512),
            (64, 19, 256),
            (513, 3, 256),
        ]
    } else {
        vec![
            (1, 35, 4096),
            (3, 16, 576),
            (17, 33, 1536),
            (64, 19, 96),
            (513, 21, 64),
        ]
    }
}

fn kernels_match_references(kind: WeightType) {
    for (i, &(m, n, k)) in shapes(kind).iter().enumerate() {
        let q = quantized(kind, n, k, 100 + i as u64);
        let x = random(m, k, 200 + i as u64, true);
        let scalar = run(&q, Isa::Scalar, 2, &x, m);
        check_against_f64(
            kind,
            &q,
            &x,
            m,
            &scalar,
            &format!("{kind:?} scalar m{m} n{n} k{k}"),
        );
        for isa in Isa::supported().into_iter().filter(|&i| i != Isa::Scalar) {
            let y = run(&q, isa, 3, &x, m);
            let what = format!("{kind:?} {isa:?} m{m} n{n} k{k}");
            for (j, (a, b)) in y.iter().zip(&scalar).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits(),
                    "{what}: output {j} is {a}, scalar {b}"
                );
            }
        }
    }
}

#[test]
fn q4_0_matches_references() {
    kernels_match_references(WeightType::Q4_0);
}

#[test]
fn q4_1_matches_references() {
    kernels_match_references(WeightType::Q4_1);
}

#[test]
fn q8_0_matches_references() {
    kernels_match_references(WeightType::Q8_0);
}

#[test]
fn q4k_matches_references() {
    kernels_match_references(WeightType::Q4K);
}

#[test]
fn q6k_matches_references() {
    kernels_match_references(WeightType::Q6K);
}

/// A row's result is bit-identical alone, in any batch, under any thread count.
#[test]
fn rows_are_batch_invariant() {
    let m = 37;
    for kind in WeightType::ALL {
        let k = if kind.k_quant() { 512 } else { 192 };
        let n = 40;
        let q = quantized(kind, n, k, 7);
        let x = random(m, k, 8, true);
        for isa in Isa::supported() {
            let all = run(&q, isa, 2, &x, m);
            for threads in [1, 3] {
                assert_eq!(
                    run(&q, isa, threads, &x, m),
                    all,
                    "{kind:?} {isa:?}: {threads} threads"
                );
            }
            for (r0, r1) in [(0, 1), (5, 6), (36, 37), (3, 7), (9, 26)] {
                let part = run(&q, isa, 2, &x[r0 * k..r1 * k], r1 - r0);
                assert_eq!(
                    part,
                    all[r0 * n..r1 * n],
                    "{kind:?} {isa:?}: rows {r0}..{r1} alone"
                );
            }
        }
    }
}

#[test]
fn linear_runs_in_place_on_tensors_and_falls_back_to_candle() {
    let (n, k) = (24, 64);
    let q = quantized(WeightType::Q4_1, n, k, 3);
    let x = random(6, k, 4, false);
    let want = run(&q, Isa::detect(), 2, &x, 6);
    let lin = Linear::from_qtensor(q).unwrap();
    assert!(matches!(lin, Linear::Cpu(_)));
    assert_eq!(lin.shape(), vec![n, k]);
    let t = Tensor::from_vec(x.clone(), (2, 3, k), &Device::Cpu).unwrap();
    let y = lin.forward(&t).unwrap();
    assert_eq!(y.dims(), &[2, 3, n]);
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    // A strided view and an f16 input go through a contiguous f32 copy.
    let tt = Tensor::from_vec(x.clone(), (k, 6), &Device::Cpu)
        .unwrap()
        .t()
        .unwrap();
    assert_eq!(lin.forward(&tt).unwrap().dims(), &[6, n]);
    let h = t.to_dtype(candle_core::DType::F16).unwrap();
    assert_eq!(lin.forward(&h).unwrap().dtype(), candle_core::DType::F16);

    // Types without a kernel stay on candle.
    let w = Tensor::from_vec(random(n, k, 5, false), (n, k), &Device::Cpu).unwrap();
    let q5 = QTensor::quantize(&w, GgmlDType::Q5_0).unwrap();
    assert!(matches!(
        Linear::from_qtensor(q5).unwrap(),
        Linear::Candle(QMatMul::QTensor(_))
    ));
}

#[test]
fn bad_shapes_are_named_errors() {
    let pool = Arc::new(ThreadPool::new(1));
    let err = QuantMatmul::from_blocks(WeightType::Q4K, &[], 1, 100, Isa::Scalar, pool.clone())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "row length k = 100 is not a multiple of the Q4K block of 256 values"
    );
    let err =
        QuantMatmul::from_blocks(WeightType::Q8_0, &[0; 33], 1, 32, Isa::Scalar, pool.clone())
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Q8_0 weights [1, 32]: expected 34 bytes, found 33"
    );
    let mm =
        QuantMatmul::from_blocks(WeightType::Q8_0, &[0; 68], 2, 32, Isa::Scalar, pool).unwrap();
    let err = mm.forward(&[0.0; 31], 1, &mut [0.0; 2]).unwrap_err();
    assert_eq!(err.to_string(), "input of 31 values is not m·k = 1·32");
}

#[test]
fn simd_quantizers_give_the_scalar_bits() {
    let mut x = random(3, 1024, 9, true);
    // Values that land exactly on .5 after scaling (ties round to even), and a block whose
    // largest magnitude comes twice with both signs.
    for (i, v) in x[..32].iter_mut().enumerate() {
        *v = i as f32 - 16.5;
    }
    x[3] = 127.0;
    x[300] = -9.0;
    x[301] = 9.0;
    for isa in Isa::supported() {
        let mut a = vec![Q8Block::ZERO; x.len() / 32];
        let mut b = a.clone();
        quantize_row_q8(&x, &mut a);
        #[cfg(target_arch = "x86_64")]
        super::x86::quantize_row_q8(isa, &x, &mut b);
        #[cfg(not(target_arch = "x86_64"))]
        quantize_row_q8(&x, &mut b);
        assert_eq!(a, b, "{isa:?} Q8");
        let mut a = vec![Q8KBlock::ZERO; x.len() / 256];
        let mut b = a.clone();
        quantize_row_q8k(&x, &mut a);
        #[cfg(target_arch = "x86_64")]
        super::x86::quantize_row_q8k(isa, &x, &mut b);
        #[cfg(not(target_arch = "x86_64"))]
        quantize_row_q8k(&x, &mut b);
        assert_eq!(a, b, "{isa:?} Q8K");
    }
}
