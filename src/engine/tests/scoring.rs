//! Prompt scoring (`prompt_logprobs`, behind `echo`) and embedding jobs, on the worker stepped
//! by hand and on the engine thread.

use tokio::sync::oneshot;

use super::*;
use crate::engine::embed::{mean_normalised, EmbedResult, EmbedSubmission};
use crate::model::{LogitsWanted, SeqChunk};

fn scored(events: &[Event]) -> Vec<Token> {
    let all: Vec<&Vec<Token>> = events
        .iter()
        .filter_map(|e| match e {
            Event::PromptScores { tokens } => Some(tokens),
            _ => None,
        })
        .collect();
    assert_eq!(all.len(), 1, "one PromptScores event: {events:?}");
    all[0].clone()
}

/// Runs `p` through a fresh tiny model in one chunk: every row's logits, or hidden states.
fn full_rows(p: &[u32], hidden: bool) -> Vec<Vec<f32>> {
    let model = tiny();
    let kv = KvCacheConfig {
        num_blocks: 32,
        block_size: 4,
        dtype: DType::F32,
    };
    let mut cache = KvCache::new(model.kv_shape(), kv, &Device::Cpu).unwrap();
    let blocks: Vec<u32> = (0..32).collect();
    let batch = Batch::new(vec![SeqChunk {
        tokens: p,
        start_pos: 0,
        blocks: &blocks,
        logits: LogitsWanted::All,
    }]);
    let out = match hidden {
        true => model.forward_hidden(&batch, &mut cache),
        false => model.forward(&batch, &mut cache),
    };
    out.unwrap().to_vec2().unwrap()
}

#[test]
fn prompt_logprobs_score_every_token_in_chunks_and_bypass_the_prefix_cache() {
    let cfg = config(8, 4); // a 21-token prompt prefills in three chunks
    let mut w = worker(tiny(), 64, &cfg);
    let p = prompt(21, 3);
    // The same prompt first, without scoring: its blocks are now in the prefix cache.
    let mut rxs = vec![submit(&mut w, 0, ValidRequest::greedy(p.clone(), 3))];
    let plain = drain(&mut w, &mut rxs);
    let req = ValidRequest {
        prompt_logprobs: Some(3),
        ..ValidRequest::greedy(p.clone(), 3)
    };
    let mut rxs = vec![submit(&mut w, 1, req)];
    let ev = drain(&mut w, &mut rxs);
    assert!(matches!(ev[0][0], Event::PromptScores { .. }));
    let got = scored(&ev[0]);
    assert_eq!(got.len(), 21);
    assert_eq!((got[0].id, got[0].logprob), (p[0], None));
    assert!(got[0].top.is_empty());
    let want = full_rows(&p, false);
    for j in 1..21 {
        let (lp, top) = sampling::score(&want[j - 1], p[j], 3);
        assert_eq!(got[j].id, p[j]);
        let d = (got[j].logprob.expect("scored") - lp).abs();
        assert!(d < 1e-3, "token {j}: {d}");
        let ids = |t: &[sampling::TokenLogprob]| t.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(&got[j].top), ids(&top), "token {j}");
    }
    assert_eq!(finish_of(&ev[0], 0).1.cached_tokens, 0, "computed afresh");
    assert_eq!(tokens_of(&ev[0], 0), tokens_of(&plain[0], 0));
    assert_all_free(&w);
}

#[test]
fn max_tokens_zero_scores_the_prompt_and_generates_nothing() {
    let cfg = config(64, 4);
    let mut w = worker(tiny(), 64, &cfg);
    let req = ValidRequest {
        prompt_logprobs: Some(0),
        n: 2,
        ..ValidRequest::greedy(prompt(9, 1), 0)
    };
    let mut rxs = vec![submit(&mut w, 0, req)];
    let ev = drain(&mut w, &mut rxs);
    let got = scored(&ev[0]);
    assert_eq!(got.len(), 9);
    assert!(got[1..].iter().all(|t| t.top.is_empty()));
    for index in 0..2 {
        assert!(tokens_of(&ev[0], index).is_empty());
        let (reason, usage) = finish_of(&ev[0], index);
        assert_eq!((reason, usage.completion_tokens), (FinishReason::Length, 0));
    }
    assert_all_free(&w);
}

#[test]
fn prompt_scores_survive_preemption_and_come_once() {
    // A long generation runs first; the scoring request comes later (so it is the youngest,
    // the one preempted) and its prefill outgrows the pool while the first one decodes.
    let cfg = config(8, 4);
    let long = ValidRequest::greedy(prompt(20, 0), 40);
    let scoring = ValidRequest {
        prompt_logprobs: Some(2),
        ..ValidRequest::greedy(prompt(30, 1), 3)
    };
    let run = |blocks: usize, head_start: usize| {
        let mut w = worker(tiny(), blocks, &cfg);
        let mut rxs = vec![submit(&mut w, 0, long.clone())];
        for _ in 0..head_start {
            w.step();
        }
        rxs.push(submit(&mut w, 1, scoring.clone()));
        let ev = drain(&mut w, &mut rxs);
        assert_all_free(&w);
        (ev, w.counters().preemptions.load(Ordering::Relaxed))
    };
    let (want, none) = run(64, 0);
    assert_eq!(none, 0);
    let mut preempted = 0;
    for (blocks, head_start) in [(17, 20), (18, 24), (16, 12), (17, 28)] {
        let (got, p) = run(blocks, head_start);
        preempted += p;
        // Chunk boundaries differ between the runs: equal up to float noise.
        let (g, w) = (scored(&got[1]), scored(&want[1]));
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(&w) {
            assert_eq!(a.id, b.id);
            let d = (a.logprob.unwrap_or(0.0) - b.logprob.unwrap_or(0.0)).abs();
            assert!(d < 1e-4, "{blocks} blocks: {d}");
        }
        for i in 0..2 {
            assert_eq!(
                tokens_of(&got[i], 0),
                tokens_of(&want[i], 0),
                "{blocks} blocks"
            );
        }
    }
    assert!(preempted > 0, "some pool was small enough to preempt");
}

fn embed(w: &mut Worker<Llama>, inputs: Vec<Vec<u32>>) -> oneshot::Receiver<EmbedResult> {
    let (reply, rx) = oneshot::channel();
    let tokens = inputs.iter().map(Vec::len).sum();
    let ticket = w.queue().try_reserve(tokens).expect("room in the queue");
    w.add_embed(EmbedSubmission {
        inputs,
        reply,
        ticket,
    });
    rx
}

#[test]
fn embeddings_are_pooled_normalised_and_independent_of_the_batch() {
    let cfg = config(8, 4);
    let mut w = worker(tiny(), 64, &cfg);
    let inputs = vec![prompt(13, 1), prompt(5, 2), prompt(13, 1)];
    // Generation runs alongside and is not disturbed.
    let mut rxs = vec![submit(&mut w, 0, ValidRequest::greedy(prompt(9, 5), 6))];
    let mut rx = embed(&mut w, inputs.clone());
    let ev = drain(&mut w, &mut rxs);
    assert_eq!(tokens_of(&ev[0], 0).len(), 6);
    let all = rx.try_recv().unwrap().unwrap();
    assert_eq!(all.len(), 3);
    for v in &all {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(v.len(), tiny_config().hidden_size);
    }
    assert_eq!(all[0], all[2], "identical inputs, identical bits");
    assert_ne!(all[0], all[1]);
    for (input, batched) in inputs.iter().zip(&all) {
        let mut rx = embed(&mut w, vec![input.clone()]);
        drain(&mut w, &mut []);
        let alone = rx.try_recv().unwrap().unwrap().remove(0);
        let d = alone
            .iter()
            .zip(batched)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "batched vs alone: {d}");
        // The mean over one full forward of the input.
        let rows = full_rows(input, true);
        let mut sum = vec![0.0f64; rows[0].len()];
        for r in &rows {
            sum.iter_mut().zip(r).for_each(|(s, x)| *s += f64::from(*x));
        }
        let want = mean_normalised(&sum, rows.len());
        let d = want
            .iter()
            .zip(&alone)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-4, "chunked vs one forward: {d}");
    }
    assert_eq!(w.counters().embed_tokens.load(Ordering::Relaxed), 2 * 31);
    assert_all_free(&w);
}

#[test]
fn a_dropped_embedding_job_is_cancelled_and_frees_its_blocks() {
    let cfg = config(4, 4);
    let mut w = worker(tiny(), 64, &cfg);
    let rx = embed(&mut w, vec![prompt(40, 0)]);
    w.step();
    assert!(w.block_manager().stats().used > 0);
    drop(rx);
    w.step();
    assert!(w.is_idle());
    assert_eq!(w.counters().cancellations.load(Ordering::Relaxed), 1);
    assert_all_free(&w);
}

#[test]
fn the_engine_embeds_and_fails_inputs_the_model_cannot_run() {
    let engine = Engine::start(tiny(), config(64, 8)).unwrap();
    assert_eq!(engine.limits().hidden_size, tiny_config().hidden_size);
    assert_eq!(engine.limits().max_context, 512);
    let v = engine
        .embed(vec![prompt(7, 0), prompt(3, 1)])
        .unwrap()
        .blocking_wait()
        .unwrap();
    assert_eq!(v.len(), 2);
    // Validation refuses these first; the engine fails them rather than run them.
    for bad in [vec![], vec![vec![1], vec![]], vec![vec![100_000]]] {
        let got = engine.embed(bad.clone()).expect("queued").blocking_wait();
        assert!(got.is_err(), "{bad:?}");
    }
    let t = Instant::now();
    while engine.stats().embed_jobs != 0 || engine.stats().queue_depth != 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    engine.shutdown(Duration::from_secs(5));
}
