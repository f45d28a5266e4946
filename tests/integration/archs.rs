//! Every architecture wick runs, on its tiny random-weight GGUF (`tests/data/archs/`, written by
//! `scripts/make-tiny-models.py`), against llama.cpp's outputs on the same file: tokenizer ids
//! exact, the logits of each prompt's last positions close, greedy tokens equal up to a
//! near-tie (the tolerances of `../shared/reference/README.md`), and batched == alone.

use std::path::PathBuf;

use candle_core::Device;
use wick::model::generate::{generate, GenerateOptions};
use wick::model::loader::load_gguf;
use wick::model::testing::{logits_alone, logits_interleaved, max_abs_diff};
use wick::model::LoadedModel;
use wick::sampling::SamplingParams;

use crate::common::ids;

const ARCHS: &[&str] = &[
    "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3",
];

/// Largest |ours - llama.cpp| allowed on a logit. The models are f16 weights with f16 KV on
/// llama.cpp's side and f32 on ours; logits are O(1-10).
const LOGIT_TOL: f32 = 0.05;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/archs")
        .join(name)
}

fn load(arch: &str) -> (LoadedModel, serde_json::Value) {
    let model = load_gguf(&data(&format!("{arch}.gguf")), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{arch}: {e}"));
    let text = std::fs::read_to_string(data(&format!("{arch}.json"))).expect("reference file");
    (model, serde_json::from_str(&text).expect("reference JSON"))
}

fn prompts(reference: &serde_json::Value) -> &Vec<serde_json::Value> {
    reference["prompts"].as_array().expect("prompts")
}

#[test]
fn tokenizer_ids_match_llama_cpp() {
    for arch in ARCHS {
        let (m, r) = load(arch);
        for case in r["tokenizer_cases"].as_array().expect("cases") {
            let text = case["text"].as_str().expect("text");
            let special = case["parse_special"].as_bool().expect("parse_special");
            let ours = m.tokenizer.encode(text, special).expect("encodes");
            assert_eq!(
                ours,
                ids(&case["ids"]),
                "{arch}: {text:?} (special {special})"
            );
        }
        for p in prompts(&r) {
            let text = p["text"].as_str().expect("text");
            let ours = m.tokenizer.encode_prompt(text, true).expect("encodes");
            assert_eq!(ours, ids(&p["ids"]), "{arch}: prompt {text:?}");
        }
    }
}

#[test]
fn last_logits_match_llama_cpp() {
    for arch in ARCHS {
        let (m, r) = load(arch);
        let mut worst = 0f32;
        for p in prompts(&r) {
            let prompt = ids(&p["ids"]);
            let ours = logits_alone(&m.model, &prompt).expect("forward");
            let theirs = p["last_logits"].as_array().expect("last_logits");
            for (k, row) in theirs.iter().enumerate() {
                let pos = prompt.len() - theirs.len() + k;
                let row: Vec<f32> = row
                    .as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("logit") as f32)
                    .collect();
                let diff = max_abs_diff(&ours[pos], &row);
                worst = worst.max(diff);
                assert!(
                    diff <= LOGIT_TOL,
                    "{arch}: prompt {:?} position {pos}: max |diff| {diff}",
                    p["text"]
                );
            }
        }
        eprintln!("{arch}: max |logit - llama.cpp's| {worst:.2e}");
    }
}

/// Greedy tokens equal llama.cpp's until the first difference, which may only come where
/// llama.cpp's own top-1 / top-2 margin is under 0.5 nats and our token is in its top 5.
#[test]
fn greedy_tokens_match_llama_cpp_up_to_near_ties() {
    for arch in ARCHS {
        let (m, r) = load(arch);
        for p in prompts(&r) {
            let steps = p["steps"].as_array().expect("steps");
            let opts = GenerateOptions {
                max_tokens: steps.len(),
                sampling: SamplingParams::greedy(),
                stop_ids: Vec::new(),
                prefill_chunk: 512,
                kv_dtype: candle_core::DType::F16,
            };
            let mut step = 0;
            generate(&m.model, &ids(&p["ids"]), &opts, |tok| {
                let s = &steps[step];
                let theirs = s["id"].as_u64().expect("id") as u32;
                if tok.id == theirs {
                    step += 1;
                    return true;
                }
                let margin = s["margin_top1_top2"].as_f64().expect("margin");
                let top5: Vec<u32> = s["top5"]
                    .as_array()
                    .expect("top5")
                    .iter()
                    .map(|t| t["id"].as_u64().expect("id") as u32)
                    .collect();
                assert!(
                    margin <= 0.5 && top5.contains(&tok.id),
                    "{arch}: prompt {:?} step {step}: we chose {} where llama.cpp chose {theirs} (margin {margin:.3}, top5 {top5:?})",
                    p["text"],
                    tok.id
                );
                false
            })
            .expect("generation runs");
        }
    }
}

/// The engine's batch invariance on every architecture: each prompt's logits at every position
/// are the same (< 1e-4; candle's f16 matmul, which these f16 files take, sums in an order that
/// depends on the row count) run alone in one prefill as interleaved with the others in mixed
/// steps of prefill chunks and decode tokens, through scattered blocks.
#[test]
fn batched_equals_alone_on_every_architecture() {
    for arch in ARCHS {
        let (m, r) = load(arch);
        let seqs: Vec<Vec<u32>> = prompts(&r).iter().map(|p| ids(&p["ids"])).collect();
        let alone: Vec<_> = seqs
            .iter()
            .map(|s| logits_alone(&m.model, s).expect("forward"))
            .collect();
        let mixed =
            logits_interleaved(&m.model, &seqs, 4, |s, _| [5, 1, 3, 7][s % 4]).expect("forward");
        for (s, (a, b)) in alone.iter().zip(&mixed).enumerate() {
            for (pos, (x, y)) in a.iter().zip(b).enumerate() {
                let diff = max_abs_diff(x, y);
                assert!(diff < 1e-4, "{arch}: sequence {s} position {pos}: {diff}");
            }
        }
    }
}

/// Mistral's window: the same file without it gives the same logits on every position that
/// sees no further back than the window, and different ones past it.
#[test]
fn mistral_sliding_window_applies_past_the_window_only() {
    let (m, r) = load("mistral");
    let window = r["window"].as_u64().expect("window") as usize;
    assert_eq!(m.model.config().arch.window(0), Some(window));
    // The same file with the key renamed (same length), which a loader ignores.
    let key = b"llama.attention.sliding_window";
    let mut bytes = std::fs::read(data("mistral.gguf")).expect("read");
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("window key");
    bytes[at + key.len() - 1] = b'_';
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mistral-global.gguf");
    std::fs::write(&path, bytes).expect("write");
    let global = load_gguf(&path, &Device::Cpu).expect("loads");
    assert_eq!(global.model.config().arch.window(0), None);

    let long: Vec<u32> = (0..window as u32 * 2).map(|i| 3 + (i * 7) % 200).collect();
    let windowed = logits_alone(&m.model, &long).expect("forward");
    let full = logits_alone(&global.model, &long).expect("forward");
    for pos in 0..window {
        assert_eq!(
            windowed[pos], full[pos],
            "position {pos} is inside the window"
        );
    }
    let past = (window..long.len())
        .map(|p| max_abs_diff(&windowed[p], &full[p]))
        .fold(0.0, f32::max);
    assert!(past > 1e-3, "the window changed nothing past it ({past})");
}

#[test]
fn unsupported_architecture_is_one_line_naming_the_supported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::fs::read(data("llama.gguf")).expect("read");
    // `general.architecture` is the first string value "llama" in the file; same length.
    let at = src
        .windows(5)
        .position(|w| w == b"llama")
        .expect("arch name");
    let mut bytes = src.clone();
    bytes[at..at + 5].copy_from_slice(b"mamba");
    let path = dir.path().join("mamba.gguf");
    std::fs::write(&path, bytes).expect("write");
    let err = match load_gguf(&path, &Device::Cpu) {
        Ok(_) => panic!("a mamba file loaded"),
        Err(e) => e.to_string(),
    };
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("`mamba`"), "{err}");
    for arch in ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"] {
        assert!(err.contains(arch), "{err} should list {arch}");
    }
}
