//! The model worker: one OS thread owns the model, the KV cache and every sequence, and loops
//! admit → plan → forward → sample → emit → retire.
//!
//! It never waits on a client: events go out on unbounded channels (bounded in practice by each
//! request's `max_tokens`), and a closed channel is how it learns a client went away. It blocks
//! only on its command channel, and only when it has nothing to do.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::kv_cache::{chain_hash, BlockId, BlockManager};
use super::sampling::{SampledToken, Sampler};
use super::scheduler::{self, Budget, RunningView, SeqId, WaitingView};
use super::{
    Command, EngineConfig, FinishReason, Shared, Timings, Usage, ValidRequest, WorkerEvent,
};
use crate::constraint::Constraint;
use crate::model::{Batch, CausalLm, KvCache, LogitsWanted, SeqChunk};

/// A request on its way to the worker.
pub(crate) struct Submission {
    pub id: u64,
    pub req: ValidRequest,
    pub events: UnboundedSender<WorkerEvent>,
    pub arrived: Instant,
}

/// What the `n` choices of one request share.
struct Group {
    events: UnboundedSender<WorkerEvent>,
    prompt_len: usize,
    max_tokens: usize,
    stop_ids: Vec<u32>,
    arrived: Instant,
    /// Set once choice 0 has its prompt in the cache (or is gone): the other choices may start
    /// and find the prompt's blocks in the prefix index.
    leader_prefilled: bool,
    /// Counted out of the admission queue yet?
    admitted: bool,
    /// Choices not yet finished.
    open: usize,
}

impl Group {
    /// Gives the request's place in the admission queue back, once.
    fn leave_queue(&mut self, counters: &super::Counters) {
        if !self.admitted {
            self.admitted = true;
            counters.queued_requests.fetch_sub(1, Ordering::SeqCst);
            counters
                .queued_tokens
                .fetch_sub(self.prompt_len, Ordering::SeqCst);
        }
    }
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
}

impl Sequence {
    /// Samples the next token from `row` (`[vocab]` logits), masked by the constraint first.
    fn next_token(&mut self, row: &mut [f32]) -> Result<SampledToken, String> {
        if let Some(c) = self.constraint.as_mut() {
            c.apply(row).map_err(|e| e.to_string())?;
        }
        self.sampler
            .sample(row)
            .map_err(|e| format!("sampling failed: {e}"))
    }
}

pub(crate) struct Worker<M> {
    model: M,
    cache: KvCache,
    blocks: BlockManager,
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    groups: HashMap<u64, Group>,
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
    pub fn new(model: M, cache: KvCache, config: &EngineConfig) -> Self {
        let blocks = BlockManager::new(
            cache.num_blocks(),
            cache.block_size(),
            config.prefix_caching,
        );
        Self {
            model,
            blocks,
            watermark_blocks: cache.num_blocks() / 100,
            cache,
            waiting: VecDeque::new(),
            running: Vec::new(),
            groups: HashMap::new(),
            next_seq: 0,
            max_batch_tokens: config.max_batch_tokens,
            max_running: config.max_running,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    #[cfg(test)]
    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    #[cfg(test)]
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    #[cfg(test)]
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a request's choices.
    pub fn add(&mut self, sub: Submission) {
        let req = sub.req;
        self.groups.insert(
            sub.id,
            Group {
                events: sub.events,
                prompt_len: req.prompt.len(),
                max_tokens: req.max_tokens,
                stop_ids: req.stop_ids,
                arrived: sub.arrived,
                leader_prefilled: req.n == 1,
                admitted: false,
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

    fn send(&self, group: u64, ev: WorkerEvent) {
        if let Some(g) = self.groups.get(&group) {
            // A closed channel means the client left; the next step reaps the sequence.
            let _ = g.events.send(ev);
        }
    }

    /// One choice is done (finished or failed): free it and maybe its group.
    fn retire(&mut self, seq: Sequence, counters: &super::Counters) {
        self.blocks.release(&seq.blocks);
        let mut drop_group = false;
        if let Some(g) = self.groups.get_mut(&seq.group) {
            if seq.index == 0 {
                g.leader_prefilled = true;
            }
            g.leave_queue(counters);
            g.open = g.open.saturating_sub(1);
            drop_group = g.open == 0;
        }
        if drop_group {
            self.groups.remove(&seq.group);
        }
    }

    fn finish(&mut self, seq: Sequence, reason: FinishReason, counters: &super::Counters) {
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
            self.send(
                seq.group,
                WorkerEvent::Finished {
                    index: seq.index,
                    reason,
                    usage,
                    timings,
                },
            );
        }
        self.retire(seq, counters);
    }

    fn fail(&mut self, seq: Sequence, error: &str, counters: &super::Counters) {
        counters.failures.fetch_add(1, Ordering::Relaxed);
        self.send(
            seq.group,
            WorkerEvent::Failed {
                index: seq.index,
                error: error.to_string(),
            },
        );
        self.retire(seq, counters);
    }

    /// Drops every sequence whose client has gone away, in any state.
    fn reap_cancelled(&mut self, counters: &super::Counters) {
        let closed: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| g.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        if closed.is_empty() {
            return;
        }
        counters
            .cancellations
            .fetch_add(closed.len() as u64, Ordering::Relaxed);
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|s| closed.contains(&s.group));
        self.waiting = kept.into();
        let (gone_running, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|s| closed.contains(&s.group));
        self.running = kept;
        for seq in gone.into_iter().chain(gone_running) {
            self.retire(seq, counters);
        }
    }

    /// Ends every sequence with `Finished { Cancelled }` (shutdown past its deadline).
    pub fn cancel_all(&mut self, counters: &super::Counters) {
        let all: Vec<Sequence> = self
            .running
            .drain(..)
            .chain(self.waiting.drain(..))
            .collect();
        for seq in all {
            self.finish(seq, FinishReason::Cancelled, counters);
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
                cached_tokens: self.blocks.peek_prefix(&s.tokens) * bs,
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

    fn preempt(&mut self, id: SeqId, counters: &super::Counters) {
        let Some(at) = self.running.iter().position(|s| s.id == id) else {
            return;
        };
        let mut seq = self.running.remove(at);
        self.blocks.release(&seq.blocks);
        seq.blocks.clear();
        seq.hashes.clear();
        seq.computed = 0;
        counters.preemptions.fetch_add(1, Ordering::Relaxed);
        self.enqueue(seq);
    }

    fn admit(&mut self, id: SeqId, counters: &super::Counters) {
        let Some(at) = self.waiting.iter().position(|s| s.id == id) else {
            return;
        };
        let Some(mut seq) = self.waiting.remove(at) else {
            return;
        };
        seq.blocks = self.blocks.match_prefix(&seq.tokens);
        seq.computed = seq.blocks.len() * self.blocks.block_size();
        Self::register_blocks(&mut self.blocks, &mut seq);
        seq.cached_tokens.get_or_insert(seq.computed);
        seq.admitted_at.get_or_insert_with(Instant::now);
        if let Some(g) = self.groups.get_mut(&seq.group) {
            g.leave_queue(counters);
        }
        self.running.push(seq);
    }

    /// One step: reap, plan, forward, sample, emit, retire. Returns what it did.
    pub fn step(&mut self, counters: &super::Counters) -> StepReport {
        let t0 = Instant::now();
        self.reap_cancelled(counters);
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
        let plan = scheduler::next_step(&running, &waiting, &budget);
        for &id in &plan.preempt {
            self.preempt(id, counters);
        }
        for &id in &plan.admit {
            self.admit(id, counters);
        }
        // Blocks for every chunk, then the batch. A chunk whose blocks cannot be had (the plan
        // is an estimate when prefix blocks were evicted meanwhile) waits for the next step.
        let mut work: Vec<(usize, usize)> = Vec::new(); // (index in running, tokens)
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
        let report = StepReport {
            tokens: work.iter().map(|w| w.1).sum(),
            preempted: plan.preempt.clone(),
            admitted: plan.admit.clone(),
        };
        if !work.is_empty() {
            self.run_batch(&work, counters);
        }
        self.publish(counters, t0, !work.is_empty());
        report
    }

    fn run_batch(&mut self, work: &[(usize, usize)], counters: &super::Counters) {
        let seqs: Vec<SeqChunk<'_>> = work
            .iter()
            .map(|&(i, n)| {
                let s = &self.running[i];
                SeqChunk {
                    tokens: &s.tokens[s.computed..s.computed + n],
                    start_pos: s.computed,
                    blocks: &s.blocks,
                    logits: if s.computed + n == s.tokens.len() {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    },
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
                        self.fail(seq, &error, counters);
                    }
                }
                return;
            }
        };
        let mut rows = logits.into_iter();
        let mut done: Vec<(SeqId, Result<FinishReason, String>)> = Vec::new();
        for &(i, n) in work {
            let s = &mut self.running[i];
            let decode = n == 1 && s.computed + 1 == s.tokens.len() && s.generated > 0;
            let counter = if decode {
                &counters.decode_tokens
            } else {
                &counters.prefill_tokens
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            s.computed += n;
            Self::register_blocks(&mut self.blocks, s);
            if s.index == 0 && s.computed >= s.tokens.len() {
                if let Some(g) = self.groups.get_mut(&s.group) {
                    g.leader_prefilled = true;
                }
            }
            if s.computed < s.tokens.len() {
                continue;
            }
            let Some(mut row) = rows.next() else {
                done.push((s.id, Err("the model returned too few logit rows".into())));
                continue;
            };
            let tok = match s.next_token(&mut row) {
                Ok(t) => t,
                Err(e) => {
                    done.push((s.id, Err(e)));
                    continue;
                }
            };
            s.generated += 1;
            s.first_token_at.get_or_insert_with(Instant::now);
            let Some(g) = self.groups.get(&s.group) else {
                continue;
            };
            if g.stop_ids.contains(&tok.id) {
                done.push((s.id, Ok(FinishReason::Stop)));
                continue;
            }
            if let Some(Err(e)) = s.constraint.as_mut().map(|c| c.commit(tok.id)) {
                done.push((s.id, Err(e.to_string())));
                continue;
            }
            let _ = g.events.send(WorkerEvent::Token {
                index: s.index,
                id: tok.id,
                logprob: tok.logprob,
                top_logprobs: tok.top_logprobs,
            });
            s.tokens.push(tok.id);
            if s.constraint.as_ref().is_some_and(Constraint::is_finished) {
                // The grammar is complete: nothing but a stop token could follow.
                done.push((s.id, Ok(FinishReason::Stop)));
            } else if s.generated >= g.max_tokens || s.tokens.len() >= self.model.max_context() {
                done.push((s.id, Ok(FinishReason::Length)));
            }
        }
        for (id, outcome) in done {
            let Some(at) = self.running.iter().position(|s| s.id == id) else {
                continue;
            };
            let seq = self.running.remove(at);
            match outcome {
                Ok(reason) => self.finish(seq, reason, counters),
                Err(e) => self.fail(seq, &e, counters),
            }
        }
    }

    fn publish(&self, counters: &super::Counters, t0: Instant, worked: bool) {
        let st = self.blocks.stats();
        counters
            .waiting
            .store(self.waiting.len(), Ordering::Relaxed);
        counters
            .running
            .store(self.running.len(), Ordering::Relaxed);
        counters.kv_blocks_used.store(st.used, Ordering::Relaxed);
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

/// The worker thread's loop.
pub(crate) fn run<M: CausalLm>(mut w: Worker<M>, rx: Receiver<Command>, shared: &Shared) {
    let counters = &shared.counters;
    let mut deadline: Option<Instant> = None;
    let mut disconnected = false;
    let handle = |w: &mut Worker<M>, cmd: Command, deadline: &mut Option<Instant>| match cmd {
        Command::Submit(sub) => w.add(sub),
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
            w.cancel_all(counters);
            break;
        }
        let report = w.step(counters);
        if report.tokens == 0 && !w.is_idle() {
            // Work exists but none could run (waiting on blocks or a leader): don't spin.
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(cmd) => handle(&mut w, cmd, &mut deadline),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
        }
    }
    w.publish(counters, Instant::now(), false);
    tracing::info!("engine worker stopped");
}
