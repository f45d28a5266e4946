//! Engine tests on tiny random-weight Llamas: the worker stepped by hand (cancellation in every
//! state, budgets, FCFS, preemption, a failing forward), then the engine thread end to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use super::worker::{Submission, Worker};
use super::*;
use crate::model::testing::{random_llama, tiny_config};
use crate::model::{Batch, KvShape, Llama, ModelError};
use crate::sampling;

fn tiny() -> Llama {
    random_llama(&tiny_config(), 42, None, &Device::Cpu)
}

fn config(max_batch_tokens: usize, max_running: usize) -> EngineConfig {
    EngineConfig {
        max_batch_tokens,
        max_running,
        block_size: 4,
        kv_dtype: DType::F32,
        ..EngineConfig::default()
    }
}

fn worker<M: CausalLm>(model: M, blocks: usize, cfg: &EngineConfig) -> Worker<M> {
    let kv = KvCacheConfig {
        num_blocks: blocks,
        block_size: cfg.block_size,
        dtype: cfg.kv_dtype,
    };
    let cache = KvCache::new(model.kv_shape(), kv, model.device()).unwrap();
    let shared = Arc::new(Shared::new(cfg.clone(), &model, &cache));
    Worker::new(model, cache, shared)
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + seed * 31 + 1) % 90 + 2)
        .collect()
}

type Rx = EventStream;

fn submit<M: CausalLm>(w: &mut Worker<M>, id: u64, req: ValidRequest) -> Rx {
    let (events, rx) = EventStream::new(req.n);
    let ticket = w
        .queue()
        .try_reserve(req.prompt.len())
        .expect("room in the queue");
    w.add(Submission {
        id,
        req,
        events,
        ticket,
        arrived: Instant::now(),
    });
    rx
}

/// Steps until idle (or a step limit), returning every event per request in order.
fn drain<M: CausalLm>(w: &mut Worker<M>, rxs: &mut [Rx]) -> Vec<Vec<Event>> {
    let mut out = vec![Vec::new(); rxs.len()];
    for _ in 0..10_000 {
        if w.is_idle() {
            break;
        }
        w.step();
        for (o, rx) in out.iter_mut().zip(rxs.iter_mut()) {
            while let Ok(ev) = rx.try_recv() {
                o.push(ev);
            }
        }
    }
    assert!(w.is_idle(), "the worker did not finish");
    out
}

fn tokens_of(events: &[Event], index: usize) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Token { index: i, token } if *i == index => Some(token.id),
            _ => None,
        })
        .collect()
}

fn finish_of(events: &[Event], index: usize) -> (FinishReason, Usage) {
    events
        .iter()
        .find_map(|e| match e {
            Event::Finished { index: i, finish } if *i == index => {
                Some((finish.reason, finish.usage))
            }
            _ => None,
        })
        .expect("a Finished event")
}

fn assert_all_free<M: CausalLm>(w: &Worker<M>) {
    let m = w.block_manager();
    assert_eq!(m.available(), m.num_blocks(), "every block is free again");
    assert_eq!(m.stats().used, 0);
}

#[test]
fn a_request_runs_to_max_tokens_and_frees_its_blocks() {
    let cfg = config(64, 4);
    let mut w = worker(tiny(), 64, &cfg);
    let mut rxs = vec![submit(&mut w, 0, ValidRequest::greedy(prompt(10, 0), 7))];
    let ev = drain(&mut w, &mut rxs);
    assert_eq!(tokens_of(&ev[0], 0).len(), 7);
    let (reason, usage) = finish_of(&ev[0], 0);
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage.prompt_tokens, 10);
    assert_eq!(usage.completion_tokens, 7);
    assert_all_free(&w);
}

#[test]
fn engine_output_equals_single_sequence_generation() {
    // The worker's greedy tokens are the plain generate loop's, with other requests around.
    let cfg = config(16, 8);
    let mut w = worker(tiny(), 64, &cfg);
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| prompt(5 + 9 * i, i as u32)).collect();
    let mut rxs: Vec<Rx> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| submit(&mut w, i as u64, ValidRequest::greedy(p.clone(), 12)))
        .collect();
    let ev = drain(&mut w, &mut rxs);
    let model = tiny();
    for (p, e) in prompts.iter().zip(&ev) {
        let opts = crate::model::generate::GenerateOptions {
            max_tokens: 12,
            sampling: sampling::SamplingParams::greedy(),
            stop_ids: Vec::new(),
            prefill_chunk: 512,
            kv_dtype: DType::F32,
        };
        let alone = crate::model::generate::generate(&model, p, &opts, |_| true).unwrap();
        let alone: Vec<u32> = alone.tokens.iter().map(|t| t.id).collect();
        assert_eq!(tokens_of(e, 0), alone);
    }
    assert_all_free(&w);
}

#[test]
fn every_step_respects_the_token_budget_and_running_limit() {
    let cfg = config(12, 2);
    let mut w = worker(tiny(), 64, &cfg);
    let _rxs: Vec<Rx> = (0..4)
        .map(|i| submit(&mut w, i, ValidRequest::greedy(prompt(30, i as u32), 3)))
        .collect();
    let mut steps = 0;
    while !w.is_idle() && steps < 1000 {
        let r = w.step();
        assert!(r.tokens <= 12, "step used {} tokens", r.tokens);
        assert!(w.num_running() <= 2);
        steps += 1;
    }
    assert!(w.is_idle());
    // 4 prompts of 30 tokens in chunks of at most 12 take at least 10 steps.
    assert!(steps >= 10, "{steps} steps");
    assert_all_free(&w);
}

/// Steps until idle; the requests in the order they finished.
fn finish_order<M: CausalLm>(w: &mut Worker<M>, rxs: &mut [Rx]) -> Vec<usize> {
    let mut order = Vec::new();
    while !w.is_idle() {
        w.step();
        for (i, rx) in rxs.iter_mut().enumerate() {
            while let Ok(ev) = rx.try_recv() {
                if matches!(ev, Event::Finished { .. }) {
                    order.push(i);
                }
            }
        }
    }
    order
}

#[test]
fn requests_are_served_first_come_first_served() {
    let cfg = config(64, 1);
    let mut w = worker(tiny(), 64, &cfg);
    let mut rxs: Vec<Rx> = (0..3)
        .map(|i| submit(&mut w, i, ValidRequest::greedy(prompt(6, i as u32), 4)))
        .collect();
    let order = finish_order(&mut w, &mut rxs);
    assert_eq!(order, vec![0, 1, 2]);
    // A higher priority jumps the queue (but never preempts a running sequence).
    let mut rxs = [
        submit(&mut w, 10, ValidRequest::greedy(prompt(6, 1), 2)),
        submit(&mut w, 11, ValidRequest::greedy(prompt(6, 2), 2)),
        submit(
            &mut w,
            12,
            ValidRequest {
                priority: 5,
                ..ValidRequest::greedy(prompt(6, 3), 2)
            },
        ),
    ];
    let order = finish_order(&mut w, &mut rxs);
    assert_eq!(order, vec![2, 0, 1]);
}

#[test]
fn cancellation_frees_every_block_while_queued_prefilling_or_decoding() {
    let cfg = config(8, 2);
    let mut w = worker(tiny(), 64, &cfg);
    // 0 decodes, 1 is mid-prefill (40 tokens at 8 per step), 2 waits (max_running 2).
    let rx0 = submit(&mut w, 0, ValidRequest::greedy(prompt(4, 0), 50));
    let rx1 = submit(&mut w, 1, ValidRequest::greedy(prompt(40, 1), 50));
    let rx2 = submit(&mut w, 2, ValidRequest::greedy(prompt(8, 2), 50));
    for _ in 0..3 {
        w.step();
    }
    assert_eq!(w.num_running(), 2);
    assert_eq!(w.num_waiting(), 1);
    assert!(w.block_manager().stats().used > 0);
    drop(rx2);
    w.step();
    assert_eq!(w.num_waiting(), 0, "the queued request is gone");
    drop(rx1);
    w.step();
    assert_eq!(w.num_running(), 1, "the prefilling request is gone");
    drop(rx0);
    w.step();
    assert!(w.is_idle());
    assert_all_free(&w);
    assert_eq!(w.counters().cancellations.load(Ordering::Relaxed), 3);
}

#[test]
fn a_preempted_sequence_resumes_with_exactly_the_tokens_of_an_uninterrupted_run() {
    let cfg = config(64, 4);
    let reqs: Vec<ValidRequest> = (0..3)
        .map(|i| ValidRequest::greedy(prompt(12, i), 40))
        .collect();
    // Plenty of blocks: no preemption.
    let mut big = worker(tiny(), 128, &cfg);
    let mut rxs: Vec<Rx> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| submit(&mut big, i as u64, r.clone()))
        .collect();
    let want = drain(&mut big, &mut rxs);
    assert_eq!(big.counters().preemptions.load(Ordering::Relaxed), 0);
    // 3 sequences of up to 52 tokens need 39 blocks of 4; give them 20.
    let mut small = worker(tiny(), 20, &cfg);
    let mut rxs: Vec<Rx> = reqs
        .iter()
        .enumerate()
        .map(|(i, r)| submit(&mut small, i as u64, r.clone()))
        .collect();
    let got = drain(&mut small, &mut rxs);
    assert!(
        small.counters().preemptions.load(Ordering::Relaxed) > 0,
        "the small pool preempted"
    );
    for i in 0..3 {
        assert_eq!(tokens_of(&got[i], 0), tokens_of(&want[i], 0), "request {i}");
        assert_eq!(finish_of(&got[i], 0).0, FinishReason::Length);
    }
    assert_all_free(&small);
}

/// A model whose `fail_on`-th forward call fails.
struct Flaky {
    inner: Llama,
    calls: AtomicUsize,
    fail_on: usize,
}

impl CausalLm for Flaky {
    fn forward(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.fail_on {
            return Err(ModelError::InvalidBatch("injected failure".into()));
        }
        self.inner.forward(batch, cache)
    }
    fn forward_hidden(&self, batch: &Batch<'_>, cache: &mut KvCache) -> Result<Tensor, ModelError> {
        self.inner.forward_hidden(batch, cache)
    }
    fn hidden_size(&self) -> usize {
        self.inner.hidden_size()
    }
    fn kv_shape(&self) -> KvShape {
        self.inner.kv_shape()
    }
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_context(&self) -> usize {
        self.inner.max_context()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
}

#[test]
fn the_worker_survives_a_failing_forward() {
    let cfg = config(64, 4);
    let model = Flaky {
        inner: tiny(),
        calls: AtomicUsize::new(0),
        fail_on: 2,
    };
    let mut w = worker(model, 64, &cfg);
    let mut rxs = vec![
        submit(&mut w, 0, ValidRequest::greedy(prompt(5, 0), 6)),
        submit(&mut w, 1, ValidRequest::greedy(prompt(7, 1), 6)),
    ];
    let ev = drain(&mut w, &mut rxs);
    for e in &ev {
        assert!(
            matches!(e.last(), Some(Event::Failed { error, .. }) if error.contains("injected failure")),
            "{e:?}"
        );
    }
    assert_all_free(&w);
    // The next request is served normally.
    let mut rxs = vec![submit(&mut w, 2, ValidRequest::greedy(prompt(5, 0), 6))];
    let ev = drain(&mut w, &mut rxs);
    assert_eq!(finish_of(&ev[0], 0).0, FinishReason::Length);
    assert_eq!(w.counters().failures.load(Ordering::Relaxed), 2);
}

#[test]
fn stop_tokens_end_a_choice_and_are_not_emitted() {
    let cfg = config(64, 4);
    let mut w = worker(tiny(), 64, &cfg);
    let mut rxs = vec![submit(&mut w, 0, ValidRequest::greedy(prompt(9, 3), 20))];
    let free_run = drain(&mut w, &mut rxs);
    let toks = tokens_of(&free_run[0], 0);
    // Make the 4th generated token a stop token.
    let req = ValidRequest {
        stop_ids: vec![toks[3]],
        ..ValidRequest::greedy(prompt(9, 3), 20)
    };
    let mut rxs = vec![submit(&mut w, 1, req)];
    let ev = drain(&mut w, &mut rxs);
    let first_stop = toks.iter().position(|&t| t == toks[3]).unwrap();
    assert_eq!(tokens_of(&ev[0], 0), toks[..first_stop].to_vec());
    let (reason, usage) = finish_of(&ev[0], 0);
    assert_eq!(reason, FinishReason::Stop);
    assert_eq!(usage.completion_tokens, first_stop + 1);
}

#[test]
fn a_shared_prefix_is_reused_and_reported_as_cached() {
    let cfg = config(512, 4);
    let mut w = worker(tiny(), 128, &cfg);
    let system = prompt(50, 9);
    let mut a = system.clone();
    a.extend(prompt(7, 1));
    let mut b = system.clone();
    b.extend(prompt(5, 2));
    let mut rxs = vec![submit(&mut w, 0, ValidRequest::greedy(a, 3))];
    let first = drain(&mut w, &mut rxs);
    assert_eq!(finish_of(&first[0], 0).1.cached_tokens, 0);
    let prefilled = w.counters().prefill_tokens.load(Ordering::Relaxed);
    let mut rxs = vec![submit(&mut w, 1, ValidRequest::greedy(b.clone(), 3))];
    let second = drain(&mut w, &mut rxs);
    // 50 shared tokens = 12 full blocks of 4.
    assert_eq!(finish_of(&second[0], 0).1.cached_tokens, 48);
    let prefilled_b = w.counters().prefill_tokens.load(Ordering::Relaxed) - prefilled;
    assert_eq!(
        prefilled_b as usize,
        b.len() - 48,
        "only the rest was computed"
    );
    // And the reuse changes nothing: same tokens as without the prefix cache.
    let mut plain = worker(
        tiny(),
        128,
        &EngineConfig {
            prefix_caching: false,
            ..cfg
        },
    );
    let mut rxs = vec![submit(&mut plain, 0, ValidRequest::greedy(b, 3))];
    let fresh = drain(&mut plain, &mut rxs);
    assert_eq!(tokens_of(&second[0], 0), tokens_of(&fresh[0], 0));
}

#[test]
fn parallel_choices_share_the_prompt_blocks() {
    let cfg = config(512, 8);
    let mut w = worker(tiny(), 128, &cfg);
    let req = ValidRequest {
        n: 3,
        sampling: sampling::SamplingParams {
            temperature: 1.0,
            seed: Some(7),
            ..sampling::SamplingParams::default()
        },
        ..ValidRequest::greedy(prompt(41, 4), 6)
    };
    let mut rxs = vec![submit(&mut w, 0, req)];
    let ev = drain(&mut w, &mut rxs);
    assert_eq!(finish_of(&ev[0], 0).1.cached_tokens, 0);
    for i in 1..3 {
        assert_eq!(tokens_of(&ev[0], i).len(), 6);
        assert_eq!(
            finish_of(&ev[0], i).1.cached_tokens,
            40,
            "choice {i} reused the prompt"
        );
    }
    // Choice i samples with seed + i: each equals a single-choice request with that seed.
    for i in 0..3u64 {
        let single = ValidRequest {
            sampling: sampling::SamplingParams {
                temperature: 1.0,
                seed: Some(7 + i),
                ..sampling::SamplingParams::default()
            },
            ..ValidRequest::greedy(prompt(41, 4), 6)
        };
        let mut rxs = vec![submit(&mut w, 10 + i, single)];
        let alone = drain(&mut w, &mut rxs);
        assert_eq!(
            tokens_of(&alone[0], 0),
            tokens_of(&ev[0], i as usize),
            "choice {i}"
        );
    }
    assert_all_free(&w);
}

// ---------------------------------------------------------------- constrained decoding

/// A schema with a required string, integer and enum, compiled over the tiny model's
/// byte-level stand-in vocabulary (id 0 the end token, then printable ASCII).
fn person_constraint() -> crate::constraint::Constraint {
    let schema = serde_json::json!({"type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12},
                       "age": {"type": "integer", "minimum": 0, "maximum": 150},
                       "kind": {"enum": ["cat", "dog"]}},
        "required": ["name", "age", "kind"], "additionalProperties": false});
    crate::constraint::tests::ascii_compiler(96)
        .compile(&crate::constraint::Grammar::JsonSchema(schema))
        .expect("compiles")
}

fn ascii_text(ids: &[u32]) -> String {
    let vocab = crate::constraint::tests::ascii_vocab(96);
    let bytes: Vec<u8> = ids
        .iter()
        .flat_map(|&i| vocab[i as usize].clone())
        .collect();
    String::from_utf8(bytes).expect("ascii")
}

fn sampled_person(n: usize, max_tokens: usize, seed: u64) -> ValidRequest {
    ValidRequest {
        n,
        sampling: sampling::SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..sampling::SamplingParams::default()
        },
        stop_ids: vec![0],
        constraint: Some(person_constraint()),
        ..ValidRequest::greedy(prompt(9, 2), max_tokens)
    }
}

#[test]
fn random_weights_under_a_schema_still_give_valid_json_in_every_choice() {
    let cfg = config(64, 4);
    let mut w = worker(tiny(), 128, &cfg);
    let mut rxs = vec![submit(&mut w, 0, sampled_person(2, 200, 11))];
    let ev = drain(&mut w, &mut rxs);
    for i in 0..2 {
        let text = ascii_text(&tokens_of(&ev[0], i));
        assert_eq!(finish_of(&ev[0], i).0, FinishReason::Stop, "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(
            v["name"].as_str().is_some_and(|s| s.chars().count() <= 12),
            "{text}"
        );
        assert!(
            v["age"]
                .as_f64()
                .is_some_and(|a| a.fract() == 0.0 && (0.0..=150.0).contains(&a)),
            "{text}"
        );
        assert!(v["kind"] == "cat" || v["kind"] == "dog", "{text}");
        assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{text}");
    }
    // The same request unconstrained: the random model's text is no JSON at all.
    let mut rxs = vec![submit(
        &mut w,
        1,
        ValidRequest {
            constraint: None,
            ..sampled_person(1, 40, 11)
        },
    )];
    let ev = drain(&mut w, &mut rxs);
    let text = ascii_text(&tokens_of(&ev[0], 0));
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text:?}"
    );
    assert_all_free(&w);
}

/// max_tokens cuts a constrained choice like any other: finish `length`, and the text is the
/// grammar's prefix so far (it need not parse).
#[test]
fn max_tokens_cuts_a_constrained_choice_with_length() {
    let cfg = config(64, 4);
    let mut w = worker(tiny(), 128, &cfg);
    let mut rxs = vec![submit(&mut w, 0, sampled_person(1, 5, 3))];
    let ev = drain(&mut w, &mut rxs);
    let (reason, usage) = finish_of(&ev[0], 0);
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(usage.completion_tokens, 5);
    let text = ascii_text(&tokens_of(&ev[0], 0));
    assert_eq!(text, "{\"nam", "the grammar's forced start, cut");
}

/// Preemption recomputes K/V but never re-feeds the matcher: the constrained tokens equal those
/// of an uninterrupted run, and they are valid.
#[test]
fn a_preempted_constrained_sequence_keeps_its_matcher_in_step() {
    let cfg = config(64, 4);
    let reqs: Vec<ValidRequest> = (0..3).map(|i| sampled_person(1, 60, 20 + i)).collect();
    let run = |blocks: usize| {
        let mut w = worker(tiny(), blocks, &cfg);
        let mut rxs: Vec<Rx> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| submit(&mut w, i as u64, r.clone()))
            .collect();
        let ev = drain(&mut w, &mut rxs);
        assert_all_free(&w);
        (ev, w.counters().preemptions.load(Ordering::Relaxed))
    };
    let (want, none) = run(128);
    assert_eq!(none, 0);
    // 3 sequences of up to 69 tokens need 54 blocks of 4; give them 24.
    let (got, preempted) = run(24);
    assert!(preempted > 0, "the small pool preempted");
    for i in 0..3 {
        assert_eq!(tokens_of(&got[i], 0), tokens_of(&want[i], 0), "request {i}");
        if finish_of(&got[i], 0).0 == FinishReason::Stop {
            let text = ascii_text(&tokens_of(&got[i], 0));
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "{text}"
            );
        }
    }
}

// ---------------------------------------------------------------- the engine thread

#[test]
fn a_request_the_model_cannot_run_fails_every_choice_and_gives_its_place_back() {
    // Validation refuses these first; the engine still must not hand them to the model.
    let engine = Engine::start(tiny(), config(64, 4)).unwrap();
    for prompt in [vec![], vec![1, 999]] {
        let mut s = engine
            .submit(ValidRequest {
                n: 2,
                ..ValidRequest::greedy(prompt, 4)
            })
            .expect("queued");
        let mut failed = 0;
        while let Some(ev) = s.blocking_recv() {
            assert!(matches!(ev, Event::Failed { .. }), "{ev:?}");
            failed += 1;
        }
        assert_eq!(failed, 2);
    }
    let t = Instant::now();
    while engine.stats().queue_depth != 0 {
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
fn a_full_queue_fails_fast_and_frees_up() {
    let cfg = EngineConfig {
        max_queue: 2,
        ..config(8, 1)
    };
    let engine = Engine::start(tiny(), cfg).unwrap();
    // Keep the worker busy with a long request, then fill the queue.
    let busy = engine
        .submit(ValidRequest::greedy(prompt(200, 0), 200))
        .unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        match engine.submit(ValidRequest::greedy(prompt(20, i), 5)) {
            Ok(s) => held.push(s),
            Err(SubmitError::QueueFull(_)) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 3, "refused {refused}");
    // Cancelling frees the places.
    drop(busy);
    drop(held);
    let t = Instant::now();
    loop {
        if engine.stats().queue_depth == 0 && engine.stats().running == 0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{:?}",
            engine.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut s = engine
        .submit(ValidRequest::greedy(prompt(5, 0), 3))
        .unwrap();
    let mut n = 0;
    while let Some(ev) = s.blocking_recv() {
        if matches!(ev, Event::Token { .. }) {
            n += 1;
        }
    }
    assert_eq!(n, 3);
    // The stats are published at the end of the step that sent the last event.
    let t = Instant::now();
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
fn shutdown_finishes_or_cancels_in_flight_work() {
    let engine = Engine::start(tiny(), config(8, 4)).unwrap();
    let mut long = engine
        .submit(ValidRequest::greedy(prompt(10, 0), 400))
        .unwrap();
    let mut short = engine
        .submit(ValidRequest::greedy(prompt(10, 1), 2))
        .unwrap();
    // Wait until the short one is done, then shut down with a tiny grace period.
    let mut short_done = None;
    while let Some(ev) = short.blocking_recv() {
        if let Event::Finished { finish, .. } = ev {
            short_done = Some(finish.reason);
        }
    }
    assert_eq!(short_done, Some(FinishReason::Length));
    engine.shutdown(Duration::from_millis(1));
    let mut last = None;
    while let Some(ev) = long.blocking_recv() {
        last = Some(ev);
    }
    assert!(
        matches!(
            last,
            Some(Event::Finished {
                finish: Finish {
                    reason: FinishReason::Shutdown,
                    ..
                },
                ..
            })
        ),
        "{last:?}"
    );
    assert_eq!(
        engine.submit(ValidRequest::greedy(prompt(3, 0), 2)).err(),
        Some(SubmitError::ShuttingDown)
    );
}

#[test]
fn the_engine_streams_token_ids_for_every_choice() {
    let engine = Engine::start(tiny(), config(64, 8)).unwrap();
    let mut s = engine
        .submit(ValidRequest {
            n: 2,
            ..ValidRequest::greedy(prompt(8, 0), 3)
        })
        .unwrap();
    let mut seen = [0usize; 2];
    let mut finished = 0;
    while let Some(ev) = s.blocking_recv() {
        match ev {
            Event::Token { index, token } => {
                assert!((token.id as usize) < tiny_config().vocab_size);
                seen[index] += 1;
            }
            Event::Finished { .. } => finished += 1,
            Event::PromptScores { .. } => {}
            Event::Failed { error, .. } => panic!("{error}"),
        }
    }
    assert_eq!(seen, [3, 3]);
    assert_eq!(finished, 2);
    engine.shutdown(Duration::from_secs(5));
}

#[cfg(target_os = "linux")]
mod memory;
mod scoring;
