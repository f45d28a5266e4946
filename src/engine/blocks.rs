//! Block bookkeeping for the paged KV cache: which blocks are free, which sequences hold which,
//! and the prefix index that lets a new sequence reuse blocks another one computed.
//!
//! Pure bookkeeping, no tensors (those are `model::KvCache`). Owned by the engine worker thread.
//!
//! A *full* block that holds computed K/V is identified by a hash chain over the tokens of every
//! block up to and including it, so equal hashes mean equal prefixes (the tokens are kept and
//! compared too, so a hash collision can never hand out the wrong K/V). Blocks are ref-counted:
//! a prefix hit shares a block between sequences. A block nobody references stays in the index
//! (evictable) until the allocator needs it or the prefix-cache budget drops it, least recently
//! used first. Which blocks are resident is tracked too, so memory follows the working set (see
//! [`BlockManager`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
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
    /// In `cold`: unreferenced, unhashed, its pages not resident (never used, or given back).
    cold: bool,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub total: usize,
    /// Referenced by at least one sequence.
    pub used: usize,
    /// Unreferenced but still holding a cached prefix.
    pub cached: usize,
    /// Blocks whose pages may be resident: all but the never-used and the given-back ones.
    pub resident: usize,
    /// Prompt tokens looked up in the prefix index, and how many were found.
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
}

/// Free blocks kept warm (resident), so that a sequence finishing and the next one starting
/// do not give pages back and fault them in again.
pub const WARM_SLACK_BLOCKS: usize = 16;

/// The block allocator and prefix index.
///
/// Memory follows the work: a block is taken from the warm free list (most recently freed
/// first), then from the cold list (pages not resident; blocks given back before never-used
/// ones), and only then by evicting a cached prefix. Unreferenced cached prefixes are kept
/// within `cache_budget` blocks (oldest dropped first) and the warm free list within
/// [`WARM_SLACK_BLOCKS`]; blocks past either turn cold and are reported by
/// [`BlockManager::take_cooled`] so the owner can give their pages back to the system. So the
/// resident blocks stay within the blocks in use + the slack + the cache budget, and the blocks
/// ever touched within the peak of that, whatever the pool's size.
#[derive(Debug)]
pub struct BlockManager {
    block_size: usize,
    meta: Vec<BlockMeta>,
    /// Unhashed free blocks with resident pages, most recently freed at the back.
    warm: VecDeque<BlockId>,
    /// Free blocks with no resident pages, taken from the back: never-used blocks sit below the
    /// given-back ones, lowest id on top, so the touched ids stay a compact low range.
    cold: Vec<BlockId>,
    /// Unreferenced hashed blocks, oldest first.
    evictable: BTreeMap<u64, BlockId>,
    index: HashMap<u64, BlockId>,
    /// Most blocks `evictable` may hold (the prefix-cache budget).
    cache_budget: usize,
    /// Blocks turned cold since the last `take_cooled`.
    cooled: Vec<BlockId>,
    clock: u64,
    prefix_caching: bool,
    queried: u64,
    hits: u64,
}

impl BlockManager {
    /// A pool of `num_blocks` never-used blocks; the prefix-cache budget is the whole pool
    /// until [`BlockManager::with_cache_budget`] sets one.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            block_size,
            meta: vec![
                BlockMeta {
                    cold: true,
                    ..BlockMeta::default()
                };
                num_blocks
            ],
            warm: VecDeque::new(),
            cold: (0..num_blocks as BlockId).rev().collect(),
            evictable: BTreeMap::new(),
            index: HashMap::new(),
            cache_budget: num_blocks,
            cooled: Vec::new(),
            clock: 0,
            prefix_caching,
            queried: 0,
            hits: 0,
        }
    }

    /// Keeps at most `blocks` unreferenced cached prefix blocks.
    pub fn with_cache_budget(mut self, blocks: usize) -> Self {
        self.cache_budget = blocks;
        self.trim();
        self
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.meta.len()
    }

    /// Blocks an allocation can take now (warm + cold + evictable).
    pub fn available(&self) -> usize {
        self.warm.len() + self.cold.len() + self.evictable.len()
    }

    pub fn stats(&self) -> BlockStats {
        BlockStats {
            total: self.meta.len(),
            used: self.meta.len() - self.available(),
            cached: self.evictable.len(),
            resident: self.meta.len() - self.cold.len(),
            prefix_queried_tokens: self.queried,
            prefix_hit_tokens: self.hits,
        }
    }

    /// Blocks needed to hold `tokens` positions.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Takes one block: the most recently freed warm one, else a cold one, else the least
    /// recently used cached prefix.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = if let Some(id) = self.warm.pop_back() {
            id
        } else if let Some(id) = self.cold.pop() {
            self.meta[id as usize].cold = false;
            id
        } else {
            let (_, id) = self.evictable.pop_first()?;
            self.unhash(id);
            id
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

    /// Drops one reference to each block. Unreferenced hashed blocks stay cached (within the
    /// budget); unreferenced unhashed ones become the most recently freed warm blocks.
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
                    self.warm.push_back(b);
                }
            }
        }
        self.trim();
    }

    /// Drops the oldest cached prefixes past the budget (their blocks join the warm list as
    /// its least recently used), then cools the least recently freed warm blocks past the
    /// slack.
    fn trim(&mut self) {
        while self.evictable.len() > self.cache_budget {
            let Some((_, id)) = self.evictable.pop_first() else {
                break;
            };
            self.unhash(id);
            self.warm.push_front(id);
        }
        while self.warm.len() > WARM_SLACK_BLOCKS {
            let Some(id) = self.warm.pop_front() else {
                break;
            };
            self.meta[id as usize].cold = true;
            self.cold.push(id);
            self.cooled.push(id);
        }
    }

    /// Takes `id` out of the prefix index.
    fn unhash(&mut self, id: BlockId) {
        let m = &mut self.meta[id as usize];
        if let Some(h) = m.hash.take() {
            self.index.remove(&h);
        }
        m.tokens.clear();
    }

    /// The blocks that turned cold since the last call, in the order they did. Some may have
    /// been taken again since: check [`BlockManager::is_cold`] before giving pages back.
    pub fn take_cooled(&mut self) -> Vec<BlockId> {
        std::mem::take(&mut self.cooled)
    }

    /// Whether `block` is free with no resident pages wanted: nobody reads or writes it until
    /// an allocation hands it out again.
    pub fn is_cold(&self, block: BlockId) -> bool {
        self.meta.get(block as usize).is_some_and(|m| m.cold)
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
mod tests;
