//! The model worker: one OS thread owns the model, the KV cache and every sequence, and loops
//! admit → plan → forward → sample → emit → retire.
//!
//! It never waits on a client: events go out on unbounded channels (bounded in practice by each
//! request's `max_tokens`), and a closed channel is how it learns a client went away. It blocks
//! only on its command channel, and only when it has nothing to do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::blocks::{chain_hash, BlockId, BlockManager};
use super::embed::{EmbedQueue, EmbedSubmission};
use super::events::{Event, EventSender, Finish, FinishReason, Timings, Usage};
use super::queue::Ticket;
use super::scheduler::{self, Budget, Plan, RunningView, SeqId, WaitingView};
use super::stats::Counters;
use super::{Command, Shared, ValidRequest};
use crate::constraint::Constraint;
use crate::model::{Batch, CausalLm, KvCache, LogitsWanted, SeqChunk};
use crate::sampling::{self, Sampler, Token};

/// A request on its way to the worker.
pub(crate) struct Submission {
    pub id: u64,
    pub req: ValidRequest,
    pub events: EventSender,
    /// The request's place in the admission queue.
    pub ticket: Ticket,
    pub arrived: Instant,
}

/// What the `n` choices of one request share.
struct Group {
    events: EventSender,
    /// The place in the admission queue, until the first choice is admitted (dropping it gives
    /// the place back, once, whichever way the request leaves).
    ticket: Option<Ticket>,
    prompt_len: usize,
    max_tokens: usize,
    stop_ids: Vec<u32>,
    /// `Some(k)`: choice 0 scores the prompt, with `k` alternatives per token.
    prompt_logprobs: Option<usize>,
    arrived: Instant,
    /// Set once choice 0 has its prompt in the cache (or is gone): the other choices may start
    /// and find the prompt's blocks in the prefix index.
    leader_prefilled: bool,
    /// Choices not yet finished.
    open: usize,
}

/// One choice of one request.
struct Sequence {
    id: SeqId,
    group: u64,
    index: usize,
    priority: i32,
    /// Prompt, then generated tokens. The last one is fed at the next step.
    tokens: Vec<u32>,
    /// Tokens whose K/V are in the cache.
    computed: usize,
    blocks: Vec<BlockId>,
    /// Chain hashes of the full blocks registered so far.
    hashes: Vec<u64>,
    sampler: Sampler,
    /// The grammar state, advanced past every generated token. Preemption keeps it with the
    /// tokens: recomputing K/V never re-feeds it.
    constraint: Option<Constraint>,
    generated: usize,
    /// Prefix-cache hit of the first admission (what usage reports).
    cached_tokens: Option<usize>,
    admitted_at: Option<Instant>,
    first_token_at: Option<Instant>,
    /// Prompt scoring (choice 0 of a request with `prompt_logprobs`): the tokens scored so
    /// far, the first one included. Kept across preemption, so a recompute scores only the
    /// rest; sent as one event when the whole prompt is scored.
    prompt_scored: Vec<Token>,
}

impl Sequence {
    /// Samples the next token from `row` (`[vocab]` logits), masked by the constraint first.
    fn next_token(&mut self, row: &mut [f32]) -> Result<Token, String> {
        if let Some(c) = self.constraint.as_mut() {
            c.apply(row).map_err(|e| e.to_string())?;
        }
        self.sampler
            .sample(row)
            .map_err(|e| format!("sampling failed: {e}"))
    }
}

pub(crate) struct Worker<M> {
    shared: Arc<Shared>,
    model: M,
    cache: KvCache,
    blocks: BlockManager,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    groups: HashMap<u64, Group>,
    embeds: EmbedQueue,
    next_seq: SeqId,
    max_batch_tokens: usize,
    max_running: usize,
    watermark_blocks: usize,
}

/// What one step did, for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StepReport {
    pub tokens: usize,
    pub preempted: Vec<SeqId>,
    pub admitted: Vec<SeqId>,
}

impl<M: CausalLm> Worker<M> {
    pub fn new(model: M, cache: KvCache, shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let budget = config
            .prefix_cache_bytes
            .unwrap_or_else(|| super::default_prefix_cache_bytes(cache.bytes() as u64));
        let block_bytes = (cache.bytes() / cache.num_blocks()).max(1) as u64;
        let blocks = BlockManager::new(
            cache.num_blocks(),
            cache.block_size(),
            config.prefix_caching,
        )
        .with_cache_budget((budget / block_bytes) as usize);
        Self {
            max_batch_tokens: config.max_batch_tokens,
            max_running: config.max_running,
            shared,
            model,
            blocks,
            watermark_blocks: cache.num_blocks() / 100,
            cache,
            waiting: VecDeque::new(),
            running: Vec::new(),
            groups: HashMap::new(),
            embeds: EmbedQueue::default(),
            next_seq: 0,
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    #[cfg(test)]
    pub(crate) fn queue(&self) -> &Arc<super::Admission> {
        &self.shared.queue
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.embeds.is_empty()
    }

    /// Queues an embedding job.
    pub fn add_embed(&mut self, sub: EmbedSubmission) {
        let limits = &self.shared.limits;
        self.embeds
            .push(sub, limits.vocab, limits.kv_capacity_tokens);
    }

    /// `Some(k)` while `seq` still has prompt tokens to score.
    fn scores_prompt(&self, seq: &Sequence) -> Option<usize> {
        let g = self.groups.get(&seq.group)?;
        let k = g.prompt_logprobs?;
        (seq.index == 0 && seq.prompt_scored.len() < g.prompt_len).then_some(k)
    }

    #[cfg(test)]
    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    /// Bytes of the KV pools resident in memory now.
    #[cfg(all(test, target_os = "linux"))]
    pub fn cache_resident_bytes(&self) -> usize {
        self.cache.resident_bytes()
    }

    #[cfg(test)]
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    #[cfg(test)]
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a request's choices. A request the model cannot run (no prompt, an id outside
    /// the vocabulary: validation refuses these first) fails every choice at once instead.
    pub fn add(&mut self, sub: Submission) {
        let req = sub.req;
        let vocab = self.shared.limits.vocab;
        if req.prompt.is_empty() || req.prompt.iter().any(|&t| t as usize >= vocab) {
            let error = format!("invalid prompt: empty or a token id >= the vocabulary {vocab}");
            for index in 0..req.n {
                let error = error.clone();
                let _ = sub.events.send(Event::Failed { index, error });
            }
            return;
        }
        self.groups.insert(
            sub.id,
            Group {
                events: sub.events,
                ticket: Some(sub.ticket),
                prompt_len: req.prompt.len(),
                max_tokens: req.max_tokens,
                stop_ids: req.stop_ids,
                prompt_logprobs: req.prompt_logprobs,
                arrived: sub.arrived,
                leader_prefilled: req.n == 1,
                open: req.n,
            },
        );
        for index in 0..req.n {
            let mut params = req.sampling.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(index as u64));
            let seq = Sequence {
                id: self.next_seq,
                group: sub.id,
                index,
                priority: req.priority,
                tokens: req.prompt.clone(),
                computed: 0,
                blocks: Vec::new(),
                hashes: Vec::new(),
                sampler: Sampler::new(params, &req.prompt),
                constraint: req.constraint.clone(),
                generated: 0,
                cached_tokens: None,
                admitted_at: None,
                first_token_at: None,
                prompt_scored: Vec::new(),
            };
            self.next_seq += 1;
            self.enqueue(seq);
        }
    }

    /// Inserts into the waiting queue: higher priority first, then by sequence id (arrival).
    fn enqueue(&mut self, seq: Sequence) {
        let at = self
            .waiting
            .iter()
            .position(|w| {
                w.priority < seq.priority || (w.priority == seq.priority && w.id > seq.id)
            })
            .unwrap_or(self.waiting.len());
        self.waiting.insert(at, seq);
    }

    fn send(&self, group: u64, ev: Event) {
        if let Some(g) = self.groups.get(&group) {
            // A closed channel means the client left; the next step reaps the sequence.
            let _ = g.events.send(ev);
        }
    }

    /// One choice is done (finished or failed): free it and maybe its group.
    fn retire(&mut self, seq: Sequence) {
        self.blocks.release(&seq.blocks);
        let mut drop_group = false;
        if let Some(g) = self.groups.get_mut(&seq.group) {
            if seq.index == 0 {
                g.leader_prefilled = true;
            }
            g.ticket = None;
            g.open = g.open.saturating_sub(1);
            drop_group = g.open == 0;
        }
        if drop_group {
            self.groups.remove(&seq.group);
        }
    }

    fn finish(&mut self, seq: Sequence, reason: FinishReason) {
        let now = Instant::now();
        if let Some(g) = self.groups.get(&seq.group) {
            let timings = Timings {
                queued: seq.admitted_at.unwrap_or(now) - g.arrived,
                ttft: seq.first_token_at.unwrap_or(now) - g.arrived,
                total: now - g.arrived,
            };
            let usage = Usage {
                prompt_tokens: g.prompt_len,
                completion_tokens: seq.generated,
                cached_tokens: seq.cached_tokens.unwrap_or(0),
            };
            let finish = Finish {
                reason,
                usage,
                timings,
            };
            let index = seq.index;
            self.send(seq.group, Event::Finished { index, finish });
        }
        self.retire(seq);
    }

    fn fail(&mut self, seq: Sequence, error: &str) {
        self.counters().failures.fetch_add(1, Ordering::Relaxed);
        let (index, error) = (seq.index, error.to_string());
        self.send(seq.group, Event::Failed { index, error });
        self.retire(seq);
    }

    /// Drops every sequence and embedding job whose client has gone away, in any state.
    fn reap_cancelled(&mut self) {
        let gone = self.embeds.reap_cancelled(&mut self.blocks);
        Counters::add(&self.counters().cancellations, gone);
        let closed: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        if closed.is_empty() {
            return;
        }
        Counters::add(&self.counters().cancellations, closed.len());
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|s| closed.contains(&s.group));
        self.waiting = kept.into();
        let (gone_running, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| closed.contains(&s.group));
        self.running = kept;
        for seq in gone.into_iter().chain(gone_running) {
            self.retire(seq);
        }
    }

    /// Ends every sequence with [`FinishReason::Shutdown`] (shutdown past its deadline).
    pub fn cancel_all(&mut self) {
        self.embeds
            .fail_all(&mut self.blocks, "cancelled: the engine shut down");
        let all: Vec<Sequence> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        for seq in all {
            self.finish(seq, FinishReason::Shutdown);
        }
    }

    fn views(&self) -> (Vec<RunningView>, Vec<WaitingView>) {
        let running = self
            .running
            .iter()
            .map(|s| RunningView {
                id: s.id,
                computed: s.computed,
                total: s.tokens.len(),
                blocks: s.blocks.len(),
                exclusive_blocks: s
                    .blocks
                    .iter()
                    .filter(|&&b| self.blocks.refs(b) == 1)
                    .count(),
            })
            .collect();
        let bs = self.blocks.block_size();
        let waiting = self
            .waiting
            .iter()
            .map(|s| WaitingView {
                id: s.id,
                total: s.tokens.len(),
                cached_tokens: match self.scores_prompt(s) {
                    Some(_) => 0,
                    None => self.blocks.peek_prefix(&s.tokens) * bs,
                },
                ready: s.index == 0 || self.groups.get(&s.group).is_none_or(|g| g.leader_prefilled),
            })
            .collect();
        (running, waiting)
    }

    /// Registers the sequence's newly full, computed blocks in the prefix index.
    fn register_blocks(blocks: &mut BlockManager, seq: &mut Sequence) {
        let bs = blocks.block_size();
        while (seq.hashes.len() + 1) * bs <= seq.computed {
            let j = seq.hashes.len();
            let chunk = &seq.tokens[j * bs..(j + 1) * bs];
            let h = chain_hash(seq.hashes.last().copied(), chunk);
            blocks.register(seq.blocks[j], h, chunk);
            seq.hashes.push(h);
        }
    }

    fn preempt(&mut self, id: SeqId) {
        let Some(at) = self.running.iter().position(|s| s.id == id) else {
            return;
        };
        let mut seq = self.running.remove(at);
        self.blocks.release(&seq.blocks);
        seq.blocks.clear();
        seq.hashes.clear();
        seq.computed = 0;
        self.counters().preemptions.fetch_add(1, Ordering::Relaxed);
        self.enqueue(seq);
    }

    fn admit(&mut self, id: SeqId) {
        let Some(at) = self.waiting.iter().position(|s| s.id == id) else {
            return;
        };
        let Some(mut seq) = self.waiting.remove(at) else {
            return;
        };
        // A prompt to score is computed afresh: cached blocks skip the rows it needs.
        if self.scores_prompt(&seq).is_none() {
            seq.blocks = self.blocks.match_prefix(&seq.tokens);
        }
        seq.computed = seq.blocks.len() * self.blocks.block_size();
        Self::register_blocks(&mut self.blocks, &mut seq);
        seq.cached_tokens.get_or_insert(seq.computed);
        seq.admitted_at.get_or_insert_with(Instant::now);
        if let Some(g) = self.groups.get_mut(&seq.group) {
            g.ticket = None; // admitted: the queue place goes back
        }
        self.running.push(seq);
    }

    /// One step: reap, plan, apply the plan, allocate blocks, run the batch (forward, sample,
    /// emit, retire), run an embedding chunk, publish. Returns what it did.
    pub fn step(&mut self) -> StepReport {
        let t0 = Instant::now();
        self.reap_cancelled();
        // Embedding blocks first, so the plan below sees what is left.
        self.embeds.reserve(&mut self.blocks);
        let plan = self.plan();
        self.apply(&plan);
        let work = self.allocate(&plan);
        let mut report = StepReport {
            tokens: work.iter().map(|w| w.1).sum(),
            preempted: plan.preempt,
            admitted: plan.admit,
        };
        if !work.is_empty() {
            self.run_batch(&work);
        }
        report.tokens += self.step_embeddings();
        self.give_back_pages();
        self.publish(t0, report.tokens > 0);
        report
    }

    /// Gives the system back the pages of blocks that turned cold this step (past the
    /// prefix-cache budget, or free beyond the working set).
    fn give_back_pages(&mut self) {
        let cooled = self.blocks.take_cooled();
        let blocks = &self.blocks;
        if let Err(e) = self.cache.give_back(&cooled, &|b| blocks.is_cold(b)) {
            // The pages stay resident; nothing else is wrong.
            tracing::warn!(error = %e, "could not give KV pages back");
        }
    }

    /// The scheduler's plan for this step, over views of the sequences and the free blocks.
    fn plan(&self) -> Plan {
        let (running, waiting) = self.views();
        let budget = Budget {
            max_batch_tokens: self.max_batch_tokens,
            max_running: self.max_running,
            free_blocks: self.blocks.available(),
            block_size: self.blocks.block_size(),
            watermark_blocks: if self.running.is_empty() {
                0
            } else {
                self.watermark_blocks
            },
        };
        scheduler::next_step(&running, &waiting, &budget)
    }

    /// Preempts and admits what the plan says.
    fn apply(&mut self, plan: &Plan) {
        for &id in &plan.preempt {
            self.preempt(id);
        }
        for &id in &plan.admit {
            self.admit(id);
        }
    }

    /// Blocks for every chunk of the plan: `(index in running, tokens)` of the chunks that got
    /// them. A chunk whose blocks cannot be had (the plan is an estimate when prefix blocks
    /// were evicted meanwhile) waits for the next step.
    fn allocate(&mut self, plan: &Plan) -> Vec<(usize, usize)> {
        let mut work = Vec::new();
        for chunk in &plan.chunks {
            let Some(i) = self.running.iter().position(|s| s.id == chunk.id) else {
                continue;
            };
            let s = &self.running[i];
            let tokens = chunk.tokens.min(s.tokens.len() - s.computed);
            let need = self
                .blocks
                .blocks_for(s.computed + tokens)
                .saturating_sub(s.blocks.len());
            match self.blocks.allocate_n(need) {
                Some(b) if tokens > 0 => {
                    self.running[i].blocks.extend(b);
                    work.push((i, tokens));
                }
                Some(b) => self.blocks.release(&b),
                None => {}
            }
        }
        work
    }

    /// One chunk of the head embedding job; returns the tokens it ran. Embedding chunks are
    /// always `max_batch_tokens` long, whatever else runs: the same input then gives
    /// bit-identical vectors under any load. A step with both does at most twice the budget.
    fn step_embeddings(&mut self) -> usize {
        let chunk = self.max_batch_tokens;
        match self
            .embeds
            .step(&self.model, &mut self.cache, &mut self.blocks, chunk)
        {
            Ok(n) => {
                Counters::add(&self.counters().embed_tokens, n);
                n
            }
            Err(error) => {
                tracing::error!(%error, "embedding step failed");
                self.counters().failures.fetch_add(1, Ordering::Relaxed);
                0
            }
        }
    }

    fn run_batch(&mut self, work: &[(usize, usize)]) {
        let modes: Vec<LogitsWanted> = work
            .iter()
            .map(|&(i, n)| {
                let s = &self.running[i];
                if self.scores_prompt(s).is_some() {
                    LogitsWanted::All
                } else if s.computed + n == s.tokens.len() {
                    LogitsWanted::Last
                } else {
                    LogitsWanted::None
                }
            })
            .collect();
        let seqs: Vec<SeqChunk<'_>> = work
            .iter()
            .zip(&modes)
            .map(|(&(i, n), &logits)| {
                let s = &self.running[i];
                SeqChunk {
                    tokens: &s.tokens[s.computed..s.computed + n],
                    start_pos: s.computed,
                    blocks: &s.blocks,
                    logits,
                }
            })
            .collect();
        let result = self
            .model
            .forward(&Batch::new(seqs), &mut self.cache)
            .and_then(|l| Ok(l.to_vec2::<f32>()?));
        let ids: Vec<SeqId> = work.iter().map(|&(i, _)| self.running[i].id).collect();
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let error = format!("forward step failed: {e}");
                tracing::error!(%error, sequences = ids.len(), "step failed");
                for id in ids {
                    if let Some(at) = self.running.iter().position(|s| s.id == id) {
                        let seq = self.running.remove(at);
                        self.fail(seq, &error);
                    }
                }
                return;
            }
        };
        let mut rows = logits.into_iter();
        let mut done: Vec<(SeqId, Result<FinishReason, String>)> = Vec::new();
        for (&(i, n), mode) in work.iter().zip(modes) {
            let chunk_rows: Vec<Vec<f32>> = rows.by_ref().take(mode.rows(n)).collect();
            let id = self.running[i].id;
            if chunk_rows.len() < mode.rows(n) {
                done.push((id, Err("the model returned too few logit rows".into())));
            } else if let Some(outcome) = self.advance(i, n, chunk_rows) {
                done.push((id, outcome));
            }
        }
        for (id, outcome) in done {
            let Some(at) = self.running.iter().position(|s| s.id == id) else {
                continue;
            };
            let seq = self.running.remove(at);
            match outcome {
                Ok(reason) => self.finish(seq, reason),
                Err(e) => self.fail(seq, &e),
            }
        }
    }

    /// Moves `running[i]` past a computed chunk of `n` tokens whose logit rows are `rows`:
    /// scores prompt tokens, and at the end of its tokens samples the next one. `Some` when the
    /// sequence is done.
    fn advance(
        &mut self,
        i: usize,
        n: usize,
        mut rows: Vec<Vec<f32>>,
    ) -> Option<Result<FinishReason, String>> {
        let score_k = self.scores_prompt(&self.running[i]);
        let counters = &self.shared.counters;
        let s = &mut self.running[i];
        let start = s.computed;
        let decode = n == 1 && s.computed + 1 == s.tokens.len() && s.generated > 0;
        let counter = if decode {
            &counters.decode_tokens
        } else {
            &counters.prefill_tokens
        };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        s.computed += n;
        Self::register_blocks(&mut self.blocks, s);
        let g = self.groups.get_mut(&s.group)?;
        if s.index == 0 && s.computed >= s.tokens.len() {
            g.leader_prefilled = true;
        }
        if let Some(k) = score_k {
            if let Some(tokens) = score_prompt(s, g.prompt_len, start, &rows, k) {
                let _ = g.events.send(Event::PromptScores { tokens });
            }
        }
        if s.computed < s.tokens.len() {
            return None;
        }
        if g.max_tokens == 0 {
            return Some(Ok(FinishReason::Length)); // scoring only
        }
        let mut row = rows.pop()?;
        let tok = match s.next_token(&mut row) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        s.generated += 1;
        s.first_token_at.get_or_insert_with(Instant::now);
        if g.stop_ids.contains(&tok.id) {
            return Some(Ok(FinishReason::Stop));
        }
        if let Some(Err(e)) = s.constraint.as_mut().map(|c| c.commit(tok.id)) {
            return Some(Err(e.to_string()));
        }
        s.tokens.push(tok.id);
        let _ = g.events.send(Event::Token {
            index: s.index,
            token: tok,
        });
        if s.constraint.as_ref().is_some_and(Constraint::is_finished) {
            // The grammar is complete: nothing but a stop token could follow.
            return Some(Ok(FinishReason::Stop));
        }
        if s.generated >= g.max_tokens || s.tokens.len() >= self.model.max_context() {
            return Some(Ok(FinishReason::Length));
        }
        None
    }

    fn publish(&self, t0: Instant, worked: bool) {
        let counters = self.counters();
        let st = self.blocks.stats();
        counters
            .waiting
            .store(self.waiting.len(), Ordering::Relaxed);
        counters
            .running
            .store(self.running.len(), Ordering::Relaxed);
        counters
            .embed_jobs
            .store(self.embeds.len(), Ordering::Relaxed);
        counters.kv_blocks_used.store(st.used, Ordering::Relaxed);
        counters
            .kv_blocks_cached
            .store(st.cached, Ordering::Relaxed);
        counters
            .kv_blocks_resident
            .store(st.resident, Ordering::Relaxed);
        counters
            .prefix_queried_tokens
            .store(st.prefix_queried_tokens, Ordering::Relaxed);
        counters
            .prefix_hit_tokens
            .store(st.prefix_hit_tokens, Ordering::Relaxed);
        if worked {
            counters.steps.fetch_add(1, Ordering::Relaxed);
            counters
                .step_micros
                .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

/// Scores the prompt tokens that the rows of a chunk starting at `start` predict (row `j`
/// predicts the token at `start + j + 1`), skipping those a run before a preemption scored.
/// Returns every prompt token's score once the whole prompt is scored.
fn score_prompt(
    s: &mut Sequence,
    prompt_len: usize,
    start: usize,
    rows: &[Vec<f32>],
    k: usize,
) -> Option<Vec<Token>> {
    if s.prompt_scored.is_empty() {
        s.prompt_scored.push(Token {
            id: s.tokens[0],
            logprob: None,
            top: Vec::new(),
        });
    }
    for (j, row) in rows.iter().enumerate() {
        let target = start + j + 1;
        if target < prompt_len && target == s.prompt_scored.len() {
            let id = s.tokens[target];
            let (logprob, top) = sampling::score(row, id, k);
            s.prompt_scored.push(Token {
                id,
                logprob: Some(logprob),
                top,
            });
        }
    }
    (s.prompt_scored.len() == prompt_len).then(|| s.prompt_scored.clone())
}

/// The worker thread's loop.
pub(crate) fn run<M: CausalLm>(mut w: Worker<M>, rx: Receiver<Command>) {
    let mut deadline: Option<Instant> = None;
    let mut disconnected = false;
    let handle = |w: &mut Worker<M>, cmd: Command, deadline: &mut Option<Instant>| match cmd {
        Command::Submit(sub) => w.add(sub),
        Command::Embed(sub) => w.add_embed(sub),
        Command::Shutdown { deadline: d } => *deadline = Some(d),
    };
    loop {
        if w.is_idle() {
            if deadline.is_some() || disconnected {
                break;
            }
            // Nothing to do: sleep until a command comes.
            match rx.recv() {
                Ok(cmd) => handle(&mut w, cmd, &mut deadline),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => handle(&mut w, cmd, &mut deadline),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            w.cancel_all();
            break;
        }
        let report = w.step();
        if report.tokens == 0 && !w.is_idle() {
            // Work exists but none could run (waiting on blocks or a leader): don't spin.
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(cmd) => handle(&mut w, cmd, &mut deadline),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
        }
    }
    w.publish(Instant::now(), false);
    tracing::info!("engine worker stopped");
}
