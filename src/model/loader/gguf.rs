//! GGUF files: the metadata read into a [`LlamaConfig`] and the architecture's options, the
//! tensors into weights (kept quantized), through the architecture's own file in
//! [`crate::model::arch`].

use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::{display_name, LoadError, LoadedModel, SUPPORTED_ARCHITECTURES};
use crate::kernels::Linear;
use crate::model::arch::Arch;
use crate::model::embedding::{Embedding, QuantizedTable};
use crate::model::llama::{LayerWeights, Llama, LlamaConfig, LlamaWeights, RopeScaling};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// Typed access to a GGUF's metadata with errors that name the file and key.
pub(crate) struct Meta<'a> {
    path: &'a Path,
    content: &'a Content,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// `key` holds a value of the right type but not one wick can use.
    pub(crate) fn bad_value(
        &self,
        key: &str,
        expected: &str,
        found: impl std::fmt::Debug,
    ) -> LoadError {
        LoadError::BadField {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: format!("{found:?}"),
        }
    }

    /// A feature of the file wick does not run, and what it runs instead.
    pub(crate) fn unsupported(&self, what: &str, supported: &str) -> LoadError {
        LoadError::Unsupported {
            path: self.path.to_path_buf(),
            what: what.to_string(),
            supported: supported.to_string(),
        }
    }

    /// An array of booleans (or of integers, as some converters write them).
    pub(crate) fn opt_bools(&self, key: &str) -> Result<Option<Vec<bool>>, LoadError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Value::Array(items) = v else {
            return Ok(None);
        };
        items
            .iter()
            .map(|x| match x {
                Value::Bool(b) => Ok(*b),
                Value::U8(n) => Ok(*n != 0),
                Value::I32(n) => Ok(*n != 0),
                Value::U32(n) => Ok(*n != 0),
                other => Err(self.bad(key, "an array of booleans", other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
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

    pub(crate) fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
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

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(x)) => Ok(Some(*x as f64)),
            Some(Value::F64(x)) => Ok(Some(*x)),
            Some(v) => Err(self.bad(key, "a float", v)),
        }
    }
}

fn gguf_config(meta: &Meta<'_>, arch: Arch, vocab: usize) -> Result<LlamaConfig, LoadError> {
    let k = |s: &str| format!("{}.{s}", arch.name());
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
        rope_style: arch.gguf_rope_style(),
        max_position: meta.opt_usize(&k("context_length"))?.unwrap_or(4096),
        arch: Default::default(),
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

pub(crate) struct GgufReader<'a> {
    path: &'a Path,
    content: &'a Content,
    file: File,
    device: &'a Device,
    /// Output rows of Q, of K (and V), and of the MLP's gate (and up), from the config.
    q_out: usize,
    kv_out: usize,
    ff: usize,
}

impl GgufReader<'_> {
    /// Output rows of Q and of K (V has K's): `(heads * head_dim, kv_heads * head_dim)`.
    pub(crate) fn attn_dims(&self) -> (usize, usize) {
        (self.q_out, self.kv_out)
    }

    /// The MLP's intermediate size.
    pub(crate) fn ffn_dim(&self) -> usize {
        self.ff
    }

    pub(crate) fn shape_error(&self, name: &str, expected: &str) -> LoadError {
        LoadError::Shape {
            path: self.path.to_path_buf(),
            detail: format!("tensor {name}: expected {expected}"),
        }
    }

    /// A fused matrix (`[sum of parts, in]`) split by rows into matrices of `parts` rows each,
    /// in order. Exact: each row is a whole number of quantization blocks.
    pub(crate) fn split_rows(
        &mut self,
        name: &str,
        parts: &[usize],
    ) -> Result<Vec<Linear>, LoadError> {
        let q = self.qtensor(name)?;
        let total: usize = parts.iter().sum();
        let (rows, cols) = match q.shape().dims() {
            [r, c] => (*r, *c),
            _ => return Err(self.shape_error(name, "2 dimensions")),
        };
        if rows != total {
            return Err(self.shape_error(name, &format!("{total} rows (found {rows}) of {cols}")));
        }
        let dtype = q.dtype();
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        let data = q.data().map_err(|e| self.candle(e))?;
        let mut out = Vec::with_capacity(parts.len());
        let mut row0 = 0;
        for &n in parts {
            let bytes = data[row0 * row_bytes..(row0 + n) * row_bytes].to_vec();
            let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), self.device, dtype)
                .map_err(|e| self.candle(e))?;
            let part = QTensor::new(storage, (n, cols)).map_err(|e| self.candle(e))?;
            out.push(Linear::from_qtensor(part).map_err(|e| self.candle(e))?);
            row0 += n;
        }
        Ok(out)
    }

    pub(crate) fn has(&self, name: &str) -> bool {
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
    pub(crate) fn matmul(&mut self, name: &str) -> Result<Linear, LoadError> {
        let q = self.qtensor(name)?;
        Linear::from_qtensor(q).map_err(|e| self.candle(e))
    }

    /// A dense f32 tensor (norm weights, embeddings).
    pub(crate) fn dense(&mut self, name: &str) -> Result<Tensor, LoadError> {
        let q = self.qtensor(name)?;
        q.dequantize(self.device).map_err(|e| self.candle(e))
    }

    /// Decoder layer `i`, under the `blk.{i}.` names.
    pub(crate) fn layer(&mut self, i: usize) -> Result<LayerWeights, LoadError> {
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
            extras: Default::default(),
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
fn open_gguf(path: &Path) -> Result<(File, Content, Arch), LoadError> {
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
        detail: super::one_line(&e),
    })?;
    let meta = Meta {
        path,
        content: &content,
    };
    let name = meta.string("general.architecture")?;
    let Some(arch) = Arch::from_name(name) else {
        return Err(LoadError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            found: name.to_string(),
            supported: SUPPORTED_ARCHITECTURES,
        });
    };
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
    let model = gguf_llama(path, file, &content, arch, device)?;
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
    gguf_llama(path, file, &content, arch, device)
}

fn gguf_llama(
    path: &Path,
    file: File,
    content: &Content,
    arch: Arch,
    device: &Device,
) -> Result<Llama, LoadError> {
    let meta = Meta { path, content };
    let mut r = GgufReader {
        path,
        content,
        file,
        device,
        q_out: 0,
        kv_out: 0,
        ff: 0,
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
    cfg.arch = arch.gguf_options(&meta, &cfg)?;
    (r.q_out, r.kv_out, r.ff) = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.intermediate_size,
    );
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
    let lm_head = if r.has("output.weight") && !arch.always_tied() {
        Some(r.matmul("output.weight")?)
    } else {
        Some(Linear::from_qtensor(embed_q).map_err(|e| r.candle(e))?)
    };
    let layers = (0..cfg.num_layers)
        .map(|i| arch.gguf_layer(&mut r, i))
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
