//! The sampler's unit tests: each processor alone, seeded draws, parameter validation, and a
//! property test against a plain reference of which tokens may be drawn.

use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Default params with `set` applied.
fn with(set: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut params = SamplingParams::default();
    set(&mut params);
    params
}

fn greedy_with(set: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut params = SamplingParams::greedy();
    set(&mut params);
    params
}

fn seeded(params: SamplingParams, seed: u64) -> Sampler {
    Sampler::new(
        SamplingParams {
            seed: Some(seed),
            ..params
        },
        &[],
    )
}

/// Logits whose softmax is exactly `probs` (up to rounding).
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|p| p.ln()).collect()
}

/// How often each id is drawn in `draws` steps with the same logits.
fn frequencies(sampler: &mut Sampler, logits: &[f32], draws: usize) -> Vec<usize> {
    let mut counts = vec![0; logits.len()];
    for _ in 0..draws {
        let id = sampler.sample(logits).expect("sample").id;
        counts[id as usize] += 1;
    }
    counts
}

fn random_logits(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

#[test]
fn argmax_picks_the_largest_lowest_id_on_ties_and_never_nan() {
    assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
    assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 2.0]), 3);
    assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY, -5.0]), 2);
    assert_eq!(argmax(&[-1.0, f32::INFINITY, f32::INFINITY]), 1);
    assert_eq!(argmax(&[]), 0);
}

#[test]
fn greedy_sampling_is_argmax_and_skips_nan() {
    let mut sampler = Sampler::new(SamplingParams::greedy(), &[]);
    let logits = [f32::NAN, 0.5, 2.0, 2.0, -1.0];
    for _ in 0..5 {
        assert_eq!(sampler.sample(&logits).expect("sample").id, 2);
    }
    let all_nan = [f32::NAN; 5];
    assert_eq!(sampler.sample(&all_nan), Err(SamplingError::NonFinite));
    let mut random = seeded(SamplingParams::default(), 1);
    assert_eq!(random.sample(&all_nan), Err(SamplingError::NonFinite));
    let nan_and_one = [f32::NAN, f32::NAN, -3.0, f32::NEG_INFINITY, f32::NAN];
    assert_eq!(random.sample(&nan_and_one).expect("sample").id, 2);
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let steps: Vec<Vec<f32>> = (0..200)
        .map(|_| random_logits(&mut rng, 1000, 1.0))
        .collect();
    let run = |seed: u64| -> Vec<u32> {
        let params = SamplingParams {
            top_p: 0.95,
            top_k: 500,
            ..SamplingParams::default()
        };
        let mut sampler = seeded(params, seed);
        steps
            .iter()
            .map(|l| sampler.sample(l).expect("sample").id)
            .collect()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn low_temperature_approaches_argmax() {
    let logits = [1.0, 1.5, 0.9, 1.2];
    let argmax_share = |temperature: f32| {
        let params = SamplingParams {
            temperature,
            ..SamplingParams::default()
        };
        frequencies(&mut seeded(params, 3), &logits, 2000)[1]
    };
    let (hot, warm, cold) = (argmax_share(1.0), argmax_share(0.1), argmax_share(0.01));
    assert!(hot < 1000, "T=1 spreads the mass: {hot}");
    // The nearest rival is 0.3 below: exp(-3) ≈ 5% of the argmax's weight at T=0.1.
    assert!(warm > 1800, "T=0.1 is nearly greedy: {warm}");
    assert_eq!(cold, 2000, "T=0.01 is greedy in practice");
}

#[test]
fn temperature_one_matches_softmax_frequencies() {
    let logits = [1.0, 2.0, 0.5, -1.0, 0.0];
    let draws = 20_000;
    let counts = frequencies(&mut seeded(SamplingParams::default(), 11), &logits, draws);
    for (id, lp) in log_softmax(&logits).iter().enumerate() {
        let expected = lp.exp();
        let seen = counts[id] as f32 / draws as f32;
        assert!(
            (seen - expected).abs() < 0.01,
            "id {id}: {seen} vs {expected}"
        );
    }
}

#[test]
fn top_k_one_is_greedy() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let params = with(|p| p.top_k = 1);
    let mut top1 = seeded(params, 9);
    let mut greedy = Sampler::new(SamplingParams::greedy(), &[]);
    for _ in 0..100 {
        let logits = random_logits(&mut rng, 300, 3.0);
        let a = top1.sample(&logits).expect("sample").id;
        assert_eq!(a, greedy.sample(&logits).expect("sample").id);
    }
}

#[test]
fn top_k_two_stays_in_the_top_two() {
    let logits = [0.0, 2.0, 1.9, 1.8, 0.5];
    let params = with(|p| p.top_k = 2);
    let counts = frequencies(&mut seeded(params, 1), &logits, 2000);
    assert_eq!(counts[0] + counts[3] + counts[4], 0, "{counts:?}");
    assert!(counts[1] > 0 && counts[2] > 0, "{counts:?}");
}

#[test]
fn top_p_keeps_the_minimal_nucleus() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let with_top_p = |top_p: f32| {
        let params = SamplingParams {
            top_p,
            ..SamplingParams::default()
        };
        frequencies(&mut seeded(params, 2), &logits, 2000)
    };
    let nucleus = with_top_p(0.7);
    assert_eq!(nucleus[2] + nucleus[3], 0, "{nucleus:?}");
    assert!(nucleus[0] > 0 && nucleus[1] > 0, "{nucleus:?}");
    let tiny = with_top_p(0.1);
    assert_eq!(tiny[0], 2000, "always at least the top token: {tiny:?}");
    let wide = with_top_p(0.9);
    assert_eq!(wide[3], 0, "{wide:?}");
    assert!(wide[2] > 0, "{wide:?}");
}

#[test]
fn top_p_nucleus_on_a_large_flat_tail() {
    // Mass spread thinly over 50k tokens exercises the threshold retries.
    let mut logits = vec![0.0; 50_000];
    logits[7] = 12.0;
    let params = with(|p| p.top_p = 0.95);
    let mut sampler = seeded(params, 4);
    let p7 = log_softmax(&logits)[7].exp();
    assert!(p7 < 0.95, "the tail is needed for the nucleus: {p7}");
    let counts = frequencies(&mut sampler, &logits, 200);
    assert!(counts[7] > 0 && counts[7] < 200, "{}", counts[7]);
}

/// Ids sorted best first by score, ties to the lower id: the naive reference.
fn sorted_ids(scores: &[f32]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..scores.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        scores[b as usize]
            .total_cmp(&scores[a as usize])
            .then(a.cmp(&b))
    });
    ids
}

#[test]
fn top_p_and_top_k_match_a_full_sort_on_large_flat_vocabularies() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for (n, spread) in [(5000, 0.5), (50_000, 3.0), (3000, 0.01)] {
        // Flat weights crowd thousands of tokens into one histogram bucket; rounding to
        // 1/64 adds ties.
        let weights: Vec<f32> = (0..n)
            .map(|_| (rng.random_range(-spread..0.0f32) * 64.0).round() / 64.0)
            .map(f32::exp)
            .collect();
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        for top_p in [0.05f32, 0.5, 0.9, 0.999] {
            let mut candidates: Vec<Ranked> = ranked(&weights).collect();
            truncate_top_p(&mut candidates, f64::from(top_p) * total);
            let mut kept: Vec<u32> = candidates.iter().map(|r| r.id).collect();
            kept.sort_unstable();
            let mut cumulative = 0.0;
            let mut expected: Vec<u32> = sorted_ids(&weights)
                .into_iter()
                .take_while(|&id| {
                    let before = cumulative;
                    cumulative += f64::from(weights[id as usize]);
                    before < f64::from(top_p) * total
                })
                .collect();
            expected.sort_unstable();
            assert_eq!(kept, expected, "n {n} spread {spread} top_p {top_p}");
        }
        for k in [1, 40, n / 20, n / 2] {
            let mut out = Vec::new();
            top_n(ranked(&weights), k, n, &mut BinaryHeap::new(), &mut out);
            out.sort_unstable();
            let ids: Vec<u32> = out.iter().map(|r| r.id).collect();
            assert_eq!(ids, sorted_ids(&weights)[..k], "n {n} k {k}");
        }
    }
}

#[test]
fn min_p_drops_tokens_below_the_scaled_max() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let with_min_p = |min_p: f32, top_p: f32| {
        let params = SamplingParams {
            min_p,
            top_p,
            ..SamplingParams::default()
        };
        frequencies(&mut seeded(params, 8), &logits, 2000)
    };
    let half = with_min_p(0.5, 1.0); // keeps p >= 0.25
    assert_eq!(half[2] + half[3], 0, "{half:?}");
    assert!(half[1] > 0, "{half:?}");
    let quarter = with_min_p(0.25, 1.0); // keeps p >= 0.125
    assert_eq!(quarter[3], 0, "{quarter:?}");
    assert!(quarter[2] > 0, "{quarter:?}");
    // With top-p the smaller of the two sets wins, whichever it is.
    let both = with_min_p(0.25, 0.6);
    assert_eq!(both[2] + both[3], 0, "{both:?}");
    let both = with_min_p(0.5, 0.95);
    assert_eq!(both[2] + both[3], 0, "{both:?}");
}

#[test]
fn repetition_penalty_lowers_seen_tokens_of_either_sign() {
    let params = greedy_with(|p| p.repetition_penalty = 2.0);
    let mut sampler = Sampler::new(params, &[2]);
    // Positive: 1.5 / 2 = 0.75 < 1.0.
    assert_eq!(sampler.sample(&[1.0, 0.0, 1.5]).expect("sample").id, 0);
    // Negative: -0.6 * 2 = -1.2 < -1.0.
    let mut sampler = Sampler::new(sampler.params().clone(), &[2]);
    assert_eq!(sampler.sample(&[-1.0, -2.0, -0.6]).expect("sample").id, 0);
    // Generated tokens count too: 0 was just generated, so 3.0 / 2 = 1.5 < 1.6.
    assert_eq!(sampler.sample(&[3.0, 1.6, -5.0]).expect("sample").id, 1);
    // Unseen tokens are untouched.
    sampler.process(&[0.5, -0.5, 4.0, -4.0]);
    assert_eq!(sampler.work, [0.25, -1.0, 2.0, -4.0]);
}

#[test]
fn frequency_penalty_grows_with_the_count() {
    let params = greedy_with(|p| p.frequency_penalty = 0.5);
    let mut sampler = Sampler::new(params, &[]);
    let logits = [1.0, 0.0, -3.0];
    let ids: Vec<u32> = (0..4)
        .map(|_| sampler.sample(&logits).expect("s").id)
        .collect();
    // 1.0, 0.5, 0.0 (ties 0.0 with id 1, lowest id wins), then -0.5 < 0.0.
    assert_eq!(ids, [0, 0, 0, 1]);
}

#[test]
fn presence_penalty_is_flat_and_ignores_the_prompt() {
    let params = greedy_with(|p| p.presence_penalty = 0.6);
    let mut sampler = Sampler::new(params, &[0]);
    let logits = [1.0, 0.5];
    let ids: Vec<u32> = (0..4)
        .map(|_| sampler.sample(&logits).expect("s").id)
        .collect();
    // 1.0 (prompt is not penalised), then 0.4 < 0.5, then 0.4 > -0.1 for good.
    assert_eq!(ids, [0, 1, 0, 0]);
}

#[test]
fn accept_feeds_the_penalties() {
    let params = greedy_with(|p| p.presence_penalty = 2.0);
    let mut sampler = Sampler::new(params, &[]);
    sampler.accept(0);
    sampler.accept(70_000); // outside the vocabulary: ignored, no panic
    assert_eq!(sampler.sample(&[1.0, 0.0]).expect("sample").id, 1);
}

#[test]
fn logit_bias_minus_100_bans_and_plus_100_forces() {
    let logits = [5.0, 0.0, 0.0, -2.0];
    let banned = with(|p| p.logit_bias = vec![(0, -100.0)]);
    assert_eq!(frequencies(&mut seeded(banned, 1), &logits, 1000)[0], 0);
    let forced = with(|p| p.logit_bias = vec![(3, 100.0)]);
    assert_eq!(frequencies(&mut seeded(forced, 1), &logits, 1000)[3], 1000);
}

#[test]
fn logprobs_are_the_raw_distribution() {
    let logits = [0.3, 2.0, -1.0, 2.0, 0.7, 1.1];
    let params = SamplingParams {
        temperature: 0.4,
        repetition_penalty: 1.7,
        frequency_penalty: 1.0,
        logit_bias: vec![(4, 3.0)],
        logprobs: Some(3),
        ..SamplingParams::default()
    };
    let raw = log_softmax(&logits);
    let mut sampler = seeded(params, 6);
    for _ in 0..20 {
        let token = sampler.sample(&logits).expect("sample");
        assert_eq!(token.logprob, Some(raw[token.id as usize]));
        let top: Vec<(u32, f32)> = token.top.iter().map(|t| (t.id, t.logprob)).collect();
        // Ties (ids 1 and 3) go to the lower id.
        assert_eq!(top, [(1, raw[1]), (3, raw[3]), (5, raw[5])]);
    }
}

#[test]
fn logprobs_zero_gives_the_chosen_only_and_none_gives_nothing() {
    let logits = [0.0, 1.0, 2.0];
    let params = greedy_with(|p| p.logprobs = Some(0));
    let token = Sampler::new(params, &[]).sample(&logits).expect("sample");
    assert_eq!(token.logprob, Some(log_softmax(&logits)[2]));
    assert!(token.top.is_empty());
    let token = Sampler::new(SamplingParams::greedy(), &[])
        .sample(&logits)
        .expect("s");
    assert_eq!((token.logprob, token.top), (None, Vec::new()));
}

#[test]
fn validate_names_the_field_the_limit_and_the_value() {
    let cases: Vec<(SamplingParams, &str, &str)> = vec![
        (
            with(|p| p.temperature = 2.5),
            "temperature",
            "[0, 2], got 2.5",
        ),
        (with(|p| p.temperature = f32::NAN), "temperature", "got NaN"),
        (with(|p| p.top_p = 1.5), "top_p", "(0, 1], got 1.5"),
        (with(|p| p.top_p = 0.0), "top_p", "(0, 1], got 0"),
        (with(|p| p.min_p = -0.1), "min_p", "[0, 1], got -0.1"),
        (
            with(|p| p.repetition_penalty = 0.0),
            "repetition_penalty",
            "> 0, got 0",
        ),
        (
            with(|p| p.presence_penalty = 2.1),
            "presence_penalty",
            "[-2, 2], got 2.1",
        ),
        (
            with(|p| p.frequency_penalty = -3.0),
            "frequency_penalty",
            "[-2, 2], got -3",
        ),
        (
            with(|p| p.logit_bias = vec![(10, 1.0)]),
            "logit_bias",
            "id 10 must be < vocabulary size 10",
        ),
        (
            with(|p| p.logit_bias = vec![(1, 150.0)]),
            "logit_bias",
            "[-100, 100], got 150",
        ),
        (with(|p| p.logprobs = Some(21)), "logprobs", "<= 20, got 21"),
    ];
    for (params, field, text) in cases {
        match params.validate(10) {
            Err(SamplingError::InvalidParam { field: f, message }) => {
                assert_eq!(f, field);
                assert!(message.starts_with(field), "{message}");
                assert!(message.contains(text), "{message:?} lacks {text:?}");
            }
            other => panic!("{field}: expected an error, got {other:?}"),
        }
    }
    let edges = SamplingParams {
        temperature: 2.0,
        top_p: 1.0,
        min_p: 1.0,
        presence_penalty: -2.0,
        frequency_penalty: 2.0,
        logit_bias: vec![(9, -100.0), (0, 100.0)],
        logprobs: Some(20),
        ..SamplingParams::default()
    };
    assert_eq!(edges.validate(10), Ok(()));
    assert_eq!(
        with(|p| p.top_p = 1.5)
            .validate(10)
            .map_err(|e| e.to_string()),
        Err("top_p must be in (0, 1], got 1.5".to_string())
    );
}

#[test]
fn sampler_rejects_bad_params_and_mismatched_logits() {
    let params = with(|p| p.logit_bias = vec![(5, 1.0)]);
    let mut sampler = seeded(params, 1);
    assert!(matches!(
        sampler.sample(&[0.0; 4]),
        Err(SamplingError::InvalidParam {
            field: "logit_bias",
            ..
        })
    ));
    assert!(sampler.sample(&[0.0; 6]).is_ok());
    let err = sampler.sample(&[0.0; 7]);
    assert_eq!(
        err,
        Err(SamplingError::BadLogits {
            expected: 6,
            found: 7
        })
    );
    let mut fresh = seeded(SamplingParams::default(), 1);
    assert_eq!(fresh.sample(&[]), Err(SamplingError::EmptyLogits));
}

#[test]
fn plus_infinity_logits_share_the_mass() {
    let logits = [f32::INFINITY, 0.0, f32::INFINITY];
    let lp = log_softmax(&logits);
    assert_eq!(lp[1], f32::NEG_INFINITY);
    assert!(
        (lp[0] - 0.5f32.ln()).abs() < 1e-6 && lp[0] == lp[2],
        "{lp:?}"
    );
    let counts = frequencies(&mut seeded(SamplingParams::default(), 3), &logits, 1000);
    assert_eq!(counts[1], 0);
    assert!(counts[0] > 400 && counts[2] > 400, "{counts:?}");
}

#[test]
fn log_softmax_sums_to_one_and_is_stable_for_large_logits() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for logits in [
        random_logits(&mut rng, 50_000, 10.0),
        vec![1e4, 1e4 - 1.0, -1e4, 0.0],
    ] {
        let lp = log_softmax(&logits);
        assert!(lp.iter().all(|x| !x.is_nan()));
        let total: f64 = lp.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
    }
    let lp = log_softmax(&[1e4, 1e4 - 1.0]);
    let expected = -(1.0f32 + (-1.0f32).exp()).ln();
    assert!((lp[0] - expected).abs() < 1e-6, "{lp:?}");
    assert_eq!(log_softmax(&[f32::NAN, 0.0])[0], f32::NEG_INFINITY);
    assert!(log_softmax(&[f32::NEG_INFINITY; 3])
        .iter()
        .all(|&x| x == f32::NEG_INFINITY));
}

#[test]
fn params_deserialise_with_defaults_for_missing_fields() {
    let params: SamplingParams =
        serde_json::from_str(r#"{"temperature":0.2,"top_k":40}"#).expect("json");
    let expected = SamplingParams {
        temperature: 0.2,
        top_k: 40,
        ..SamplingParams::default()
    };
    assert_eq!(params, expected);
}

/// The tokens a naive sort-based sampler may draw at the first step, or `None` when none
/// can be (all -inf). Boundaries get a little slack for summation order.
fn reference_allowed(logits: &[f32], p: &SamplingParams, prompt: &[u32]) -> Option<Vec<bool>> {
    let mut x: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    for &(id, b) in &p.logit_bias {
        x[id as usize] += f64::from(b);
    }
    let rep = f64::from(p.repetition_penalty);
    let mut seen: Vec<u32> = prompt
        .iter()
        .copied()
        .filter(|&id| (id as usize) < x.len())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        let v = &mut x[id as usize];
        *v = if *v > 0.0 { *v / rep } else { *v * rep };
    }
    let mut order: Vec<usize> = (0..x.len()).filter(|&i| x[i] > f64::NEG_INFINITY).collect();
    if order.is_empty() {
        return None;
    }
    order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    let mut allowed = vec![false; x.len()];
    if p.temperature == 0.0 {
        allowed[order[0]] = true;
        return Some(allowed);
    }
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    let max = x[order[0]];
    let t = f64::from(p.temperature);
    let w: Vec<f64> = order.iter().map(|&i| ((x[i] - max) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut before = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let in_nucleus = rank == 0 || before / total < f64::from(p.top_p) + 1e-4;
        let above_min_p = w[rank] >= f64::from(p.min_p) * (1.0 - 1e-4);
        allowed[i] = in_nucleus && above_min_p && w[rank] > 0.0;
        before += w[rank];
    }
    Some(allowed)
}

fn arb_logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -30.0f32..30.0,
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::NAN),
        1 => (0u8..4).prop_map(f32::from),
    ]
}

fn arb_params(vocab: usize) -> impl Strategy<Value = SamplingParams> {
    let vocab = vocab as u32;
    (
        (
            prop_oneof![1 => Just(0.0f32), 4 => 0.01f32..2.0],
            0usize..8,
            prop_oneof![1 => Just(1.0f32), 2 => 0.01f32..1.0],
        ),
        (
            prop_oneof![1 => Just(0.0f32), 1 => 0.0f32..1.0],
            0.5f32..2.0,
            -2.0f32..2.0,
            -2.0f32..2.0,
        ),
        proptest::collection::vec(
            (
                0..vocab,
                prop_oneof![Just(-100.0f32), Just(100.0), -5.0f32..5.0],
            ),
            0..3,
        ),
        (any::<u64>(), proptest::option::of(0usize..=20)),
    )
        .prop_map(
            |(
                (temperature, top_k, top_p),
                (min_p, rep, presence, frequency),
                logit_bias,
                (seed, logprobs),
            )| {
                SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repetition_penalty: rep,
                    presence_penalty: presence,
                    frequency_penalty: frequency,
                    logit_bias,
                    seed: Some(seed),
                    logprobs,
                }
            },
        )
}

fn arb_case() -> impl Strategy<Value = (Vec<f32>, SamplingParams, Vec<u32>)> {
    (1usize..64).prop_flat_map(|vocab| {
        (
            proptest::collection::vec(arb_logit(), vocab),
            arb_params(vocab),
            proptest::collection::vec(0..vocab as u32 + 2, 0..6),
        )
    })
}

proptest! {
    #[test]
    fn sampled_ids_are_in_vocab_and_never_masked((logits, params, prompt) in arb_case()) {
        let allowed = reference_allowed(&logits, &params, &prompt);
        let mut sampler = Sampler::new(params.clone(), &prompt);
        let Some(allowed) = allowed else {
            prop_assert_eq!(sampler.sample(&logits), Err(SamplingError::NonFinite));
            return Ok(());
        };
        let token = sampler.sample(&logits).expect("sample");
        prop_assert!(allowed[token.id as usize], "id {} not allowed: {:?}", token.id, allowed);
        if let Some(n) = params.logprobs {
            prop_assert_eq!(token.top.len(), n.min(logits.len()));
            let raw = log_softmax(&logits);
            prop_assert_eq!(token.logprob, Some(raw[token.id as usize]));
            prop_assert!(token.top.windows(2).all(|w| w[0].logprob >= w[1].logprob));
        }
        // Later steps, with penalties building up, stay in range and do not panic.
        for _ in 0..5 {
            match sampler.sample(&logits) {
                Ok(token) => prop_assert!((token.id as usize) < logits.len()),
                Err(e) => prop_assert_eq!(e, SamplingError::NonFinite),
            }
        }
    }
}
