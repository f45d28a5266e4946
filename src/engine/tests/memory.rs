//! Memory that follows the work: on a pool far larger than the working set, resident KV blocks
//! (and their pages) stay within the working set + the warm slack + the prefix-cache budget,
//! and blocks reused after their pages went back compute the same tokens.

use super::*;
use crate::engine::blocks::WARM_SLACK_BLOCKS;

/// Runs `prompts` through `w`, `concurrent` at a time, greedy, returning each one's tokens.
fn run_waves(w: &mut Worker<Llama>, prompts: &[Vec<u32>], concurrent: usize) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for (wave, chunk) in prompts.chunks(concurrent).enumerate() {
        let mut rxs: Vec<Rx> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let id = (wave * concurrent + i) as u64;
                submit(w, id, ValidRequest::greedy(p.clone(), 6))
            })
            .collect();
        out.extend(drain(w, &mut rxs).iter().map(|e| tokens_of(e, 0)));
    }
    out
}

/// Regression: freed and evicted blocks were not reused before untouched ones, so the whole
/// pool became resident whatever the working set (RSS 347 MB -> 1.67 GB over 1,800 requests).
#[test]
fn resident_blocks_follow_the_working_set_not_the_pool() {
    const BUDGET_BLOCKS: usize = 6;
    let cfg = EngineConfig {
        block_size: 16,
        ..config(512, 16)
    };
    let block_bytes = tiny().kv_shape().bytes_per_token(cfg.kv_dtype) * cfg.block_size;
    let cfg = EngineConfig {
        prefix_cache_bytes: Some((BUDGET_BLOCKS * block_bytes) as u64),
        ..cfg
    };
    // 20,480 blocks of 2 KiB per pool: pools over 32 MiB, glibc's largest mmap threshold, so
    // they start as fresh zero pages (a smaller calloc may reuse and zero dirty heap memory).
    let mut w = worker(tiny(), 20 * 1024, &cfg);
    // A burst: 16 prompts of 200 tokens at once, 208 blocks in use.
    let burst: Vec<Vec<u32>> = (100..116).map(|i| prompt(200, i)).collect();
    run_waves(&mut w, &burst, 16);
    // Then 60 distinct prompts of 40 tokens, 4 at a time: 3 blocks each, 2 full and cached.
    let prompts: Vec<Vec<u32>> = (0..60).map(|i| prompt(40, i)).collect();
    let first = run_waves(&mut w, &prompts, 4);
    let st = w.block_manager().stats();
    assert_eq!((st.used, st.cached), (0, BUDGET_BLOCKS));
    assert!(
        st.resident <= WARM_SLACK_BLOCKS + BUDGET_BLOCKS,
        "{st:?}: 60 requests of 3 blocks, 4 at a time"
    );
    // Their pages really went back: the burst's 208 blocks (1.6 MiB) are not resident, only
    // the pages the resident blocks overlap (a block of 2 KiB per pool overlaps at most 2).
    let resident_bytes = w.cache_resident_bytes();
    let pools = 2 * tiny_config().num_layers;
    let limit = (st.resident + 1) * pools * 2 * 4096;
    assert!(resident_bytes <= limit, "{resident_bytes} > {limit} bytes");
    // Blocks reused after their pages went back (and cached hits) give the same tokens. In
    // reverse, so the prompts whose prefixes are still cached come first.
    let reversed: Vec<Vec<u32>> = prompts.iter().rev().cloned().collect();
    let mut again = run_waves(&mut w, &reversed, 4);
    again.reverse();
    assert_eq!(first, again);
    let st = w.block_manager().stats();
    assert_eq!(
        st.prefix_hit_tokens,
        (BUDGET_BLOCKS * 16) as u64,
        "the last prompts' prefixes were cached"
    );
    assert!(st.resident <= WARM_SLACK_BLOCKS + BUDGET_BLOCKS, "{st:?}");
}

#[test]
fn a_zero_budget_keeps_no_prefix_once_released() {
    let cfg = EngineConfig {
        prefix_cache_bytes: Some(0),
        block_size: 4,
        ..config(64, 2)
    };
    let mut w = worker(tiny(), 256, &cfg);
    let p = prompt(20, 7);
    let first = run_waves(&mut w, std::slice::from_ref(&p), 1);
    assert_eq!(w.block_manager().stats().cached, 0);
    let again = run_waves(&mut w, std::slice::from_ref(&p), 1);
    assert_eq!(first, again);
    assert_eq!(w.block_manager().stats().prefix_hit_tokens, 0);
}
