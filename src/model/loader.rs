//! Loading a model: a GGUF file, a Hugging Face directory, or a hub id `org/name[:file]`, into
//! a [`Llama`] plus its tokenizer and chat template.
//!
//! Runs once at start-up on the caller's thread. Every failure is a [`LoadError`] that names the
//! file, the field and what was expected against what was found; nothing here panics on bad
//! input.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::embedding::{Embedding, QuantizedTable};
use super::hub::{self, HubSpec};
use crate::kernels::Linear;

use super::llama::{LayerWeights, Llama, LlamaConfig, LlamaWeights, RopeScaling, RopeStyle};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// Architectures (`general.architecture` / `model_type`) this loader builds.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

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
    #[error("{path}: unsupported architecture `{found}` (supported: {})", SUPPORTED_ARCHITECTURES.join(", "))]
    UnsupportedArchitecture { path: PathBuf, found: String },
    #[error("{path}: tensor `{tensor}` has unsupported type {dtype}")]
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
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
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

// ---------------------------------------------------------------- GGUF

/// Typed access to a GGUF's metadata with errors that name the file and key.
struct Meta<'a> {
    path: &'a Path,
    content: &'a Content,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn bad(&self, key: &str, expected: &str, v: &Value) -> LoadError {
        LoadError::BadField {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: format!("{v:?}").chars().take(80).collect(),
        }
    }

    fn missing(&self, key: &str) -> LoadError {
        LoadError::MissingField {
            path: self.path.to_path_buf(),
            key: key.to_string(),
        }
    }

    fn string(&self, key: &str) -> Result<&str, LoadError> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.bad(key, "a string", v)),
            None => Err(self.missing(key)),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n: i128 = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            _ => return Err(self.bad(key, "an integer", v)),
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| self.bad(key, "a non-negative integer", v))
    }

    fn usize(&self, key: &str) -> Result<usize, LoadError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.bad(key, "a float", v)),
        }
    }
}

fn gguf_config(meta: &Meta<'_>, arch: &str, vocab: usize) -> Result<LlamaConfig, LoadError> {
    let k = |s: &str| format!("{arch}.{s}");
    let num_heads = meta.usize(&k("attention.head_count"))?;
    let hidden_size = meta.usize(&k("embedding_length"))?;
    let head_dim = match meta.opt_usize(&k("attention.key_length"))? {
        Some(d) => d,
        None if num_heads > 0 => hidden_size / num_heads,
        None => 0,
    };
    let rope_scaling = match meta.get(&k("rope.scaling.type")) {
        Some(Value::String(t)) if t == "linear" => RopeScaling::Linear {
            factor: meta.opt_f64(&k("rope.scaling.factor"))?.unwrap_or(1.0) as f32,
        },
        Some(Value::String(t)) if t == "none" => RopeScaling::None,
        Some(v @ Value::String(_)) => {
            return Err(meta.bad(&k("rope.scaling.type"), "none or linear", v))
        }
        _ => RopeScaling::None,
    };
    Ok(LlamaConfig {
        vocab_size: vocab,
        hidden_size,
        intermediate_size: meta.usize(&k("feed_forward_length"))?,
        num_layers: meta.usize(&k("block_count"))?,
        num_heads,
        num_kv_heads: meta
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(num_heads),
        head_dim,
        rms_norm_eps: meta
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope_theta: meta.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0) as f32,
        rope_scaling,
        rope_style: RopeStyle::Interleaved,
        max_position: meta.opt_usize(&k("context_length"))?.unwrap_or(4096),
    })
}

/// Fails early, with one clear message, if the file is shorter than its tensor table says.
fn check_gguf_sizes(path: &Path, content: &Content, file_len: u64) -> Result<(), LoadError> {
    for (name, info) in &content.tensor_infos {
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        if elems % block != 0 {
            return Err(LoadError::Gguf {
                path: path.to_path_buf(),
                detail: format!(
                    "tensor `{name}` has {elems} elements, not a multiple of its block size {block}"
                ),
            });
        }
        let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
        let end = content.tensor_data_offset + info.offset + bytes;
        if end > file_len {
            return Err(LoadError::Gguf {
                path: path.to_path_buf(),
                detail: format!(
                    "file is truncated: tensor `{name}` ends at byte {end}, the file has {file_len} bytes"
                ),
            });
        }
    }
    Ok(())
}

const GGUF_DTYPES: &[GgmlDType] = &[
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::BF16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q5_0,
    GgmlDType::Q5_1,
    GgmlDType::Q8_0,
    GgmlDType::Q2K,
    GgmlDType::Q3K,
    GgmlDType::Q4K,
    GgmlDType::Q5K,
    GgmlDType::Q6K,
];

struct GgufReader<'a> {
    path: &'a Path,
    content: &'a Content,
    file: File,
    device: &'a Device,
}

impl GgufReader<'_> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor, LoadError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LoadError::MissingTensor {
                path: self.path.to_path_buf(),
                name: name.to_string(),
            })?;
        if !GGUF_DTYPES.contains(&info.ggml_dtype) {
            return Err(LoadError::UnsupportedDtype {
                path: self.path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{:?}", info.ggml_dtype),
            });
        }
        self.content
            .tensor(&mut self.file, name, self.device)
            .map_err(|e| LoadError::Gguf {
                path: self.path.to_path_buf(),
                detail: format!("tensor `{name}`: {e}"),
            })
    }

    /// A weight matrix, on our kernels when they take its type (see [`Linear::from_qtensor`]).
    fn matmul(&mut self, name: &str) -> Result<Linear, LoadError> {
        let q = self.qtensor(name)?;
        Linear::from_qtensor(q).map_err(|e| self.candle(e))
    }

    /// A dense f32 tensor (norm weights, embeddings).
    fn dense(&mut self, name: &str) -> Result<Tensor, LoadError> {
        let q = self.qtensor(name)?;
        q.dequantize(self.device).map_err(|e| self.candle(e))
    }

    /// Decoder layer `i`, under the `blk.{i}.` names.
    fn layer(&mut self, i: usize) -> Result<LayerWeights, LoadError> {
        let t = |s: &str| format!("blk.{i}.{s}.weight");
        Ok(LayerWeights {
            attn_norm: self.dense(&t("attn_norm"))?,
            wq: self.matmul(&t("attn_q"))?,
            wk: self.matmul(&t("attn_k"))?,
            wv: self.matmul(&t("attn_v"))?,
            wo: self.matmul(&t("attn_output"))?,
            ffn_norm: self.dense(&t("ffn_norm"))?,
            w_gate: self.matmul(&t("ffn_gate"))?,
            w_up: self.matmul(&t("ffn_up"))?,
            w_down: self.matmul(&t("ffn_down"))?,
        })
    }

    fn candle(&self, source: candle_core::Error) -> LoadError {
        LoadError::Candle {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

/// Opens a GGUF file and reads its header, metadata and tensor table, checking that the file
/// holds every tensor it lists and that the architecture is one we build.
fn open_gguf(path: &Path) -> Result<(File, Content, String), LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !path.exists() {
        return Err(LoadError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let content = Content::read(&mut file).map_err(|e| LoadError::Gguf {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let meta = Meta {
        path,
        content: &content,
    };
    let arch = meta.string("general.architecture")?.to_string();
    if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(LoadError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: arch,
        });
    }
    check_gguf_sizes(path, &content, file_len)?;
    Ok((file, content, arch))
}

/// Loads a GGUF file: weights stay quantized, the tokenizer and chat template come from its
/// metadata.
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel, LoadError> {
    let (file, content, arch) = open_gguf(path)?;
    let tokenizer = Tokenizer::from_gguf(&content).map_err(|e| LoadError::Tokenizer {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let chat_template = ChatTemplate::from_gguf(&content).map_err(|e| LoadError::Template {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let model = gguf_llama(path, file, &content, &arch, device)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        name: display_name(path),
    })
}

/// Loads only the model of a GGUF file (no tokenizer): for benches and tools.
pub fn load_gguf_llama(path: &Path, device: &Device) -> Result<Llama, LoadError> {
    let (file, content, arch) = open_gguf(path)?;
    gguf_llama(path, file, &content, &arch, device)
}

fn gguf_llama(
    path: &Path,
    file: File,
    content: &Content,
    arch: &str,
    device: &Device,
) -> Result<Llama, LoadError> {
    let meta = Meta { path, content };
    let mut r = GgufReader {
        path,
        content,
        file,
        device,
    };
    let embed_q = r.qtensor("token_embd.weight")?;
    let vocab = match embed_q.shape().dims() {
        [v, _] => *v,
        dims => {
            return Err(LoadError::Shape {
                path: path.to_path_buf(),
                detail: format!("tensor token_embd.weight: expected 2 dimensions, found {dims:?}"),
            })
        }
    };
    let mut cfg = gguf_config(&meta, arch, vocab)?;
    if r.has("rope_freqs.weight") {
        let f = r.dense("rope_freqs.weight")?;
        let f = f.flatten_all().and_then(|t| t.to_vec1::<f32>());
        cfg.rope_scaling = RopeScaling::FreqFactors(f.map_err(|e| r.candle(e))?);
    }
    // On the CPU the table stays in its blocks and a step dequantizes the rows it looks up.
    let table = if device.is_cpu() {
        QuantizedTable::new(&embed_q).map_err(|e| r.candle(e))?
    } else {
        None
    };
    let embed = match table {
        Some(t) => Embedding::Quantized(t),
        None => Embedding::Dense(embed_q.dequantize(device).map_err(|e| r.candle(e))?),
    };
    // Tied models (no `output.weight`) multiply by the embedding table as stored, quantized,
    // as llama.cpp does.
    let lm_head = if r.has("output.weight") {
        Some(r.matmul("output.weight")?)
    } else {
        Some(Linear::from_qtensor(embed_q).map_err(|e| r.candle(e))?)
    };
    let layers = (0..cfg.num_layers)
        .map(|i| r.layer(i))
        .collect::<Result<Vec<_>, _>>()?;
    let weights = LlamaWeights {
        embed,
        layers,
        norm: r.dense("output_norm.weight")?,
        lm_head,
    };
    Llama::new(cfg, weights, device).map_err(|detail| LoadError::Shape {
        path: path.to_path_buf(),
        detail,
    })
}

// ---------------------------------------------------------------- Hugging Face directory

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
    if !SUPPORTED_ARCHITECTURES.contains(&model_type.as_str()) {
        return Err(LoadError::UnsupportedArchitecture {
            path: config_path,
            found: model_type,
        });
    }
    Ok((hf, config_path))
}

fn hf_config(config_path: &Path, hf: &HfConfig) -> Result<LlamaConfig, LoadError> {
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
        max_position: hf.max_position_embeddings.unwrap_or(4096),
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
