//! Shared helpers: where the test model and the reference data are.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Device;
use wick::model::LoadedModel;

/// The test model: `$WICK_TEST_MODEL`, else `models/SmolLM2-135M-Instruct.Q4_1.gguf`.
/// `None` (with a notice) when it is missing outside CI; under CI a missing model fails.
pub fn model_path() -> Option<PathBuf> {
    let p = std::env::var_os("WICK_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "test model missing at {} (run scripts/fetch-test-model.sh)",
            p.display()
        );
    }
    eprintln!(
        "skipping: test model missing at {} (run scripts/fetch-test-model.sh)",
        p.display()
    );
    None
}

/// `$WICK_REFERENCE_DIR`, else `../shared/reference` beside the checkout.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("WICK_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"))
}

pub fn reference(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reference file {}: {e}", p.display()));
    serde_json::from_str(&text).expect("reference JSON parses")
}

/// The test model, loaded once per test binary.
pub fn model() -> Option<&'static LoadedModel> {
    static MODEL: OnceLock<Option<LoadedModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            model_path().map(|p| {
                wick::model::load(p.to_str().expect("utf-8 path"), &Device::Cpu)
                    .expect("test model loads")
            })
        })
        .as_ref()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
