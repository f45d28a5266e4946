//! The pieces every decoder architecture shares, whatever its layers look like: the index
//! tensors of one step (tokens, positions, logit rows, where attention finds each sequence's
//! context), writing the step's keys and values into the paged cache, and causal attention
//! over it (with a sliding window and soft-capping where the architecture asks for them).
//!
//! Runs on the model's thread inside a forward step. Every token row is computed on its own,
//! so the results stay batch-invariant.

use candle_core::{DType, Device, Tensor};

use super::kv_cache::KvCache;
use super::llama::LlamaConfig;
use super::{Batch, LogitsWanted, ModelError};
use crate::kernels::{AttnSeq, Scoring};

/// The index tensors of one step, built once and shared by every layer.
pub(super) struct StepIndex {
    /// The step's token ids, sequence after sequence.
    pub(super) tokens: Vec<u32>,
    /// Position of every token.
    pub(super) positions: Vec<usize>,
    /// Rows (token indices in the step) that want logits.
    pub(super) logit_rows: Tensor,
    pub(super) logit_rows_all: bool,
    pub(super) attn: AttnIndex,
}

/// Where attention finds each sequence's context: what the device's attention path needs.
pub(super) enum AttnIndex {
    /// CPU: our kernel reads the blocks in place. Per sequence, its first token's row in the
    /// step.
    InPlace { rows: Vec<usize> },
    /// Off the CPU: the context is gathered out of the blocks into one varlen batch.
    Gathered {
        /// `[sum of context lengths]` cache slots, sequence after sequence, positions in order.
        slots: Tensor,
        /// `[B]` new tokens per sequence.
        seqlens_q: Tensor,
        /// `[B]` context length (cached + new) per sequence.
        seqlens_k: Tensor,
        max_q: usize,
        max_k: usize,
    },
}

impl StepIndex {
    pub(super) fn new(
        batch: &Batch<'_>,
        cache: &KvCache,
        cfg: &LlamaConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        check_batch(batch, cache, cfg)?;
        let total = batch.num_tokens();
        let mut tokens = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut logit_rows = Vec::new();
        for s in &batch.seqs {
            let row0 = tokens.len();
            match s.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => logit_rows.push((row0 + s.tokens.len() - 1) as u32),
                LogitsWanted::All => {
                    logit_rows.extend((row0..row0 + s.tokens.len()).map(|r| r as u32))
                }
            }
            tokens.extend_from_slice(s.tokens);
            positions.extend(s.start_pos..s.start_pos + s.tokens.len());
        }
        let logit_rows_all = logit_rows.len() == total;
        let n_rows = logit_rows.len();
        Ok(Self {
            tokens,
            positions,
            logit_rows: Tensor::from_vec(logit_rows, n_rows, device)?,
            logit_rows_all,
            attn: AttnIndex::new(batch, cache, device)?,
        })
    }
}

/// Checks every sequence of the batch has tokens, stays inside the model's context and
/// vocabulary, and has the cache blocks its positions need.
fn check_batch(batch: &Batch<'_>, cache: &KvCache, cfg: &LlamaConfig) -> Result<(), ModelError> {
    if batch.seqs.is_empty() {
        return Err(ModelError::InvalidBatch(
            "the batch has no sequences".into(),
        ));
    }
    for (i, s) in batch.seqs.iter().enumerate() {
        if s.tokens.is_empty() {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {i} has no tokens"
            )));
        }
        let end = s.start_pos + s.tokens.len();
        if end > cfg.max_position {
            return Err(ModelError::InvalidBatch(format!(
                "sequence {i} reaches position {end}, past the model's context of {}",
                cfg.max_position
            )));
        }
        if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(ModelError::InvalidBatch(format!(
                "token id {bad} out of range: vocabulary has {} tokens",
                cfg.vocab_size
            )));
        }
        cache.check_blocks(s.blocks, end)?;
    }
    Ok(())
}

impl AttnIndex {
    /// The index for `device`'s attention path; `batch` has passed [`check_batch`].
    fn new(batch: &Batch<'_>, cache: &KvCache, device: &Device) -> Result<Self, ModelError> {
        if device.is_cpu() {
            let rows = batch
                .seqs
                .iter()
                .scan(0, |row, s| {
                    let row0 = *row;
                    *row += s.tokens.len();
                    Some(row0)
                })
                .collect();
            return Ok(Self::InPlace { rows });
        }
        let mut slots = Vec::new();
        let (mut seqlens_q, mut seqlens_k) = (Vec::new(), Vec::new());
        for s in &batch.seqs {
            let end = s.start_pos + s.tokens.len();
            slots.extend((0..end).map(|p| cache.slot(s.blocks, p) as u32));
            seqlens_q.push(s.tokens.len() as u32);
            seqlens_k.push(end as u32);
        }
        let max_q = seqlens_q.iter().copied().max().unwrap_or(0) as usize;
        let max_k = seqlens_k.iter().copied().max().unwrap_or(0) as usize;
        let (nq, nk, ns) = (seqlens_q.len(), seqlens_k.len(), slots.len());
        Ok(Self::Gathered {
            slots: Tensor::from_vec(slots, ns, device)?,
            seqlens_q: Tensor::from_vec(seqlens_q, nq, device)?,
            seqlens_k: Tensor::from_vec(seqlens_k, nk, device)?,
            max_q,
            max_k,
        })
    }
}

/// The step's sequences as the CPU attention kernel takes them; `rows[i]` is sequence i's
/// first row.
fn attn_seqs<'a>(rows: &[usize], batch: &Batch<'a>) -> Vec<AttnSeq<'a>> {
    batch
        .seqs
        .iter()
        .zip(rows)
        .map(|(s, &row)| AttnSeq {
            row,
            len: s.tokens.len(),
            start_pos: s.start_pos,
            blocks: s.blocks,
        })
        .collect()
}

/// Stores the step's keys and values, `[tokens, kv_heads, head_dim]`, in each sequence's
/// blocks of layer `idx`.
pub(super) fn write_kv(
    idx: usize,
    k: &Tensor,
    v: &Tensor,
    batch: &Batch<'_>,
    cache: &mut KvCache,
) -> Result<(), ModelError> {
    let mut offset = 0;
    for s in &batch.seqs {
        let n = s.tokens.len();
        cache.write(
            idx,
            s.blocks,
            s.start_pos,
            &k.narrow(0, offset, n)?,
            &v.narrow(0, offset, n)?,
        )?;
        offset += n;
    }
    Ok(())
}

/// Causal attention of `q` (`[tokens, heads, head_dim]`) over each sequence's cached context
/// in layer `idx`: `[tokens, heads * head_dim]` in `q`'s dtype.
pub(super) fn attend(
    idx: usize,
    q: &Tensor,
    scoring: Scoring,
    step: &StepIndex,
    batch: &Batch<'_>,
    cache: &KvCache,
) -> Result<Tensor, ModelError> {
    let (t, nh, hd) = q.dims3()?;
    match &step.attn {
        // CPU: our kernel reads the blocks in place.
        AttnIndex::InPlace { rows } => {
            let seqs = attn_seqs(rows, batch);
            let qv = q.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let out = cache.attend_cpu(idx, &qv, &seqs, nh, scoring)?;
            Ok(Tensor::from_vec(out, (t, nh * hd), q.device())?.to_dtype(q.dtype())?)
        }
        AttnIndex::Gathered {
            slots,
            seqlens_q,
            seqlens_k,
            max_q,
            max_k,
        } => {
            if scoring.softcap.is_some() {
                // `Llama::new` refuses such a model off the CPU; this is the backstop.
                return Err(ModelError::InvalidBatch(
                    "attention soft-capping runs on the CPU only".into(),
                ));
            }
            let (kc, vc) = cache.gather(idx, slots)?;
            let (kc, vc) = (kc.to_dtype(q.dtype())?, vc.to_dtype(q.dtype())?);
            // candle's window counts the keys left of the query, ours counts the query too.
            let left = scoring.window.map(|w| w.saturating_sub(1));
            Ok(candle_nn::attention::flash_attn_varlen_unfused(
                q,
                &kc,
                &vc,
                None,
                seqlens_q,
                seqlens_k,
                *max_q,
                *max_k,
                scoring.scale,
                true,
                left,
                left.map(|_| 0),
            )?
            .reshape((t, nh * hd))?)
        }
    }
}
