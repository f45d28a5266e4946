//! The GGUF block types our kernels take, and how to read one block's fields from its bytes
//! (ggml's layouts, little-endian). Load-time packing and the scalar kernels share these.

use candle_core::quantized::GgmlDType;
use half::f16;

/// A GGUF weight type with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightType {
    Q4_0,
    Q4_1,
    Q8_0,
    Q4K,
    Q6K,
}

impl WeightType {
    pub const ALL: [WeightType; 5] = [
        WeightType::Q4_0,
        WeightType::Q4_1,
        WeightType::Q8_0,
        WeightType::Q4K,
        WeightType::Q6K,
    ];

    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4K => Some(Self::Q4K),
            GgmlDType::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    pub fn ggml(self) -> GgmlDType {
        match self {
            Self::Q4_0 => GgmlDType::Q4_0,
            Self::Q4_1 => GgmlDType::Q4_1,
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q4K => GgmlDType::Q4K,
            Self::Q6K => GgmlDType::Q6K,
        }
    }

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    /// Bytes per block in the GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Whether [`dequantize_row`] reads this type (the 32-value block types).
    pub fn row_dequantizable(self) -> bool {
        matches!(self, Self::Q4_0 | Self::Q4_1 | Self::Q8_0)
    }

    /// Whether activations go as [`super::quantize::Q8KBlock`]s (else `Q8Block`s).
    pub fn k_quant(self) -> bool {
        matches!(self, Self::Q4K | Self::Q6K)
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q4_0 (18 bytes): `d: f16, qs: [u8; 16]`; value `j` is `d · (q_j - 8)` with `q_j` the low
/// nibble of `qs[j]` for `j < 16` and the high nibble of `qs[j - 16]` after.
/// Q4_1 (20 bytes): `d: f16, m: f16, qs: [u8; 16]`; value `d · q_j + m`, same nibbles.
#[inline(always)]
pub fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = qs[j] & 0x0F;
        q[j + 16] = qs[j] >> 4;
    }
    q
}

/// Dequantizes one row of Q4_0 / Q4_1 / Q8_0 blocks (`raw`, whole blocks) into `out`, with
/// the arithmetic of ggml's reference dequantization (which candle's `dequantize` repeats), so
/// the values are bit-identical to a dequantized table. `false` for the other types.
pub fn dequantize_row(kind: WeightType, raw: &[u8], out: &mut [f32]) -> bool {
    let blocks = raw.chunks_exact(kind.block_bytes());
    let outs = out.chunks_exact_mut(kind.block_len());
    match kind {
        WeightType::Q8_0 => {
            for (b, o) in blocks.zip(outs) {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = (q as i8) as f32 * d;
                }
            }
        }
        WeightType::Q4_0 => {
            for (b, o) in blocks.zip(outs) {
                let d = f16_at(b, 0);
                for (x, q) in o.iter_mut().zip(nibbles(&b[2..18])) {
                    *x = (q as i16 - 8) as f32 * d;
                }
            }
        }
        WeightType::Q4_1 => {
            for (b, o) in blocks.zip(outs) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                for (x, q) in o.iter_mut().zip(nibbles(&b[4..20])) {
                    *x = q as f32 * d + m;
                }
            }
        }
        WeightType::Q4K | WeightType::Q6K => return false,
    }
    true
}

/// One Q4_K superblock (144 bytes): `d, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Sub-block
/// `i` (32 values) is `d · sc_i · q - dmin · m_i`.
pub struct Q4KBlock {
    pub d: f32,
    pub dmin: f32,
    /// 6-bit scale and minimum of each 32-value sub-block.
    pub sc: [u8; 8],
    pub m: [u8; 8],
    /// The 256 4-bit quants in value order.
    pub q: [u8; 256],
}

impl Q4KBlock {
    pub fn parse(b: &[u8]) -> Self {
        let scales = &b[4..16];
        let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
        // ggml's get_scale_min_k4.
        for j in 0..8 {
            if j < 4 {
                sc[j] = scales[j] & 63;
                m[j] = scales[j + 4] & 63;
            } else {
                sc[j] = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
                m[j] = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
            }
        }
        let qs = &b[16..144];
        let mut q = [0u8; 256];
        for j in 0..4 {
            for l in 0..32 {
                q[64 * j + l] = qs[32 * j + l] & 0x0F;
                q[64 * j + 32 + l] = qs[32 * j + l] >> 4;
            }
        }
        Self {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            sc,
            m,
            q,
        }
    }
}

/// One Q6_K superblock (210 bytes): `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
/// Sub-block `i` (16 values) is `d · sc_i · (q - 32)`, `q` 6 bits.
pub struct Q6KBlock {
    pub d: f32,
    pub sc: [i8; 16],
    /// The 256 6-bit quants (0..=63, before the -32) in value order.
    pub q: [u8; 256],
}

impl Q6KBlock {
    pub fn parse(b: &[u8]) -> Self {
        let (ql, qh) = (&b[0..128], &b[128..192]);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        let mut q = [0u8; 256];
        // ggml's dequantize_row_q6_K, without the -32.
        for h in 0..2 {
            let (ql, qh, y) = (&ql[64 * h..], &qh[32 * h..], 128 * h);
            for l in 0..32 {
                q[y + l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                q[y + l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                q[y + l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                q[y + l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        Self {
            d: f16_at(b, 208),
            sc,
            q,
        }
    }
}
