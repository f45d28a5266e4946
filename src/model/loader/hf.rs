//! Hugging Face model directories: `config.json`, `*.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json`, `generation_config.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::{display_name, LoadError, LoadedModel, SUPPORTED_HF_ARCHITECTURES};
use crate::kernels::Linear;
use crate::model::arch::ArchOptions;
use crate::model::llama::{LayerWeights, Llama, LlamaConfig, LlamaWeights, RopeScaling, RopeStyle};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// The fields of `config.json` a Llama needs.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// Mistral's sliding window (`null` or absent: global attention).
    sliding_window: Option<usize>,
}

fn hf_rope_scaling(path: &Path, v: &Option<serde_json::Value>) -> Result<RopeScaling, LoadError> {
    let Some(obj) = v.as_ref().and_then(|v| v.as_object()) else {
        return Ok(RopeScaling::None);
    };
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    let num = |key: &str, default: f64| obj.get(key).and_then(|x| x.as_f64()).unwrap_or(default);
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor", 1.0) as f32,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor", 8.0) as f32,
            low_freq_factor: num("low_freq_factor", 1.0) as f32,
            high_freq_factor: num("high_freq_factor", 4.0) as f32,
            original_max_position: num("original_max_position_embeddings", 8192.0) as usize,
        }),
        other => Err(LoadError::BadField {
            path: path.to_path_buf(),
            key: "rope_scaling.rope_type".into(),
            expected: "default, linear or llama3".into(),
            found: other.to_string(),
        }),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::NotAModel {
        path: path.to_path_buf(),
        detail: format!("invalid JSON: {e}"),
    })
}

/// The safetensors files of a directory: those the index names, else every `*.safetensors`.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: std::collections::HashMap<String, String>,
        }
        let idx: Index = read_json(&index)?;
        let files: BTreeSet<&String> = idx.weight_map.values().collect();
        return files
            .into_iter()
            .map(|f| {
                let p = dir.join(f);
                if p.exists() {
                    Ok(p)
                } else {
                    Err(LoadError::NotFound { path: p })
                }
            })
            .collect();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::NotAModel {
            path: dir.to_path_buf(),
            detail: "no *.safetensors files".into(),
        });
    }
    Ok(files)
}

struct SafetensorsReader<'a> {
    dir: &'a Path,
    st: candle_core::safetensors::MmapedSafetensors,
    device: &'a Device,
    dtype: DType,
}

impl SafetensorsReader<'_> {
    fn tensor(&self, name: &str) -> Result<Tensor, LoadError> {
        let t = self
            .st
            .load(name, self.device)
            .map_err(|_| LoadError::MissingTensor {
                path: self.dir.to_path_buf(),
                name: name.to_string(),
            })?;
        t.to_dtype(self.dtype).map_err(|source| LoadError::Candle {
            path: self.dir.to_path_buf(),
            source,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }

    fn linear(&self, name: &str) -> Result<Linear, LoadError> {
        Ok(QMatMul::Tensor(self.tensor(name)?).into())
    }
    /// Decoder layer `i`, under the `model.layers.{i}.` names.
    fn layer(&self, i: usize) -> Result<LayerWeights, LoadError> {
        let p = format!("model.layers.{i}");
        Ok(LayerWeights {
            attn_norm: self.tensor(&format!("{p}.input_layernorm.weight"))?,
            wq: self.linear(&format!("{p}.self_attn.q_proj.weight"))?,
            wk: self.linear(&format!("{p}.self_attn.k_proj.weight"))?,
            wv: self.linear(&format!("{p}.self_attn.v_proj.weight"))?,
            wo: self.linear(&format!("{p}.self_attn.o_proj.weight"))?,
            ffn_norm: self.tensor(&format!("{p}.post_attention_layernorm.weight"))?,
            w_gate: self.linear(&format!("{p}.mlp.gate_proj.weight"))?,
            w_up: self.linear(&format!("{p}.mlp.up_proj.weight"))?,
            w_down: self.linear(&format!("{p}.mlp.down_proj.weight"))?,
            extras: Default::default(),
        })
    }
}

/// Loads a Hugging Face directory: `config.json`, `*.safetensors` (sharded with an index too),
/// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<LoadedModel, LoadError> {
    let (hf, config_path) = open_hf_dir(dir)?;
    let cfg = hf_config(&config_path, &hf)?;
    let (tokenizer, chat_template) = hf_tokenizer(dir)?;
    let model = hf_llama(dir, cfg, hf.tie_word_embeddings, device)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name: display_name(dir),
    })
}

/// Reads `config.json`, checking that the directory has one and that the architecture is one
/// we build. Returns the config and its path, which later errors name.
fn open_hf_dir(dir: &Path) -> Result<(HfConfig, PathBuf), LoadError> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(LoadError::NotAModel {
            path: dir.to_path_buf(),
            detail: "no config.json (a Hugging Face model directory needs config.json, *.safetensors and tokenizer.json)".into(),
        });
    }
    let hf: HfConfig = read_json(&config_path)?;
    let model_type = hf.model_type.clone().unwrap_or_else(|| "llama".into());
    if !SUPPORTED_HF_ARCHITECTURES.contains(&model_type.as_str()) {
        return Err(LoadError::UnsupportedArchitecture {
            path: config_path,
            found: model_type,
            supported: SUPPORTED_HF_ARCHITECTURES,
        });
    }
    Ok((hf, config_path))
}

fn hf_config(config_path: &Path, hf: &HfConfig) -> Result<LlamaConfig, LoadError> {
    let max_position = hf.max_position_embeddings.unwrap_or(4096);
    // A window as long as the context changes nothing.
    let window = hf.sliding_window.filter(|&w| w > 0 && w < max_position);
    Ok(LlamaConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        rope_theta: hf.rope_theta.unwrap_or(10_000.0) as f32,
        rope_scaling: hf_rope_scaling(config_path, &hf.rope_scaling)?,
        rope_style: RopeStyle::Half,
        max_position,
        arch: ArchOptions {
            windows: window.map_or_else(Vec::new, |w| vec![Some(w); hf.num_hidden_layers]),
            ..ArchOptions::default()
        },
    })
}

/// The tokenizer from `tokenizer.json` (with `tokenizer_config.json` and
/// `generation_config.json` where present) and the chat template from `tokenizer_config.json`.
fn hf_tokenizer(dir: &Path) -> Result<(Tokenizer, Option<ChatTemplate>), LoadError> {
    let tok_json = dir.join("tokenizer.json");
    if !tok_json.exists() {
        return Err(LoadError::NotFound { path: tok_json });
    }
    let opt = |name: &str| {
        let p = dir.join(name);
        p.exists().then_some(p)
    };
    let tok_config = opt("tokenizer_config.json");
    let tokenizer = Tokenizer::from_hf_files(
        &tok_json,
        tok_config.as_deref(),
        opt("generation_config.json").as_deref(),
    )
    .map_err(|e| LoadError::Tokenizer {
        path: tok_json.clone(),
        detail: e.to_string(),
    })?;
    let chat_template = match &tok_config {
        Some(p) => ChatTemplate::from_tokenizer_config(p).map_err(|e| LoadError::Template {
            path: p.clone(),
            detail: e.to_string(),
        })?,
        None => None,
    };
    Ok((tokenizer, chat_template))
}

/// Memory-maps the directory's safetensors files and picks the dtype the weights load in.
fn open_safetensors<'a>(
    dir: &'a Path,
    device: &'a Device,
) -> Result<SafetensorsReader<'a>, LoadError> {
    let files = safetensors_files(dir)?;
    // SAFETY: the files are memory-mapped read-only; like every mmap loader we rely on nobody
    // truncating them while the model loads (tensors are copied out before this returns).
    #[allow(unsafe_code)]
    let st =
        unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files) }.map_err(|e| {
            LoadError::NotAModel {
                path: dir.to_path_buf(),
                detail: format!("unreadable safetensors: {e}"),
            }
        })?;
    // CPU kernels are fastest in f32; accelerators keep half precision.
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        st.get("model.embed_tokens.weight")
            .map(|v| match v.dtype() {
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::F16 => DType::F16,
                _ => DType::F32,
            })
            .unwrap_or(DType::F32)
    };
    Ok(SafetensorsReader {
        dir,
        st,
        device,
        dtype,
    })
}

/// The model of a Hugging Face directory; `tied` (`tie_word_embeddings`) ignores any
/// `lm_head.weight` and multiplies by the embedding table.
fn hf_llama(dir: &Path, cfg: LlamaConfig, tied: bool, device: &Device) -> Result<Llama, LoadError> {
    let r = open_safetensors(dir, device)?;
    let layers = (0..cfg.num_layers)
        .map(|i| r.layer(i))
        .collect::<Result<Vec<_>, _>>()?;
    let lm_head = if !tied && r.has("lm_head.weight") {
        Some(r.linear("lm_head.weight")?)
    } else {
        None
    };
    let weights = LlamaWeights {
        embed: r.tensor("model.embed_tokens.weight")?.into(),
        layers,
        norm: r.tensor("model.norm.weight")?,
        lm_head,
    };
    Llama::new(cfg, weights, device).map_err(|detail| LoadError::Shape {
        path: dir.to_path_buf(),
        detail,
    })
}
