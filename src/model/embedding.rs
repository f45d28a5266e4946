//! The token embedding table: dense, or kept in its GGUF blocks and dequantized a looked-up row
//! at a time. A 49k x 576 table is 113 MB as f32 and 30 MB as Q8_0; a step looks up only its
//! own tokens, so keeping the blocks is what lets a small model run in a small process.
//! Read by the thread that runs the model; immutable.

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::kernels::{dequantize_row, WeightType};

/// Token embeddings, `[vocab, hidden]`.
pub enum Embedding {
    /// In the activation dtype (safetensors models, tests, devices other than the CPU).
    Dense(Tensor),
    /// Q4_0 / Q4_1 / Q8_0 blocks; rows come out as f32.
    Quantized(QuantizedTable),
}

/// A quantized table's bytes, row after row.
pub struct QuantizedTable {
    kind: WeightType,
    raw: Vec<u8>,
    vocab: usize,
    hidden: usize,
}

impl QuantizedTable {
    /// The table of `q` (`[vocab, hidden]`), if its type is one [`dequantize_row`] covers.
    pub fn new(q: &QTensor) -> candle_core::Result<Option<Self>> {
        let Some(kind) = WeightType::from_ggml(q.dtype()) else {
            return Ok(None);
        };
        let &[vocab, hidden] = q.shape().dims() else {
            return Ok(None);
        };
        if !kind.row_dequantizable() || !hidden.is_multiple_of(kind.block_len()) {
            return Ok(None);
        }
        let raw = q.data()?.into_owned();
        if raw.len() != vocab * (hidden / kind.block_len() * kind.block_bytes()) {
            return Ok(None);
        }
        Ok(Some(Self {
            kind,
            raw,
            vocab,
            hidden,
        }))
    }
}

impl From<Tensor> for Embedding {
    fn from(t: Tensor) -> Self {
        Embedding::Dense(t)
    }
}

impl Embedding {
    /// `[vocab, hidden]`.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Embedding::Dense(t) => t.dims().to_vec(),
            Embedding::Quantized(q) => vec![q.vocab, q.hidden],
        }
    }

    /// The dtype of the rows [`Embedding::lookup`] gives (the model's activation dtype).
    pub fn dtype(&self) -> DType {
        match self {
            Embedding::Dense(t) => t.dtype(),
            Embedding::Quantized(_) => DType::F32,
        }
    }

    /// The dense table, if this is one (a tied LM head can then multiply by it).
    pub fn dense(&self) -> Option<&Tensor> {
        match self {
            Embedding::Dense(t) => Some(t),
            Embedding::Quantized(_) => None,
        }
    }

    /// Rows `ids` (`[ids.len(), hidden]`) on `device`; an id past the vocabulary is an error.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Embedding::Dense(t) => t.index_select(&Tensor::from_slice(ids, ids.len(), device)?, 0),
            Embedding::Quantized(q) => {
                let row = q.raw.len() / q.vocab.max(1);
                let mut out = vec![0f32; ids.len() * q.hidden];
                for (&id, o) in ids.iter().zip(out.chunks_exact_mut(q.hidden)) {
                    let id = id as usize;
                    if id >= q.vocab {
                        candle_core::bail!("token id {id} out of range: {} rows", q.vocab);
                    }
                    dequantize_row(q.kind, &q.raw[id * row..(id + 1) * row], o);
                }
                Tensor::from_vec(out, (ids.len(), q.hidden), device)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn quantized_rows_equal_the_dequantized_table_bit_for_bit() {
        let dev = Device::Cpu;
        let (vocab, hidden) = (9, 96);
        let values: Vec<f32> = (0..vocab * hidden)
            .map(|i| ((i * 2_654_435_761usize) % 10_007) as f32 / 10_007.0 - 0.5)
            .collect();
        let t = Tensor::from_vec(values, (vocab, hidden), &dev).expect("tensor");
        let ids = [3u32, 0, 8, 3, 5];
        let ids_t = Tensor::from_vec(ids.to_vec(), ids.len(), &dev).expect("ids");
        for dt in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&t, dt).expect("quantize");
            let want = q
                .dequantize(&dev)
                .and_then(|d| d.index_select(&ids_t, 0))
                .and_then(|d| d.to_vec2::<f32>())
                .expect("dequantize");
            let table = QuantizedTable::new(&q).expect("read").expect("covered");
            let got = Embedding::Quantized(table)
                .lookup(&ids, &dev)
                .and_then(|r| r.to_vec2::<f32>())
                .expect("lookup");
            assert!(got == want, "{dt:?} rows differ from candle's dequantize");
        }
        // K-quants stay dense.
        let q = QTensor::quantize(
            &Tensor::zeros((2, 256), DType::F32, &dev).expect("zeros"),
            GgmlDType::Q4K,
        )
        .expect("quantize");
        assert!(QuantizedTable::new(&q).expect("read").is_none());
    }
}
