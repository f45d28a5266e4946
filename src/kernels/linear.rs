//! [`Linear`]: the model's matmul. Quantized GGUF weights on the CPU, of a type with a kernel
//! here, run on [`QuantMatmul`] (as a candle custom op, reading the input tensor in place);
//! everything else (dense weights, other types, CUDA / Metal) stays on candle's `QMatMul`, so
//! the model code is the same on every device.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, DType, Layout, Module, Shape, Tensor};

use super::{Isa, QuantMatmul, ThreadPool};

/// A weight matrix `[out, in]` and the matmul `y = x · Wᵀ` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// Packed quantized weights run by our CPU kernels.
    Cpu(Arc<QuantMatmul>),
    /// candle's matmul: dense weights, types without a kernel here, non-CPU devices.
    Candle(QMatMul),
}

impl Linear {
    /// From a GGUF tensor: our kernels when the tensor is in CPU memory and of a type they
    /// take (packed for [`Isa::detect`], run on [`ThreadPool::global`]), else candle's.
    pub fn from_qtensor(q: QTensor) -> candle_core::Result<Self> {
        Self::from_qtensor_with(q, Isa::detect(), ThreadPool::global())
    }

    /// As [`Linear::from_qtensor`], with the kernel family and pool given.
    pub fn from_qtensor_with(
        q: QTensor,
        isa: Isa,
        pool: Arc<ThreadPool>,
    ) -> candle_core::Result<Self> {
        if q.device().is_cpu() && q.rank() == 2 && QuantMatmul::supports(q.dtype()) {
            let mm = QuantMatmul::new(&q, isa, pool).map_err(candle_core::Error::wrap)?;
            return Ok(Self::Cpu(Arc::new(mm)));
        }
        Ok(Self::Candle(QMatMul::from_qtensor(q)?))
    }

    /// `[out, in]`.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Self::Cpu(m) => {
                let (n, k) = m.shape();
                vec![n, k]
            }
            Self::Candle(QMatMul::QTensor(q)) => q.shape().dims().to_vec(),
            Self::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.dims().to_vec(),
        }
    }

    /// `x: [.., in]` -> `[.., out]`, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Cpu(m) => {
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                x.apply_op1_no_bwd(m.as_ref())?.to_dtype(dtype)
            }
            Self::Candle(m) => m.forward(x),
        }
    }
}

impl From<QMatMul> for Linear {
    fn from(m: QMatMul) -> Self {
        Self::Candle(m)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        Linear::forward(self, x)
    }
}

impl candle_core::CustomOp1 for QuantMatmul {
    fn name(&self) -> &'static str {
        "wick-quant-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.shape();
        let dims = layout.shape().dims();
        if dims.last() != Some(&k) {
            candle_core::bail!("matmul input {dims:?}: last dimension must be k = {k}");
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("matmul input {dims:?} must be contiguous");
        };
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!(
                "matmul input must be f32, got {:?}",
                candle_core::backend::BackendStorage::dtype(storage)
            );
        };
        let x = &data[start..end];
        let m = dims[..dims.len() - 1].iter().product();
        let mut y = vec![0f32; m * n];
        self.forward(x, m, &mut y)
            .map_err(candle_core::Error::wrap)?;
        let mut out = dims.to_vec();
        if let Some(last) = out.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(y), Shape::from(out)))
    }
}
