use super::*;
use proptest::prelude::*;

#[test]
fn prefix_hits_share_blocks_and_survive_release() {
    let mut m = BlockManager::new(8, 4, true);
    let prompt: Vec<u32> = (0..10).collect();
    let a = m.allocate_n(3).unwrap();
    // Sequence A computed its first two full blocks.
    let h0 = chain_hash(None, &prompt[0..4]);
    let h1 = chain_hash(Some(h0), &prompt[4..8]);
    m.register(a[0], h0, &prompt[0..4]);
    m.register(a[1], h1, &prompt[4..8]);
    // B with the same 10-token prompt reuses both full blocks.
    let b = m.match_prefix(&prompt);
    assert_eq!(b, vec![a[0], a[1]]);
    assert_eq!(m.refs(a[0]), 2);
    // A prompt of exactly 8 tokens may reuse only one block: one token must be computed.
    let c = m.match_prefix(&prompt[..8]);
    assert_eq!(c, vec![a[0]]);
    m.release(&a);
    m.release(&b);
    m.release(&c);
    assert_eq!(m.available(), 8);
    assert_eq!(m.stats().cached, 2);
    // Released, but still cached: a later sequence hits them.
    let d = m.match_prefix(&prompt);
    assert_eq!(d.len(), 2);
    // A diverging prompt stops at the divergence.
    m.release(&d);
    let mut other = prompt.clone();
    other[5] = 99;
    assert_eq!(m.match_prefix(&other).len(), 1);
}

#[test]
fn eviction_takes_least_recently_used_cached_blocks_after_free_ones() {
    let mut m = BlockManager::new(3, 2, true);
    let all = m.allocate_n(3).unwrap();
    m.register(all[0], chain_hash(None, &[1, 2]), &[1, 2]);
    m.register(all[1], chain_hash(None, &[3, 4]), &[3, 4]);
    m.release(&[all[1]]);
    m.release(&[all[0]]);
    m.release(&[all[2]]);
    // The unhashed block goes first, then the LRU cached one (all[1], released first).
    assert_eq!(m.allocate(), Some(all[2]));
    assert_eq!(m.allocate(), Some(all[1]));
    assert_eq!(m.match_prefix(&[3, 4, 5]), Vec::<BlockId>::new());
    assert_eq!(m.match_prefix(&[1, 2, 5]), vec![all[0]]);
    assert_eq!(m.allocate(), None);
    assert!(m.allocate_n(1).is_none());
}

#[test]
fn disabled_prefix_caching_never_hits() {
    let mut m = BlockManager::new(4, 2, false);
    let a = m.allocate_n(1).unwrap();
    m.register(a[0], chain_hash(None, &[1, 2]), &[1, 2]);
    assert!(m.match_prefix(&[1, 2, 3]).is_empty());
}

#[test]
fn freed_blocks_are_reused_most_recent_first_before_untouched_ones() {
    let mut m = BlockManager::new(64, 4, true);
    let a = m.allocate_n(3).unwrap();
    assert_eq!(a, vec![0, 1, 2], "never-used blocks go out lowest id first");
    m.release(&[a[0]]);
    m.release(&[a[2]]);
    // The last freed comes back first, and no untouched block is taken while freed ones wait.
    assert_eq!(m.allocate(), Some(a[2]));
    assert_eq!(m.allocate(), Some(a[0]));
    assert_eq!(m.allocate(), Some(3));
    assert_eq!(m.stats().resident, 4);
}

/// Regression: released prefix blocks went to the cache while never-used blocks were preferred
/// over evicting it, so every block of the pool became resident whatever the working set.
#[test]
fn cached_prefixes_stay_within_the_budget_oldest_dropped_first() {
    let mut m = BlockManager::new(64, 2, true).with_cache_budget(2);
    let prompts: Vec<[u32; 2]> = (0..4).map(|i| [i, i + 10]).collect();
    let mut held = Vec::new();
    for p in &prompts {
        let b = m.allocate().unwrap();
        m.register(b, chain_hash(None, p), p);
        held.push(b);
    }
    for &b in &held {
        m.release(&[b]);
    }
    assert_eq!(m.stats().cached, 2);
    let hit = |m: &mut BlockManager, p: &[u32; 2]| {
        let got = m.match_prefix(&[p[0], p[1], 99]);
        m.release(&got);
        got.len()
    };
    // The two released first were dropped; the two newest still hit.
    assert_eq!(hit(&mut m, &prompts[0]), 0);
    assert_eq!(hit(&mut m, &prompts[1]), 0);
    assert_eq!(hit(&mut m, &prompts[2]), 1);
    assert_eq!(hit(&mut m, &prompts[3]), 1);
    // A dropped block is reused before any untouched one.
    let next = m.allocate().unwrap();
    assert!(held[..2].contains(&next), "got {next}");
    assert_eq!(m.stats().resident, 4);
}

#[test]
fn free_blocks_past_the_working_set_turn_cold_and_are_reported_once() {
    let n = 3 * WARM_SLACK_BLOCKS;
    let mut m = BlockManager::new(n, 1, false);
    let all = m.allocate_n(n).unwrap();
    assert!(m.take_cooled().is_empty());
    m.release(&all);
    // All but the slack go cold, least recently freed first.
    let cooled = m.take_cooled();
    assert_eq!(cooled, all[..n - WARM_SLACK_BLOCKS].to_vec());
    assert!(cooled.iter().all(|&b| m.is_cold(b)));
    assert!(m.take_cooled().is_empty());
    assert_eq!(m.stats().resident, WARM_SLACK_BLOCKS);
    // Warm blocks go out first (the last freed first), then the last one turned cold.
    let again = m.allocate_n(WARM_SLACK_BLOCKS + 1).unwrap();
    let mut warm_back = all[n - WARM_SLACK_BLOCKS..].to_vec();
    warm_back.reverse();
    assert_eq!(again[..WARM_SLACK_BLOCKS], warm_back[..]);
    assert_eq!(again[WARM_SLACK_BLOCKS], all[n - WARM_SLACK_BLOCKS - 1]);
    assert!(!m.is_cold(again[WARM_SLACK_BLOCKS]));
    assert_eq!(m.stats().resident, WARM_SLACK_BLOCKS + 1);
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<u32>),
    Grow(usize),
    Finish(usize),
    Cancel(usize),
}

/// Ops over an alphabet of 3 tokens: prefixes repeat, so the index gets hits.
fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        proptest::collection::vec(0u32..3, 1..24).prop_map(Op::Submit),
        (0usize..16).prop_map(Op::Grow),
        (0usize..16).prop_map(Op::Finish),
        (0usize..16).prop_map(Op::Cancel),
    ]
}

/// Ops over a wide alphabet: many distinct prefixes, so a cache without a budget (or an
/// allocator preferring untouched blocks) would grow into the whole pool.
fn op_wide() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => proptest::collection::vec(0u32..1000, 1..24).prop_map(Op::Submit),
        2 => (0usize..16).prop_map(Op::Grow),
        3 => (0usize..16).prop_map(Op::Finish),
    ]
}

/// A sequence as the worker keeps it: tokens and the blocks holding them.
struct Seq {
    tokens: Vec<u32>,
    blocks: Vec<BlockId>,
}

fn register_full(m: &mut BlockManager, s: &Seq) {
    let mut parent = None;
    for (i, chunk) in s.tokens.chunks(m.block_size()).enumerate() {
        if chunk.len() < m.block_size() || i >= s.blocks.len() {
            break;
        }
        let h = chain_hash(parent, chunk);
        m.register(s.blocks[i], h, chunk);
        parent = Some(h);
    }
}

/// Applies `op` as the worker would.
fn apply(m: &mut BlockManager, live: &mut Vec<Seq>, op: &Op) {
    match op {
        Op::Submit(tokens) => {
            let mut blocks = m.match_prefix(tokens);
            let need = m.blocks_for(tokens.len()) - blocks.len();
            match m.allocate_n(need) {
                Some(b) => {
                    blocks.extend(b);
                    let s = Seq {
                        tokens: tokens.clone(),
                        blocks,
                    };
                    register_full(m, &s);
                    live.push(s);
                }
                None => m.release(&blocks),
            }
        }
        Op::Grow(i) if !live.is_empty() => {
            let i = i % live.len();
            let bs = m.block_size();
            let s = &mut live[i];
            s.tokens.push(1);
            if s.tokens.len() > s.blocks.len() * bs {
                match m.allocate() {
                    Some(b) => s.blocks.push(b),
                    None => {
                        s.tokens.pop();
                    }
                }
            }
            register_full(m, &live[i]);
        }
        Op::Finish(i) | Op::Cancel(i) if !live.is_empty() => {
            let s = live.swap_remove(i % live.len());
            m.release(&s.blocks);
        }
        _ => {}
    }
}

/// How many distinct live sequences hold each block.
fn held_by(m: &BlockManager, live: &[Seq]) -> Vec<u32> {
    let mut held = vec![0u32; m.num_blocks()];
    for s in live {
        for &b in &s.blocks {
            held[b as usize] += 1;
        }
    }
    held
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    /// 10,000 random submit / grow / finish / cancel operations leave the pool fully free,
    /// with no block ever held by two sequences unless both got it from the prefix index.
    #[test]
    fn random_operations_leave_the_pool_free(ops in proptest::collection::vec(op(), 250)) {
        let mut m = BlockManager::new(24, 4, true);
        let mut live: Vec<Seq> = Vec::new();
        for op in &ops {
            apply(&mut m, &mut live, op);
            // Every block's reference count equals the number of live sequences holding it.
            let held = held_by(&m, &live);
            for (b, &n) in held.iter().enumerate() {
                prop_assert_eq!(m.refs(b as BlockId), n, "block {}", b);
                prop_assert!(n == 0 || !m.is_cold(b as BlockId), "held block {} is cold", b);
            }
            prop_assert_eq!(m.stats().used, held.iter().filter(|&&n| n > 0).count());
        }
        for s in live.drain(..) {
            m.release(&s.blocks);
        }
        prop_assert_eq!(m.available(), m.num_blocks());
        prop_assert_eq!(m.stats().used, 0);
    }

    /// Under a random workload on a large pool, the blocks ever handed out stay within the
    /// peak of the resident ones, which stays within the blocks in use + the warm slack + the
    /// cache budget: the pool's size does not matter.
    #[test]
    fn touched_blocks_stay_within_the_working_set_and_the_budget(
        ops in proptest::collection::vec(op_wide(), 1000),
    ) {
        const BUDGET: usize = 8;
        let mut m = BlockManager::new(1024, 4, true).with_cache_budget(BUDGET);
        let mut live: Vec<Seq> = Vec::new();
        let mut touched = std::collections::HashSet::new();
        let (mut peak_resident, mut peak_used) = (0, 0);
        for op in &ops {
            apply(&mut m, &mut live, op);
            touched.extend(live.iter().flat_map(|s| s.blocks.iter().copied()));
            let st = m.stats();
            prop_assert!(st.cached <= BUDGET, "{} cached > budget {}", st.cached, BUDGET);
            prop_assert!(
                st.resident <= st.used + WARM_SLACK_BLOCKS + BUDGET,
                "resident {} with {} used", st.resident, st.used
            );
            peak_resident = peak_resident.max(st.resident);
            peak_used = peak_used.max(st.used);
            prop_assert!(touched.len() <= peak_resident, "{} touched", touched.len());
        }
        prop_assert!(peak_resident <= peak_used + WARM_SLACK_BLOCKS + BUDGET);
        for s in live.drain(..) {
            m.release(&s.blocks);
        }
        // Idle: only the cache budget and the slack stay resident.
        prop_assert!(m.stats().resident <= WARM_SLACK_BLOCKS + BUDGET);
    }
}
