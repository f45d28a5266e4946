//! Tiny random-weight models: the batched shape of the forward pass.

use candle_core::quantized::GgmlDType;
use candle_core::Device;

use super::testing::{logits_alone, logits_interleaved, max_abs_diff, random_llama, tiny_config};
use super::*;

fn token_seqs(vocab: u32) -> Vec<Vec<u32>> {
    // Four sequences of different lengths, so they stand at different positions each step.
    [37usize, 20, 53, 9]
        .iter()
        .enumerate()
        .map(|(s, &len)| {
            (0..len)
                .map(|i| ((i * 7 + s * 13 + 3) as u32) % vocab)
                .collect()
        })
        .collect()
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: row count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = max_abs_diff(x, y);
        assert!(d < tol, "{what}: position {i} differs by {d}");
    }
}

fn check_batched_equals_alone(quant: Option<GgmlDType>) {
    let cfg = tiny_config();
    let model = random_llama(&cfg, 7, quant, &Device::Cpu);
    let seqs = token_seqs(cfg.vocab_size as u32);
    let alone: Vec<_> = seqs
        .iter()
        .map(|s| logits_alone(&model, s).unwrap())
        .collect();
    // Mixed steps: sequence 0 and 2 prefill in chunks of 5 and 11, 1 and 3 go token by token.
    let mixed = logits_interleaved(&model, &seqs, 4, |s, step| match s {
        0 => 5,
        2 => 11 - step % 3,
        _ => 1,
    })
    .unwrap();
    for (s, (a, m)) in alone.iter().zip(&mixed).enumerate() {
        assert_close(a, m, 1e-3, &format!("sequence {s}"));
    }
}

#[test]
fn batched_forward_equals_each_sequence_alone_f32() {
    check_batched_equals_alone(None);
}

#[test]
fn batched_forward_equals_each_sequence_alone_q4_1() {
    check_batched_equals_alone(Some(GgmlDType::Q4_1));
}

#[test]
fn prefill_then_decode_equals_full_prefill() {
    let cfg = tiny_config();
    for quant in [None, Some(GgmlDType::Q8_0)] {
        let model = random_llama(&cfg, 11, quant, &Device::Cpu);
        let seq: Vec<u32> = (0..40)
            .map(|i| (i * 5 + 1) % cfg.vocab_size as u32)
            .collect();
        let full = logits_alone(&model, &seq).unwrap();
        // One sequence: a prefill of 17 tokens, then single decode steps.
        let stepped = logits_interleaved(&model, std::slice::from_ref(&seq), 8, |_, step| {
            if step == 0 {
                17
            } else {
                1
            }
        })
        .unwrap();
        assert_close(&full, &stepped[0], 1e-3, "prefill + decode");
    }
}

#[test]
fn rows_do_not_depend_on_batch_neighbours() {
    // The same decode step gives bit-identical logits whatever else shares the step.
    let cfg = tiny_config();
    let model = random_llama(&cfg, 3, Some(GgmlDType::Q4_0), &Device::Cpu);
    let seqs = token_seqs(cfg.vocab_size as u32);
    let alone = logits_interleaved(&model, &seqs[..1], 4, |_, _| 1).unwrap();
    let together = logits_interleaved(&model, &seqs, 4, |_, _| 1).unwrap();
    for (pos, (a, t)) in alone[0].iter().zip(&together[0]).enumerate() {
        assert!(a == t, "position {pos}: max diff {}", max_abs_diff(a, t));
    }
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let cfg = tiny_config();
    let model = random_llama(&cfg, 1, None, &Device::Cpu);
    let mut cache = KvCache::new(
        model.kv_shape(),
        KvCacheConfig::for_tokens(32, 16, candle_core::DType::F32),
        &Device::Cpu,
    )
    .unwrap();
    let blocks = [0u32, 1];
    let run = |tokens: &[u32], start: usize, blocks: &[u32], cache: &mut KvCache| {
        let seq = SeqChunk {
            tokens,
            start_pos: start,
            blocks,
            logits: LogitsWanted::Last,
        };
        model
            .forward(&Batch::new(vec![seq]), cache)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(run(&[999], 0, &blocks, &mut cache).contains("token id 999"));
    assert!(run(&[1; 40], 0, &blocks, &mut cache).contains("block table"));
    assert!(run(&[1], 0, &[7], &mut cache).contains("block id 7"));
    assert!(run(&[], 0, &blocks, &mut cache).contains("no tokens"));
    assert!(run(&[1], 600, &[0; 40], &mut cache).contains("context"));
    let empty = model.forward(&Batch::default(), &mut cache).unwrap_err();
    assert!(empty.to_string().contains("no sequences"));
}

#[test]
fn rope_scalings_change_only_what_they_should() {
    let mut cfg = tiny_config();
    let base = cfg.inv_freq();
    cfg.rope_scaling = RopeScaling::Linear { factor: 2.0 };
    for (a, b) in base.iter().zip(cfg.inv_freq()) {
        assert!((a / 2.0 - b).abs() < 1e-12);
    }
    cfg.rope_scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 64,
    };
    let l3 = cfg.inv_freq();
    // Highest frequency (short wavelength) untouched, lowest divided by the factor.
    assert!((l3[0] - base[0]).abs() < 1e-12);
    let last = base.len() - 1;
    assert!((l3[last] - base[last] / 8.0).abs() < 1e-12);
    cfg.rope_scaling = RopeScaling::FreqFactors(vec![2.0; cfg.head_dim / 2]);
    assert!((cfg.inv_freq()[1] - base[1] / 2.0).abs() < 1e-12);
    cfg.rope_scaling = RopeScaling::FreqFactors(vec![1.0; 3]);
    assert!(cfg.validate().unwrap_err().contains("frequency factors"));
}

#[test]
fn mismatched_weight_shapes_are_named_errors() {
    use candle_core::quantized::QMatMul;
    use candle_core::Tensor;
    let cfg = tiny_config();
    let good = random_llama(&cfg, 5, None, &Device::Cpu);
    // Rebuild the weights with one wrong matrix: attn_k of layer 1 gets the query's shape.
    let dev = Device::Cpu;
    let dense = |r: usize, c: usize| {
        crate::kernels::Linear::from(QMatMul::Tensor(
            Tensor::zeros((r, c), candle_core::DType::F32, &dev).unwrap(),
        ))
    };
    let (h, q, kv, ff) = (
        cfg.hidden_size,
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
    let norm = || Tensor::ones(h, candle_core::DType::F32, &dev).unwrap();
    let layers = (0..cfg.num_layers)
        .map(|i| llama::LayerWeights {
            attn_norm: norm(),
            wq: dense(q, h),
            wk: if i == 1 { dense(q, h) } else { dense(kv, h) },
            wv: dense(kv, h),
            wo: dense(h, q),
            ffn_norm: norm(),
            w_gate: dense(ff, h),
            w_up: dense(ff, h),
            w_down: dense(h, ff),
            extras: Default::default(),
        })
        .collect();
    let weights = llama::LlamaWeights {
        embed: Tensor::zeros((cfg.vocab_size, h), candle_core::DType::F32, &dev)
            .unwrap()
            .into(),
        layers,
        norm: norm(),
        lm_head: None,
    };
    let err = Llama::new(cfg.clone(), weights, &dev)
        .err()
        .expect("shape mismatch is refused");
    assert_eq!(
        err,
        format!("tensor blk.1.attn_k: expected shape [{kv}, {h}], found [{q}, {h}]")
    );
    assert_eq!(good.config(), &cfg);
}
