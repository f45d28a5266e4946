//! The paged KV cache: per layer, one K and one V pool of fixed-size blocks.
//!
//! It owns tensors only. Which sequence holds which blocks is the caller's bookkeeping (the
//! engine's block allocator; a plain range for the CLI): a forward step names the blocks of each
//! sequence in its `SeqChunk::blocks`. Owned by the thread that runs the model.
//!
//! Layout: each pool is `[num_blocks * block_size, kv_heads, head_dim]`, token-major, so a slot
//! (`block * block_size + offset`) is one contiguous row and a run of positions inside one block
//! is one contiguous write.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::kernels::{paged_attention, AttnSeq, KvElem, PagedKv, Scoring, ThreadPool};

use super::ModelError;

mod pages;

/// What the model needs of a KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// Bytes one token takes across all layers, K and V, at `dtype`.
    pub fn bytes_per_token(&self, dtype: DType) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype.size_in_bytes()
    }
}

/// How big a cache to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheConfig {
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    pub dtype: DType,
}

impl KvCacheConfig {
    /// A cache with room for `tokens` positions (rounded up to whole blocks).
    pub fn for_tokens(tokens: usize, block_size: usize, dtype: DType) -> Self {
        Self {
            num_blocks: tokens.div_ceil(block_size).max(1),
            block_size,
            dtype,
        }
    }
}

/// A zeroed pool. On the CPU its memory comes from the allocator's zeroed pages (a zero bit
/// pattern of a primitive type), so pages stay unmapped until a block is first written: the
/// process's resident memory grows with the blocks in use, not with the pool's size.
/// (`Tensor::zeros` writes every f16 / bf16 element, making the whole pool resident at start.)
fn zeros(
    dims: (usize, usize, usize),
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    use half::vec::HalfBitsVecExt;
    if !device.is_cpu() {
        return Tensor::zeros(dims, dtype, device);
    }
    let n = dims.0 * dims.1 * dims.2;
    match dtype {
        DType::F16 => Tensor::from_vec(vec![0u16; n].reinterpret_into::<half::f16>(), dims, device),
        DType::BF16 => {
            Tensor::from_vec(vec![0u16; n].reinterpret_into::<half::bf16>(), dims, device)
        }
        DType::F32 => Tensor::from_vec(vec![0f32; n], dims, device),
        _ => Tensor::zeros(dims, dtype, device),
    }
}

/// The K and V block pools of every layer.
pub struct KvCache {
    shape: KvShape,
    config: KvCacheConfig,
    /// Per layer: (K, V), each `[num_blocks * block_size, kv_heads, head_dim]`.
    layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(shape: KvShape, config: KvCacheConfig, device: &Device) -> Result<Self, ModelError> {
        if config.block_size == 0 || config.num_blocks == 0 {
            return Err(ModelError::InvalidBatch(format!(
                "KV cache needs at least one block of at least one token, got {} blocks of {}",
                config.num_blocks, config.block_size
            )));
        }
        let slots = config.num_blocks * config.block_size;
        let dims = (slots, shape.num_kv_heads, shape.head_dim);
        let layers = (0..shape.num_layers)
            .map(|_| {
                Ok((
                    zeros(dims, config.dtype, device)?,
                    zeros(dims, config.dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>, candle_core::Error>>()?;
        Ok(Self {
            shape,
            config,
            layers,
        })
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    pub fn config(&self) -> KvCacheConfig {
        self.config
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.config.num_blocks
    }

    /// Bytes held by the pools.
    pub fn bytes(&self) -> usize {
        self.config.num_blocks
            * self.config.block_size
            * self.shape.bytes_per_token(self.config.dtype)
    }

    /// Bytes one block takes in one pool (one layer's K or V).
    fn pool_block_bytes(&self) -> usize {
        self.config.block_size
            * self.shape.num_kv_heads
            * self.shape.head_dim
            * self.config.dtype.size_in_bytes()
    }

    /// Gives the pages of `blocks` back to the system where `is_cold` still says so: every
    /// page lying wholly in cold blocks, in each layer's K and V pool. CPU pools on Linux only
    /// (elsewhere it does nothing). A page given back reads as zeros and becomes resident again
    /// when its block is next written; see `pages` for why no read can see the difference.
    pub fn give_back(
        &self,
        blocks: &[u32],
        is_cold: &dyn Fn(u32) -> bool,
    ) -> Result<(), ModelError> {
        let on_cpu = self
            .layers
            .first()
            .is_some_and(|(k, _)| k.device().is_cpu());
        if blocks.is_empty() || !on_cpu {
            return Ok(());
        }
        let op = pages::GiveBack {
            block_bytes: self.pool_block_bytes(),
            blocks,
            is_cold,
        };
        for (k, v) in &self.layers {
            k.inplace_op1(&op)?;
            v.inplace_op1(&op)?;
        }
        Ok(())
    }

    /// Bytes of every pool together resident in memory now (whole pages).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn resident_bytes(&self) -> usize {
        fn bytes<T>(v: &[T], layout: &candle_core::Layout) -> usize {
            let v = &v[layout.start_offset()..];
            pages::resident_bytes(v.as_ptr() as usize, std::mem::size_of_val(v))
        }
        let pool = |t: &Tensor| {
            let (store, layout) = t.storage_and_layout();
            match &*store {
                Storage::Cpu(CpuStorage::F16(v)) => bytes(v, layout),
                Storage::Cpu(CpuStorage::BF16(v)) => bytes(v, layout),
                Storage::Cpu(CpuStorage::F32(v)) => bytes(v, layout),
                _ => 0,
            }
        };
        self.layers.iter().map(|(k, v)| pool(k) + pool(v)).sum()
    }

    /// Slot index of position `pos` for a sequence with block table `blocks`.
    pub(crate) fn slot(&self, blocks: &[u32], pos: usize) -> usize {
        let bs = self.config.block_size;
        blocks[pos / bs] as usize * bs + pos % bs
    }

    /// Checks that `blocks` covers positions `0..len` with valid block ids.
    pub(crate) fn check_blocks(&self, blocks: &[u32], len: usize) -> Result<(), ModelError> {
        let needed = len.div_ceil(self.config.block_size);
        if blocks.len() < needed {
            return Err(ModelError::InvalidBatch(format!(
                "block table has {} blocks, {len} positions need {needed}",
                blocks.len()
            )));
        }
        if let Some(&bad) = blocks[..needed]
            .iter()
            .find(|&&b| b as usize >= self.config.num_blocks)
        {
            return Err(ModelError::InvalidBatch(format!(
                "block id {bad} out of range: the cache has {} blocks",
                self.config.num_blocks
            )));
        }
        Ok(())
    }

    /// Writes `k` and `v` (`[n, kv_heads, head_dim]`) of `layer` at positions
    /// `start_pos..start_pos + n` of a sequence with block table `blocks`.
    pub(crate) fn write(
        &self,
        layer: usize,
        blocks: &[u32],
        start_pos: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(), ModelError> {
        let (k_pool, v_pool) = &self.layers[layer];
        let n = k.dim(0)?;
        let k = k.to_dtype(self.config.dtype)?;
        let v = v.to_dtype(self.config.dtype)?;
        let bs = self.config.block_size;
        let mut done = 0;
        // One contiguous write per block the chunk touches.
        while done < n {
            let pos = start_pos + done;
            let run = (bs - pos % bs).min(n - done);
            let slot = self.slot(blocks, pos);
            k_pool.slice_set(&k.narrow(0, done, run)?.contiguous()?, 0, slot)?;
            v_pool.slice_set(&v.narrow(0, done, run)?.contiguous()?, 0, slot)?;
            done += run;
        }
        Ok(())
    }

    /// Gathers K and V of `layer` at `slots` (one slot per position, sequences back to back):
    /// `[slots.len(), kv_heads, head_dim]` each, in the cache dtype.
    pub(crate) fn gather(
        &self,
        layer: usize,
        slots: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (k_pool, v_pool) = &self.layers[layer];
        Ok((
            k_pool.index_select(slots, 0)?,
            v_pool.index_select(slots, 0)?,
        ))
    }

    /// Causal attention of `q` (`[tokens, heads, head_dim]` f32, row-major) over `layer`'s
    /// pools on the CPU, reading every sequence's blocks in place (see
    /// [`crate::kernels::paged_attention`]): `[tokens, heads, head_dim]` f32. The new tokens'
    /// K and V must already be written.
    pub(crate) fn attend_cpu(
        &self,
        layer: usize,
        q: &[f32],
        seqs: &[AttnSeq<'_>],
        heads: usize,
        scale: Scoring,
    ) -> Result<Vec<f32>, ModelError> {
        let (k_pool, v_pool) = &self.layers[layer];
        let (k_store, k_layout) = k_pool.storage_and_layout();
        let (v_store, v_layout) = v_pool.storage_and_layout();
        let (k0, v0) = (k_layout.start_offset(), v_layout.start_offset());
        let args = (q, seqs, heads, scale);
        match (&*k_store, &*v_store) {
            (Storage::Cpu(CpuStorage::F32(k)), Storage::Cpu(CpuStorage::F32(v))) => {
                self.attend_in(&k[k0..], &v[v0..], args)
            }
            (Storage::Cpu(CpuStorage::F16(k)), Storage::Cpu(CpuStorage::F16(v))) => {
                self.attend_in(&k[k0..], &v[v0..], args)
            }
            (Storage::Cpu(CpuStorage::BF16(k)), Storage::Cpu(CpuStorage::BF16(v))) => {
                self.attend_in(&k[k0..], &v[v0..], args)
            }
            _ => Err(ModelError::InvalidBatch(format!(
                "CPU attention needs f32, f16 or bf16 pools in CPU memory, found {:?} on {:?}",
                self.config.dtype,
                k_pool.device()
            ))),
        }
    }

    fn attend_in<T: KvElem>(
        &self,
        k: &[T],
        v: &[T],
        (q, seqs, heads, scale): (&[f32], &[AttnSeq<'_>], usize, Scoring),
    ) -> Result<Vec<f32>, ModelError> {
        let len = self.config.num_blocks
            * self.config.block_size
            * self.shape.num_kv_heads
            * self.shape.head_dim;
        let (Some(k), Some(v)) = (k.get(..len), v.get(..len)) else {
            return Err(ModelError::InvalidBatch(format!(
                "KV pools hold {} and {} values, the cache needs {len}",
                k.len(),
                v.len()
            )));
        };
        let kv = PagedKv {
            k,
            v,
            block_size: self.config.block_size,
            kv_heads: self.shape.num_kv_heads,
            head_dim: self.shape.head_dim,
        };
        paged_attention(&ThreadPool::global(), q, seqs, kv, heads, scale)
            .map_err(|e| ModelError::InvalidBatch(e.to_string()))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Pools over 32 MiB, glibc's largest mmap threshold, so they come from fresh zero pages
    /// (a smaller calloc may reuse dirty heap memory and zero it, making it resident).
    #[test]
    fn given_back_blocks_leave_memory_and_read_as_written_once_rewritten() {
        let shape = KvShape {
            num_layers: 2,
            num_kv_heads: 4,
            head_dim: 64,
        };
        // 512 bytes per token and pool: 80Ki tokens, 40 MiB per pool, 5,120 blocks of 8 KiB.
        let config = KvCacheConfig::for_tokens(80 * 1024, 16, DType::F16);
        let cache = KvCache::new(shape, config, &Device::Cpu).unwrap();
        let page = pages::page_size();
        let slack = 4 * 2 * page;
        assert!(
            cache.resident_bytes() <= slack,
            "a new pool is not resident"
        );
        // Write the first 256 blocks of every pool: 8 MiB in all.
        let blocks: Vec<u32> = (0..256).collect();
        let written = 256 * 16 * shape.bytes_per_token(DType::F16);
        let kv = Tensor::ones((256 * 16, 4, 64), DType::F32, &Device::Cpu).unwrap();
        for layer in 0..2 {
            cache.write(layer, &blocks, 0, &kv, &kv).unwrap();
        }
        let before = cache.resident_bytes();
        assert!(
            before >= written && before <= written + slack,
            "{before} resident"
        );
        // The first half goes cold; a block reported but taken again since stays.
        let cold = |b: u32| b < 128 && b != 3;
        cache.give_back(&blocks[..129], &cold).unwrap();
        let after = cache.resident_bytes();
        let block = written / 256;
        let want = written / 2 + block;
        assert!(
            after >= want && after <= want + 2 * slack,
            "{after} resident, want {want}"
        );
        // A given-back block reads as zeros (block 10: its pages lie wholly in cold blocks);
        // block 3 kept its values.
        let slot = |b: usize| Tensor::new(&[(b * 16) as u32], &Device::Cpu).unwrap();
        let sum = |b: usize| {
            let (k, _) = cache.gather(0, &slot(b)).unwrap();
            k.to_dtype(DType::F32)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert_eq!(sum(10), 0.0);
        assert_eq!(sum(3), 256.0);
        // Written again, it holds the new values.
        let one = Tensor::ones((16, 4, 64), DType::F32, &Device::Cpu).unwrap();
        cache.write(0, &[10], 0, &one, &one).unwrap();
        assert_eq!(sum(10), 256.0);
    }
}
