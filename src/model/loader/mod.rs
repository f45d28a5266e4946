//! Loading a model: a GGUF file ([`gguf`]), a Hugging Face directory ([`hf`]), or a hub id
//! `org/name[:file]`, into a [`Llama`] plus its tokenizer and chat template.
//!
//! Runs once at start-up on the caller's thread. Every failure is a [`LoadError`] that names the
//! file, the field and what was expected against what was found; nothing here panics on bad
//! input.

pub(crate) mod gguf;
mod hf;

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::hub::{self, HubSpec};
use super::llama::Llama;
use crate::tokenizer::{ChatTemplate, Tokenizer};

pub use gguf::{load_gguf, load_gguf_llama};
pub use hf::load_hf_dir;

/// Architectures (GGUF `general.architecture`) the GGUF loader builds.
pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

/// Architectures (`config.json` `model_type`) the Hugging Face loader builds.
pub const SUPPORTED_HF_ARCHITECTURES: &[&str] = &["llama", "mistral"];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("{path}: not a model: {detail}")]
    NotAModel { path: PathBuf, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid or corrupt GGUF: {detail}")]
    Gguf { path: PathBuf, detail: String },
    #[error("{path}: missing metadata field `{key}`")]
    MissingField { path: PathBuf, key: String },
    #[error("{path}: field `{key}`: expected {expected}, found {found}")]
    BadField {
        path: PathBuf,
        key: String,
        expected: String,
        found: String,
    },
    #[error("{path}: unsupported architecture `{found}` (supported: {})", supported.join(", "))]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        /// What this kind of source supports.
        supported: &'static [&'static str],
    },
    #[error("{path}: unsupported: {what} (supported: {supported})")]
    Unsupported {
        path: PathBuf,
        what: String,
        supported: String,
    },
    #[error("{path}: tensor `{tensor}` has unsupported type {dtype} (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K-Q6_K)")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: {detail}")]
    Shape { path: PathBuf, detail: String },
    #[error("{path}: tokenizer: {detail}")]
    Tokenizer { path: PathBuf, detail: String },
    #[error("{path}: chat template: {detail}")]
    Template { path: PathBuf, detail: String },
    #[error("model `{repo}` is not in the local hub cache ({detail}); unset HF_HUB_OFFLINE to download it")]
    NotInCache { repo: String, detail: String },
    #[error("model `{repo}`: hub: {detail}")]
    Hub { repo: String, detail: String },
    #[error("{path}: {}", one_line(source))]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// A candle error as one line: with `RUST_BACKTRACE` set candle captures a backtrace into the
/// error and prints it with the message, which a user loading a bad file does not want.
pub fn one_line(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => one_line(inner),
        candle_core::Error::WithPath { inner, path } => {
            format!("{}: {}", path.display(), one_line(inner))
        }
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", one_line(inner))
        }
        other => other.to_string().lines().collect::<Vec<_>>().join(": "),
    }
}

/// Where a model comes from, once a CLI spec is resolved to local files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl ModelSource {
    /// A path to a `.gguf` file or a directory, else a hub id (from the cache when
    /// `HF_HUB_OFFLINE=1`, downloaded otherwise).
    pub fn resolve(spec: &str) -> Result<Self, LoadError> {
        let path = Path::new(spec);
        if path.exists() {
            return Self::from_path(path);
        }
        match HubSpec::parse(spec) {
            Some(hs) if !Self::looks_local(spec) => {
                let local = hub::resolve(&hs, &hub::default_cache(), hub::offline())?;
                Self::from_path(&local)
            }
            _ => Err(LoadError::NotFound {
                path: path.to_path_buf(),
            }),
        }
    }

    fn looks_local(spec: &str) -> bool {
        // `models/x.gguf` when `models/` exists is a missing file, not a hub id.
        let parent = Path::new(spec).parent();
        spec.starts_with('.')
            || spec.starts_with('/')
            || parent.is_some_and(|p| !p.as_os_str().is_empty() && p.is_dir())
    }

    fn from_path(path: &Path) -> Result<Self, LoadError> {
        if path.is_dir() {
            Ok(Self::HfDir(path.to_path_buf()))
        } else {
            Ok(Self::Gguf(path.to_path_buf()))
        }
    }
}

/// A model ready to serve.
pub struct LoadedModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// A display name: the file or directory name.
    pub name: String,
}

/// Resolves `spec` and loads it onto `device`.
pub fn load(spec: &str, device: &Device) -> Result<LoadedModel, LoadError> {
    match ModelSource::resolve(spec)? {
        ModelSource::Gguf(p) => load_gguf(&p, device),
        ModelSource::HfDir(p) => load_hf_dir(&p, device),
    }
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
        .unwrap_or_else(|| path.display().to_string())
}
