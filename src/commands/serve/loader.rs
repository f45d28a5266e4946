//! [`FileLoader`]: the registry's [`Loader`] for `wick serve`: a model's files (or hub id)
//! through `wick::model::load`, its own engine (and KV pool) from the one engine config, and
//! its validator. Runs on the registry's blocking load thread.

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use crate::api::registry::{LoadedServed, Loader, ModelSpec};
use crate::api::Served;
use crate::engine::{Engine, EngineConfig};

/// Loads each served model onto one device, each with an engine of `engine`'s sizes.
pub struct FileLoader {
    pub device: Device,
    pub engine: EngineConfig,
    /// `--max-tokens-cap`, for every model.
    pub max_tokens_cap: Option<usize>,
}

impl Loader for FileLoader {
    fn load(&self, spec: &ModelSpec) -> Result<LoadedServed, String> {
        let loaded = crate::model::load(&spec.source, &self.device).map_err(|e| e.to_string())?;
        let engine = Engine::start(loaded.model, self.engine.clone()).map_err(|e| e.to_string())?;
        let template = loaded.chat_template.map(Arc::new);
        let served = Served::with_max_tokens_cap(
            engine,
            Arc::new(loaded.tokenizer),
            template,
            self.max_tokens_cap,
        );
        Ok(LoadedServed {
            served,
            weight_bytes: source_bytes(&spec.source),
        })
    }

    /// The files' sizes (0 for a hub id not yet resolved) plus the configured KV pool.
    fn estimate_bytes(&self, spec: &ModelSpec) -> u64 {
        source_bytes(&spec.source) + self.engine.kv_cache_bytes.unwrap_or(0)
    }
}

/// The bytes of a model file, or of the files in a model directory; 0 when it is not a local
/// path (a hub id).
pub fn source_bytes(source: &str) -> u64 {
    let path = Path::new(source);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    if !path.is_dir() {
        return size(path);
    }
    std::fs::read_dir(path).map_or(0, |dir| {
        dir.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .map(|p| size(&p))
            .sum()
    })
}
