use std::sync::Arc;

use super::*;
use crate::engine::{Finish, Usage};
use crate::sampling::Token;

/// The value of the sample line `series` (name and labels exactly as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn token(index: usize) -> Event {
    Event::Token {
        index,
        token: Token {
            id: 1,
            logprob: None,
            top: vec![],
        },
    }
}

fn finished(index: usize, completion: usize) -> Event {
    Event::Finished {
        index,
        finish: Finish {
            reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: completion,
                cached_tokens: 2,
            },
            timings: Timings {
                queued: Duration::from_millis(1),
                ttft: Duration::from_millis(30),
                total: Duration::from_millis(700),
            },
        },
    }
}

#[test]
fn a_response_counts_tokens_finishes_and_latencies() {
    let m = Arc::new(Metrics::new("m"));
    let mut r = ResponseRecorder::new(m.clone());
    for e in [token(0), token(1), token(0), finished(0, 3), finished(1, 1)] {
        r.event(0, &e);
    }
    drop(r);
    let text = m.render(None);
    assert_eq!(
        value(&text, "wick_prompt_tokens_total"),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "vllm:prompt_tokens_total{model_name=\"m\"}"),
        Some(5.0)
    );
    assert_eq!(value(&text, "wick_generation_tokens_total"), Some(4.0));
    assert_eq!(
        value(&text, "vllm:generation_tokens_total{model_name=\"m\"}"),
        Some(4.0)
    );
    assert_eq!(value(&text, "wick_cached_prompt_tokens_total"), Some(2.0));
    assert_eq!(
        value(
            &text,
            "vllm:request_success_total{model_name=\"m\",finished_reason=\"stop\"}"
        ),
        Some(2.0)
    );
    // One gap: choice 0's two tokens (choice 1 had one).
    assert_eq!(
        value(&text, "wick_inter_token_latency_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "vllm:time_to_first_token_seconds_count{model_name=\"m\"}"
        ),
        Some(2.0)
    );
    // 0.7 s lands in vLLM's 0.8 bucket, not its 0.5 one.
    let e2e = |le: &str| {
        value(
            &text,
            &format!("vllm:e2e_request_latency_seconds_bucket{{model_name=\"m\",le=\"{le}\"}}"),
        )
    };
    assert_eq!(
        (e2e("0.5"), e2e("0.8"), e2e("+Inf")),
        (Some(0.0), Some(2.0), Some(2.0))
    );
    assert!(
        text.contains("# TYPE vllm:e2e_request_latency_seconds histogram"),
        "{text}"
    );
}

#[test]
fn tokens_of_choices_the_engine_did_not_finish_count_when_the_response_goes() {
    let m = Arc::new(Metrics::new("m"));
    let mut r = ResponseRecorder::new(m.clone());
    for e in [token(0), token(0), token(0)] {
        r.event(1, &e);
    }
    drop(r);
    let text = m.render(None);
    assert_eq!(
        value(&text, "wick_generation_tokens_total"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "wick_inter_token_latency_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "wick_e2e_request_latency_seconds_count"),
        Some(0.0)
    );
}

#[test]
fn a_scrape_copies_the_engine_figures() {
    let m = Metrics::new("smol");
    let stats = EngineStats {
        running: 3,
        waiting: 2,
        kv_blocks_used: 16,
        kv_blocks_cached: 5,
        kv_blocks_resident: 37,
        kv_blocks_total: 64,
        prefix_queried_tokens: 100,
        prefix_hit_tokens: 40,
        preemptions: 1,
        cancellations: 4,
        ..EngineStats::default()
    };
    let text = m.render(Some(stats));
    let model = "{model_name=\"smol\"}";
    for (series, v) in [
        (format!("vllm:num_requests_running{model}"), 3.0),
        (format!("vllm:num_requests_waiting{model}"), 2.0),
        (format!("vllm:kv_cache_usage_perc{model}"), 0.25),
        (format!("vllm:prefix_cache_queries_total{model}"), 100.0),
        (format!("vllm:prefix_cache_hits_total{model}"), 40.0),
        (format!("vllm:num_preemptions_total{model}"), 1.0),
        ("wick_requests_running".into(), 3.0),
        ("wick_kv_blocks_used".into(), 16.0),
        ("wick_kv_blocks_total".into(), 64.0),
        ("wick_kv_blocks_cached".into(), 5.0),
        ("wick_kv_blocks_resident".into(), 37.0),
        ("wick_cancellations_total".into(), 4.0),
    ] {
        assert_eq!(value(&text, &series), Some(v), "{series} in {text}");
    }
    let later = m.render(Some(EngineStats {
        running: 0,
        ..stats
    }));
    assert_eq!(value(&later, "wick_requests_running"), Some(0.0));
}

#[test]
fn two_servers_do_not_share_counts() {
    let (a, b) = (Metrics::new("a"), Metrics::new("b"));
    a.request("/v1/models", 200);
    let series = "wick_http_requests_total{route=\"/v1/models\",status=\"200\"}";
    assert_eq!(value(&a.render(None), series), Some(1.0));
    assert_eq!(value(&b.render(None), series), None);
}
