//! Block bookkeeping for the paged KV cache: which blocks are free, which sequences hold which,
//! and the prefix index that lets a new sequence reuse blocks another one computed.
//!
//! Pure bookkeeping, no tensors (those are `model::KvCache`). Owned by the engine worker thread.
//!
//! A *full* block that holds computed K/V is identified by a hash chain over the tokens of every
//! block up to and including it, so equal hashes mean equal prefixes (the tokens are kept and
//! compared too, so a hash collision can never hand out the wrong K/V). Blocks are ref-counted:
//! a prefix hit shares a block between sequences. A block nobody references stays in the index
//! (evictable) until the allocator needs it, least recently used first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

pub type BlockId = u32;

/// Hash of a full block's tokens chained onto its parent's hash.
pub fn chain_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Default)]
struct BlockMeta {
    refs: u32,
    /// Set once the block is full, computed and in the index.
    hash: Option<u64>,
    /// The tokens the hash stands for (checked on every hit).
    tokens: Vec<u32>,
    /// Key in `evictable` while refs == 0 and hashed.
    lru_stamp: u64,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub total: usize,
    /// Referenced by at least one sequence.
    pub used: usize,
    /// Unreferenced but still holding a cached prefix.
    pub cached: usize,
    /// Prompt tokens looked up in the prefix index, and how many were found.
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
}

/// The block allocator and prefix index.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    meta: Vec<BlockMeta>,
    /// Never-hashed free blocks (LIFO).
    free: Vec<BlockId>,
    /// Unreferenced hashed blocks, oldest first.
    evictable: BTreeMap<u64, BlockId>,
    index: HashMap<u64, BlockId>,
    clock: u64,
    prefix_caching: bool,
    queried: u64,
    hits: u64,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            block_size,
            meta: vec![BlockMeta::default(); num_blocks],
            free: (0..num_blocks as BlockId).rev().collect(),
            evictable: BTreeMap::new(),
            index: HashMap::new(),
            clock: 0,
            prefix_caching,
            queried: 0,
            hits: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.meta.len()
    }

    /// Blocks an allocation can take now (free + evictable).
    pub fn available(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    pub fn stats(&self) -> BlockStats {
        BlockStats {
            total: self.meta.len(),
            used: self.meta.len() - self.available(),
            cached: self.evictable.len(),
            prefix_queried_tokens: self.queried,
            prefix_hit_tokens: self.hits,
        }
    }

    /// Blocks needed to hold `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Takes one block, evicting the least recently used cached prefix if nothing is free.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let (&stamp, &id) = self.evictable.iter().next()?;
                self.evictable.remove(&stamp);
                let m = &mut self.meta[id as usize];
                if let Some(h) = m.hash.take() {
                    self.index.remove(&h);
                }
                m.tokens.clear();
                id
            }
        };
        self.meta[id as usize].refs = 1;
        Some(id)
    }

    /// Takes `n` blocks, all or none.
    pub fn allocate_n(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.available() {
            return None;
        }
        let blocks: Option<Vec<BlockId>> = (0..n).map(|_| self.allocate()).collect();
        blocks
    }

    /// Drops one reference to each block. Unreferenced hashed blocks stay cached.
    pub fn release(&mut self, blocks: &[BlockId]) {
        for &b in blocks {
            let m = &mut self.meta[b as usize];
            debug_assert!(m.refs > 0, "invariant: released block {b} is referenced");
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                if m.hash.is_some() {
                    self.clock += 1;
                    m.lru_stamp = self.clock;
                    self.evictable.insert(self.clock, b);
                } else {
                    self.free.push(b);
                }
            }
        }
    }

    /// The longest run of cached full blocks that prefixes `tokens`, leaving at least one
    /// token uncovered (its logits are needed). Takes a reference to each block returned.
    pub fn match_prefix(&mut self, tokens: &[u32]) -> Vec<BlockId> {
        let mut out = Vec::new();
        if !self.prefix_caching || tokens.is_empty() {
            return out;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        self.queried += tokens.len() as u64;
        let mut parent = None;
        for chunk in tokens.chunks(self.block_size).take(max_blocks) {
            let h = chain_hash(parent, chunk);
            let Some(&id) = self.index.get(&h) else { break };
            let m = &mut self.meta[id as usize];
            if m.tokens != chunk {
                break;
            }
            if m.refs == 0 {
                self.evictable.remove(&m.lru_stamp);
            }
            m.refs += 1;
            out.push(id);
            parent = Some(h);
        }
        self.hits += (out.len() * self.block_size) as u64;
        out
    }

    /// How many blocks `match_prefix` would return now, without taking them.
    pub fn peek_prefix(&self, tokens: &[u32]) -> usize {
        if !self.prefix_caching || tokens.is_empty() {
            return 0;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        let mut n = 0;
        for chunk in tokens.chunks(self.block_size).take(max_blocks) {
            let h = chain_hash(parent, chunk);
            match self.index.get(&h) {
                Some(&id) if self.meta[id as usize].tokens == chunk => n += 1,
                _ => break,
            }
            parent = Some(h);
        }
        n
    }

    /// Records that `block` now holds the computed K/V of the full block `tokens`, whose chain
    /// hash is `hash`. If another block already holds that prefix, nothing changes.
    pub fn register(&mut self, block: BlockId, hash: u64, tokens: &[u32]) {
        if !self.prefix_caching || self.index.contains_key(&hash) {
            return;
        }
        let m = &mut self.meta[block as usize];
        if m.hash.is_some() {
            return;
        }
        m.hash = Some(hash);
        m.tokens = tokens.to_vec();
        self.index.insert(hash, block);
    }

    /// References held on `block` (for tests and invariant checks).
    pub fn refs(&self, block: BlockId) -> u32 {
        self.meta[block as usize].refs
    }
}

#[cfg(test)]
mod tests {
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

    #[derive(Debug, Clone)]
    enum Op {
        Submit(Vec<u32>),
        Grow(usize),
        Finish(usize),
        Cancel(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(0u32..3, 1..24).prop_map(Op::Submit),
            (0usize..16).prop_map(Op::Grow),
            (0usize..16).prop_map(Op::Finish),
            (0usize..16).prop_map(Op::Cancel),
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        /// 10,000 random submit / grow / finish / cancel operations leave the pool fully free,
        /// with no block ever held by two sequences unless both got it from the prefix index.
        #[test]
        fn random_operations_leave_the_pool_free(ops in proptest::collection::vec(op(), 250)) {
            let mut m = BlockManager::new(24, 4, true);
            let mut live: Vec<Seq> = Vec::new();
            for op in &ops {
                match op {
                    Op::Submit(tokens) => {
                        let mut blocks = m.match_prefix(tokens);
                        let need = m.blocks_for(tokens.len()) - blocks.len();
                        match m.allocate_n(need) {
                            Some(b) => {
                                blocks.extend(b);
                                let s = Seq { tokens: tokens.clone(), blocks };
                                register_full(&mut m, &s);
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
                                None => { s.tokens.pop(); }
                            }
                        }
                        let s = &live[i];
                        register_full(&mut m, s);
                    }
                    Op::Finish(i) | Op::Cancel(i) if !live.is_empty() => {
                        let s = live.swap_remove(i % live.len());
                        m.release(&s.blocks);
                    }
                    _ => {}
                }
                // Every block's reference count equals the number of live sequences holding it.
                let mut held = vec![0u32; m.num_blocks()];
                for s in &live {
                    for &b in &s.blocks {
                        held[b as usize] += 1;
                    }
                }
                for (b, &n) in held.iter().enumerate() {
                    prop_assert_eq!(m.refs(b as BlockId), n, "block {}", b);
                }
                prop_assert_eq!(m.stats().used, held.iter().filter(|&&n| n > 0).count());
            }
            for s in live.drain(..) {
                m.release(&s.blocks);
            }
            prop_assert_eq!(m.available(), m.num_blocks());
            prop_assert_eq!(m.stats().used, 0);
        }
    }
}
