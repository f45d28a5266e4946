//! The step policy, a pure function: given what runs, what waits and what the step may spend,
//! decide which sequences to preempt, which to admit, and how many tokens each feeds this step.
//!
//! Called by the worker once per step; it allocates nothing and touches no model state.
//!
//! The rules, in order:
//! 1. Running sequences get their next chunk: first every decoding one (one token each), then
//!    the prefilling ones (up to the remaining token budget: chunked prefill), oldest first. When the blocks for that chunk
//!    are not free, the youngest running sequence is preempted (recompute later) until they are;
//!    the oldest sequence therefore always progresses, so there is no livelock. A prefill that
//!    still does not fit takes the part that does.
//! 2. Waiting sequences, in queue order (priority, then arrival), are admitted while the step has
//!    tokens left, fewer than `max_running` run, and their first chunk's blocks fit with
//!    `watermark_blocks` to spare. Admission never preempts, and stops at the first sequence that
//!    does not fit, so nobody is overtaken (strict FCFS within a priority).

/// Identifies a sequence to the policy.
pub type SeqId = u64;

/// A running sequence as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningView {
    pub id: SeqId,
    /// Tokens whose K/V are in the cache.
    pub computed: usize,
    /// Tokens known (prompt + generated). `total - computed` tokens are pending (>= 1).
    pub total: usize,
    /// Blocks in its block table.
    pub blocks: usize,
    /// Of those, blocks only it references (freed if it is preempted).
    pub exclusive_blocks: usize,
}

/// A waiting sequence as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitingView {
    pub id: SeqId,
    pub total: usize,
    /// Tokens the prefix index already holds for it (whole blocks).
    pub cached_tokens: usize,
    /// False while it must not start (an `n > 1` sibling waiting for its leader's prompt).
    pub ready: bool,
}

/// What one step may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_batch_tokens: usize,
    pub max_running: usize,
    pub free_blocks: usize,
    pub block_size: usize,
    /// Blocks admission leaves free, so running sequences can grow without preempting at once.
    pub watermark_blocks: usize,
}

/// One sequence's share of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub id: SeqId,
    pub tokens: usize,
    /// New blocks it needs for this chunk.
    pub new_blocks: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Running sequences to preempt (youngest first), before anything runs.
    pub preempt: Vec<SeqId>,
    /// Waiting sequences to admit, in order.
    pub admit: Vec<SeqId>,
    /// The step's work: running sequences first (oldest first), then the admitted ones.
    pub chunks: Vec<Chunk>,
}

impl Plan {
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.tokens).sum()
    }
}

fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size)
}

/// What the step has left to give.
struct Left {
    free: usize,
    tokens: usize,
}

/// Plans one step. `running` is in admission order (oldest first); `waiting` in queue order.
pub fn next_step(running: &[RunningView], waiting: &[WaitingView], budget: &Budget) -> Plan {
    let mut plan = Plan::default();
    let mut left = Left {
        free: budget.free_blocks,
        tokens: budget.max_batch_tokens,
    };
    let still_running = plan_running(running, budget, &mut left, &mut plan);
    // With a preemption blocks are short: admitting now would only preempt again.
    if plan.preempt.is_empty() {
        plan_admissions(waiting, still_running, budget, &mut left, &mut plan);
    }
    plan
}

/// Decodes, then prefill chunks, of the running sequences, preempting the youngest when blocks
/// run out. Returns how many sequences still run.
fn plan_running(
    running: &[RunningView],
    budget: &Budget,
    left: &mut Left,
    plan: &mut Plan,
) -> usize {
    let bs = budget.block_size.max(1);
    // Running sequences still in the step, oldest first; preemption pops from the back.
    let mut alive: Vec<RunningView> = running.to_vec();
    // Pass 0 plans decodes (one pending token), pass 1 prefills.
    for pass in 0..2 {
        let mut i = 0;
        while i < alive.len() && left.tokens > 0 {
            let s = alive[i];
            let pending = s.total.saturating_sub(s.computed);
            if pending == 0 || (pending == 1) != (pass == 0) {
                i += 1;
                continue;
            }
            let want = pending.min(left.tokens);
            let need = |tokens: usize| blocks_for(s.computed + tokens, bs).saturating_sub(s.blocks);
            while need(want) > left.free && alive.len() > i + 1 {
                let victim = alive
                    .pop()
                    .expect("invariant: alive has more than i + 1 entries");
                left.free += victim.exclusive_blocks;
                // A younger decode planned in pass 0 gives its share back.
                if let Some(at) = plan.chunks.iter().position(|c| c.id == victim.id) {
                    let c = plan.chunks.remove(at);
                    left.free += c.new_blocks;
                    left.tokens += c.tokens;
                }
                plan.preempt.push(victim.id);
            }
            // What fits: the whole chunk, or (prefill only) the part that does.
            let fits = if need(want) <= left.free {
                want
            } else {
                ((s.blocks + left.free) * bs)
                    .saturating_sub(s.computed)
                    .min(want)
            };
            if fits > 0 {
                let new_blocks = need(fits);
                left.free -= new_blocks;
                left.tokens -= fits;
                plan.chunks.push(Chunk {
                    id: s.id,
                    tokens: fits,
                    new_blocks,
                });
            }
            i += 1;
        }
    }
    alive.len()
}

/// Admits waiting sequences in queue order while `max_running`, the tokens and the blocks
/// (above the watermark) allow.
fn plan_admissions(
    waiting: &[WaitingView],
    mut n_running: usize,
    budget: &Budget,
    left: &mut Left,
    plan: &mut Plan,
) {
    let bs = budget.block_size.max(1);
    for w in waiting {
        if n_running >= budget.max_running || left.tokens == 0 {
            break;
        }
        if !w.ready {
            continue;
        }
        let cached = w.cached_tokens.min(w.total.saturating_sub(1));
        let tokens = (w.total - cached).min(left.tokens);
        // Cached blocks may come out of the evictable pool, so count them as spent too.
        let new_blocks = blocks_for(cached + tokens, bs);
        if new_blocks + budget.watermark_blocks > left.free {
            break;
        }
        left.free -= new_blocks;
        left.tokens -= tokens;
        n_running += 1;
        plan.admit.push(w.id);
        plan.chunks.push(Chunk {
            id: w.id,
            tokens,
            new_blocks: new_blocks - cached / bs,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(tokens: usize, free: usize) -> Budget {
        Budget {
            max_batch_tokens: tokens,
            max_running: 8,
            free_blocks: free,
            block_size: 4,
            watermark_blocks: 0,
        }
    }

    fn run(id: SeqId, computed: usize, total: usize) -> RunningView {
        let blocks = computed.div_ceil(4);
        RunningView {
            id,
            computed,
            total,
            blocks,
            exclusive_blocks: blocks,
        }
    }

    fn wait(id: SeqId, total: usize) -> WaitingView {
        WaitingView {
            id,
            total,
            cached_tokens: 0,
            ready: true,
        }
    }

    #[test]
    fn decodes_come_first_then_chunked_prefill_within_the_token_budget() {
        // 1 and 2 decode; 3 has 30 prompt tokens left; budget 16 tokens.
        let running = [run(1, 9, 10), run(2, 5, 6), run(3, 10, 40)];
        let plan = next_step(&running, &[wait(4, 8)], &budget(16, 100));
        let tokens: Vec<(SeqId, usize)> = plan.chunks.iter().map(|c| (c.id, c.tokens)).collect();
        assert_eq!(tokens, vec![(1, 1), (2, 1), (3, 14)]);
        assert_eq!(plan.num_tokens(), 16);
        assert!(plan.admit.is_empty(), "no budget left for 4");
    }

    #[test]
    fn waiting_sequences_are_admitted_in_order_and_never_overtaken() {
        let waiting = [wait(1, 10), wait(2, 30), wait(3, 2)];
        // 10 + 30 tokens: the second is cut to the budget left.
        let plan = next_step(&[], &waiting, &budget(32, 100));
        assert_eq!(plan.admit, vec![1, 2]);
        assert_eq!(plan.chunks[1].tokens, 22);
        // Not enough blocks for 2: 3 would fit, but it must not overtake 2.
        let plan = next_step(&[], &waiting, &budget(64, 3 + 2));
        assert_eq!(plan.admit, vec![1]);
    }

    #[test]
    fn admission_respects_max_running_and_the_watermark() {
        let running: Vec<RunningView> = (0..8).map(|i| run(i, 3, 4)).collect();
        let plan = next_step(&running, &[wait(9, 4)], &budget(64, 100));
        assert!(plan.admit.is_empty());
        let mut b = budget(64, 3);
        b.watermark_blocks = 2;
        let plan = next_step(&[], &[wait(1, 8)], &b);
        assert!(plan.admit.is_empty(), "2 blocks + watermark 2 > 3 free");
        b.free_blocks = 4;
        assert_eq!(next_step(&[], &[wait(1, 8)], &b).admit, vec![1]);
    }

    #[test]
    fn cached_prefix_tokens_are_not_recomputed() {
        let mut w = wait(1, 203);
        w.cached_tokens = 200;
        let plan = next_step(&[], &[w], &budget(512, 100));
        assert_eq!(plan.chunks[0].tokens, 3);
        assert_eq!(plan.chunks[0].new_blocks, 1);
        // A fully cached prompt still computes its last token.
        w.cached_tokens = 203;
        assert_eq!(next_step(&[], &[w], &budget(512, 100)).chunks[0].tokens, 1);
    }

    #[test]
    fn the_youngest_gives_way_when_blocks_run_out() {
        // All three decode at a block boundary (computed 8 = 2 full blocks): each needs a block.
        let running = [run(1, 8, 9), run(2, 8, 9), run(3, 8, 9)];
        let plan = next_step(&running, &[wait(4, 4)], &budget(64, 1));
        assert_eq!(plan.preempt, vec![3]);
        let ids: Vec<SeqId> = plan.chunks.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(plan.admit.is_empty(), "no admission while preempting");
    }

    #[test]
    fn the_oldest_always_progresses() {
        // A long prefill that needs more blocks than are free preempts the younger ones, then
        // takes what fits.
        let running = [run(1, 0, 100), run(2, 4, 5)];
        let plan = next_step(&running, &[], &budget(64, 2));
        assert_eq!(plan.preempt, vec![2]);
        assert_eq!(
            plan.chunks,
            vec![Chunk {
                id: 1,
                tokens: 12,
                new_blocks: 3
            }]
        );
    }

    #[test]
    fn decodes_go_before_an_older_prefill() {
        let running = [run(1, 0, 100), run(2, 4, 5), run(3, 6, 7)];
        let plan = next_step(&running, &[], &budget(10, 100));
        let tokens: Vec<(SeqId, usize)> = plan.chunks.iter().map(|c| (c.id, c.tokens)).collect();
        assert_eq!(tokens, vec![(2, 1), (3, 1), (1, 8)]);
    }

    #[test]
    fn siblings_that_are_not_ready_are_skipped() {
        let mut w = wait(1, 8);
        w.ready = false;
        let plan = next_step(&[], &[w, wait(2, 8)], &budget(64, 100));
        assert_eq!(plan.admit, vec![2]);
    }
}
