//! The engine on the real model: batch invariance under concurrency, and prefix reuse.

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use wick::engine::{Engine, EngineConfig, EngineHandle, Event, Usage, ValidRequest};
use wick::tokenizer::Tokenizer;

use crate::common::{ids, model_path, reference};

fn engine() -> Option<(EngineHandle, Arc<Tokenizer>)> {
    let path = model_path()?;
    let loaded = wick::model::load(path.to_str().expect("utf-8"), &Device::Cpu).expect("loads");
    let config = EngineConfig {
        kv_cache_bytes: Some(256 << 20),
        ..EngineConfig::default()
    };
    let tokenizer = Arc::new(loaded.tokenizer);
    let engine = Engine::start(loaded.model, config).expect("starts");
    Some((engine, tokenizer))
}

/// Runs a request to the end: its token ids, text and usage.
fn collect(mut s: wick::engine::EventStream, tok: &Arc<Tokenizer>) -> (Vec<u32>, String, Usage) {
    let (mut toks, mut usage) = (Vec::new(), Usage::default());
    while let Some(ev) = s.blocking_recv() {
        match ev {
            Event::Token { token, .. } => toks.push(token.id),
            Event::Finished { finish, .. } => usage = finish.usage,
            Event::Failed { error, .. } => panic!("request failed: {error}"),
            Event::PromptScores { .. } => {}
        }
    }
    let text = tok.decode(&toks, true);
    (toks, text, usage)
}

/// wick is batch-invariant: a sequence's logits do not depend on what shares its step, so 16
/// concurrent greedy requests give exactly what each gives alone.
#[test]
fn sixteen_concurrent_greedy_requests_equal_each_alone() {
    let Some((engine, tok)) = engine() else {
        return;
    };
    let cases = reference("greedy_cases.json");
    let prompts: Vec<Vec<u32>> = cases["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| ids(&c["prompt_ids"]))
        .filter(|p| p.len() < 100)
        .take(16)
        .collect();
    assert_eq!(prompts.len(), 16);
    let max_tokens = 12;
    let alone: Vec<_> = prompts
        .iter()
        .map(|p| {
            collect(
                engine
                    .submit(ValidRequest::greedy(p.clone(), max_tokens))
                    .expect("submit"),
                &tok,
            )
        })
        .collect();
    let streams: Vec<_> = prompts
        .iter()
        .map(|p| {
            engine
                .submit(ValidRequest::greedy(p.clone(), max_tokens))
                .expect("submit")
        })
        .collect();
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = streams
            .into_iter()
            .map(|st| s.spawn(|| collect(st, &tok)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.0, t.0, "request {i}: tokens differ under load");
        assert_eq!(a.1, t.1);
        assert_eq!(t.0.len(), max_tokens);
    }
    // Every block released (the stats are published at the end of the last step).
    let t = std::time::Instant::now();
    while engine.stats().kv_blocks_used != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.shutdown(Duration::from_secs(5));
}

#[test]
fn a_shared_200_token_prefix_is_served_from_the_cache() {
    let Some((engine, tok)) = engine() else {
        return;
    };
    let text = reference("perplexity.json");
    let tokens = ids(&text["token_ids"]);
    let prefix = &tokens[..200];
    let a: Vec<u32> = prefix.iter().chain(&tokens[1000..1020]).copied().collect();
    let b: Vec<u32> = prefix.iter().chain(&tokens[2000..2013]).copied().collect();
    let (_, _, ua) = collect(
        engine.submit(ValidRequest::greedy(a, 2)).expect("submit"),
        &tok,
    );
    assert_eq!(ua.cached_tokens, 0);
    let before = engine.stats().prefill_tokens;
    let (_, _, ub) = collect(
        engine
            .submit(ValidRequest::greedy(b.clone(), 2))
            .expect("submit"),
        &tok,
    );
    assert!(
        ub.cached_tokens >= 192,
        "cached {} of 200",
        ub.cached_tokens
    );
    let prefilled = (engine.stats().prefill_tokens - before) as usize;
    assert_eq!(
        prefilled,
        b.len() - ub.cached_tokens,
        "only the rest was prefilled"
    );
    let st = engine.stats();
    assert!(st.prefix_hit_tokens >= 192);
    engine.shutdown(Duration::from_secs(5));
}
