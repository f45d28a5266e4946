//! Embedding jobs, the engine's second kind of work beside generation.
//!
//! A job is one `/v1/embeddings` request: a few token sequences, each run through the model once
//! for its final hidden states (after the output norm), mean-pooled over its tokens and
//! L2-normalised. The worker thread owns the jobs; it runs the head job's inputs one after the
//! other in fixed chunks of `max_batch_tokens`, one chunk per step in a forward call of its own
//! after the generation batch, so a long input never holds generation for more than one chunk,
//! and the same input always gives the same bits, whatever the load. The
//! K/V of an input live in blocks of the shared paged cache (no prefix reuse: every position's
//! hidden state is needed) and are released when the input is done. A dropped reply receiver
//! cancels the job at the next step. Nothing here waits on a caller.

use std::collections::VecDeque;

use tokio::sync::oneshot;

use super::blocks::{BlockId, BlockManager};
use super::queue::Ticket;
use crate::model::{Batch, CausalLm, KvCache, LogitsWanted, SeqChunk};

/// The vectors of a job's inputs, in order, or why the job failed.
pub type EmbedResult = Result<Vec<Vec<f32>>, String>;

/// An embedding request on its way to the worker.
pub(crate) struct EmbedSubmission {
    /// Token ids of each input; none is empty (checked at submit).
    pub inputs: Vec<Vec<u32>>,
    /// Where the vectors go; a closed receiver cancels the job.
    pub reply: oneshot::Sender<EmbedResult>,
    /// The job's place in the admission queue, given back when its first input gets blocks
    /// (or the job goes).
    pub ticket: Ticket,
}

/// The input being computed: its blocks, progress and running sum.
struct Current {
    blocks: Vec<BlockId>,
    computed: usize,
    /// Sum of the rows seen so far, f64 so the mean does not depend on chunking.
    sum: Vec<f64>,
}

struct Job {
    inputs: Vec<Vec<u32>>,
    reply: oneshot::Sender<EmbedResult>,
    /// `Some` until the job is admitted.
    ticket: Option<Ticket>,
    done: Vec<Vec<f32>>,
    current: Option<Current>,
}

/// The worker's embedding jobs, first come first served.
#[derive(Default)]
pub(crate) struct EmbedQueue {
    jobs: VecDeque<Job>,
}

impl EmbedQueue {
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Queues a job. One whose inputs can never run (an empty input, an id outside the
    /// `vocab`, an input larger than the whole cache: validation refuses these first) fails at
    /// once instead of reaching the model or waiting for blocks forever.
    pub fn push(&mut self, sub: EmbedSubmission, vocab: usize, capacity_tokens: usize) {
        let bad = sub.inputs.is_empty()
            || sub.inputs.iter().any(|i| {
                i.is_empty() || i.len() > capacity_tokens || i.iter().any(|&t| t as usize >= vocab)
            });
        if bad {
            let error = "invalid embedding input (empty, too long or a token id out of range)";
            let _ = sub.reply.send(Err(error.into()));
            return;
        }
        self.jobs.push_back(Job {
            inputs: sub.inputs,
            reply: sub.reply,
            ticket: Some(sub.ticket),
            done: Vec::new(),
            current: None,
        });
    }

    /// Drops jobs whose caller went away (their queue places and blocks go with them);
    /// returns how many.
    pub fn reap_cancelled(&mut self, blocks: &mut BlockManager) -> usize {
        let before = self.jobs.len();
        self.jobs.retain_mut(|j| {
            if !j.reply.is_closed() {
                return true;
            }
            release(j, blocks);
            false
        });
        before - self.jobs.len()
    }

    /// Fails every job (shutdown).
    pub fn fail_all(&mut self, blocks: &mut BlockManager, error: &str) {
        for mut j in self.jobs.drain(..) {
            release(&mut j, blocks);
            let _ = j.reply.send(Err(error.to_string()));
        }
    }

    /// Gets blocks for the head job's next input, before generation takes its share of the
    /// step; the job leaves the admission queue when its first input gets them.
    pub fn reserve(&mut self, blocks: &mut BlockManager) {
        let Some(job) = self.jobs.front_mut() else {
            return;
        };
        if job.current.is_some() {
            return;
        }
        let Some(input) = job.inputs.get(job.done.len()) else {
            return;
        };
        if let Some(got) = blocks.allocate_n(blocks.blocks_for(input.len())) {
            job.current = Some(Current {
                blocks: got,
                computed: 0,
                sum: Vec::new(),
            });
            job.ticket = None;
        }
    }

    /// Runs up to `chunk` tokens of the head job's current input and returns how many ran;
    /// finishes the input (and the job) when it is complete. A failed forward fails the job;
    /// `Err` carries its message.
    pub fn step<M: CausalLm>(
        &mut self,
        model: &M,
        cache: &mut KvCache,
        blocks: &mut BlockManager,
        chunk: usize,
    ) -> Result<usize, String> {
        let Some(job) = self.jobs.front_mut() else {
            return Ok(0);
        };
        let Some(cur) = job.current.as_mut() else {
            return Ok(0);
        };
        let input = &job.inputs[job.done.len()];
        let n = chunk.max(1).min(input.len() - cur.computed);
        if let Err(error) = run_chunk(model, cache, input, cur, n) {
            if let Some(mut j) = self.jobs.pop_front() {
                release(&mut j, blocks);
                let _ = j.reply.send(Err(error.clone()));
            }
            return Err(error);
        }
        cur.computed += n;
        if cur.computed == input.len() {
            let cur = job.current.take().expect("invariant: checked above");
            blocks.release(&cur.blocks);
            job.done.push(mean_normalised(&cur.sum, input.len()));
            if job.done.len() == job.inputs.len() {
                let j = self.jobs.pop_front().expect("invariant: the head job");
                let _ = j.reply.send(Ok(j.done));
            }
        }
        Ok(n)
    }
}

/// Runs `input[cur.computed..][..n]` and adds its hidden-state rows to `cur.sum`.
fn run_chunk<M: CausalLm>(
    model: &M,
    cache: &mut KvCache,
    input: &[u32],
    cur: &mut Current,
    n: usize,
) -> Result<(), String> {
    let chunk = SeqChunk {
        tokens: &input[cur.computed..cur.computed + n],
        start_pos: cur.computed,
        blocks: &cur.blocks,
        logits: LogitsWanted::All,
    };
    let rows = model
        .forward_hidden(&Batch::new(vec![chunk]), cache)
        .and_then(|h| Ok(h.to_vec2::<f32>()?))
        .map_err(|e| format!("embedding forward failed: {e}"))?;
    if rows.len() != n {
        return Err(format!(
            "the model returned {} rows for {n} tokens",
            rows.len()
        ));
    }
    for row in rows {
        if cur.sum.is_empty() {
            cur.sum = vec![0.0; row.len()];
        }
        for (s, x) in cur.sum.iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    Ok(())
}

/// Frees a job's blocks (its queue place, if it still holds one, goes with its ticket).
fn release(job: &mut Job, blocks: &mut BlockManager) {
    if let Some(cur) = job.current.take() {
        blocks.release(&cur.blocks);
    }
    job.ticket = None;
}

/// The result of an embedding job to come. Dropping it cancels the job.
pub struct PendingEmbedding {
    pub(crate) rx: oneshot::Receiver<EmbedResult>,
    pub(crate) tokens: usize,
}

impl PendingEmbedding {
    /// Tokens of all inputs together.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The vectors, one per input in order; `Err` when the job failed or the engine stopped.
    pub async fn wait(self) -> EmbedResult {
        self.rx
            .await
            .unwrap_or_else(|_| Err("the engine stopped".into()))
    }

    /// [`PendingEmbedding::wait`] for plain threads (not inside an async runtime).
    pub fn blocking_wait(self) -> EmbedResult {
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err("the engine stopped".into()))
    }
}

/// `sum / n`, scaled to unit L2 norm (left as is when it is all zeros).
pub fn mean_normalised(sum: &[f64], n: usize) -> Vec<f32> {
    let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 1.0 };
    mean.iter().map(|x| (x * scale) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_is_normalised() {
        let v = mean_normalised(&[3.0, 4.0], 2);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
        assert_eq!(mean_normalised(&[0.0, 0.0], 3), vec![0.0, 0.0]);
    }
}
