//! `wick run` on broken inputs: a clear message and a non-zero exit, never a panic.

use std::path::Path;
use std::process::Command;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

fn wick_run(model: &Path) -> (bool, String) {
    wick_run_with(model, &[])
}

fn wick_run_with(model: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .envs(env.iter().copied())
        .args(["run", "--model"])
        .arg(model)
        .args(["--max-tokens", "4", "Hello"])
        .output()
        .expect("wick runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "wick panicked:\n{stderr}");
    (out.status.success(), stderr)
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let Some(real) = crate::common::model_path() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("truncated.gguf");
    let bytes = std::fs::read(&real).expect("read model");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let (ok, stderr) = wick_run(&path);
    assert!(!ok);
    assert!(
        stderr.contains("truncated") && stderr.contains("truncated.gguf"),
        "{stderr}"
    );

    // Cut inside the header too: still an error, not a panic.
    std::fs::write(&path, &bytes[..1000]).expect("write");
    let (ok, stderr) = wick_run(&path);
    assert!(!ok);
    assert!(stderr.contains("invalid or corrupt GGUF"), "{stderr}");
}

/// Regression (issue 16, item 8): with `RUST_BACKTRACE` set, candle put a 24-frame backtrace
/// into the error text; and log lines to a pipe carried ANSI colour codes.
#[test]
fn a_corrupt_model_is_one_line_with_rust_backtrace_set_and_no_colour_codes() {
    let Some(real) = crate::common::model_path() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.gguf");
    let bytes = std::fs::read(&real).expect("read model");
    for cut in [bytes.len() / 2, 1000] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let env = [("RUST_BACKTRACE", "1"), ("RUST_LOG", "wick=debug")];
        let (ok, stderr) = wick_run_with(&path, &env);
        assert!(!ok);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("corrupt.gguf"), "{stderr}");
        let frame = |l: &str| {
            let t = l.trim_start();
            t.split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                || t.starts_with("at ")
        };
        assert!(!stderr.lines().any(frame), "a backtrace:\n{stderr}");
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes in a pipe:\n{stderr}"
        );
    }
    // `serve` logs before it loads: its log lines to a pipe are plain text.
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_wick"))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "wick=info")
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(&path)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("wick runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("loading the default model"),
        "a log line: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe:\n{stderr}"
    );
    let errors = stderr.lines().filter(|l| l.starts_with("error: ")).count();
    assert_eq!(errors, 1, "{stderr}");
}

#[test]
fn gguf_of_an_unsupported_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mamba.gguf");
    let arch = Value::String("mamba".into());
    let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, GgmlDType::F32).expect("qtensor");
    let mut f = std::fs::File::create(&path).expect("create");
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &q)],
    )
    .expect("write gguf");
    drop(f);
    let (ok, stderr) = wick_run(&path);
    assert!(!ok);
    assert!(
        stderr.contains("unsupported architecture `mamba`"),
        "{stderr}"
    );
}

#[test]
fn directory_without_config_json_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tokenizer.json"), "{}").expect("write");
    let (ok, stderr) = wick_run(dir.path());
    assert!(!ok);
    assert!(stderr.contains("no config.json"), "{stderr}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let (ok, stderr) = wick_run(Path::new("./no/such/model.gguf"));
    assert!(!ok);
    assert!(stderr.contains("no such file"), "{stderr}");
}

#[test]
fn not_a_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, b"this is not a gguf file at all").expect("write");
    let (ok, stderr) = wick_run(&path);
    assert!(!ok);
    assert!(stderr.contains("invalid or corrupt GGUF"), "{stderr}");
}
