//! `GET /metrics` against a real server on 127.0.0.1: the exposition parses under a strict
//! Prometheus text-format parser, counters move with traffic, the running gauge follows the
//! streams (finished and cancelled), histograms are cumulative and count the requests, and
//! vLLM's names carry `model_name`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use wick::api::AppState;

use crate::common::{post, tiny_config, tiny_served, TestServer};

/// One sample: its name and labels, and its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A sample's labels but one, in order.
type LabelList = Vec<(String, String)>;

/// A parsed exposition: the declared type of each family and the samples in order.
#[derive(Debug, Default)]
struct Exposition {
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// The label set `{a="x",b="y"}` (without braces) of `line`.
fn parse_labels(mut s: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {line:?}"));
        assert!(is_name(key, false), "label name {key:?} in {line:?}");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(labels.insert(key.to_string(), value).is_none(), "{line:?}");
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    labels
}

fn parse_value(s: &str, line: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|_| panic!("value {s:?} in {line:?}")),
    }
}

/// The family a sample belongs to, given the declared types.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
    })
}

/// Parses the Prometheus text format (0.0.4) strictly: every line a comment, a `HELP` or `TYPE`
/// line or a sample of a family typed before it; names and labels valid; values numbers.
fn parse(text: &str) -> Exposition {
    let mut exp = Exposition::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name, true), "{line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line:?}"
            );
            let dup = exp.types.insert(name.into(), kind.into());
            assert!(dup.is_none(), "second TYPE for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("HELP name");
            assert!(is_name(name, true), "{line:?}");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                (name, parse_labels(inner, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(is_name(name, true), "{line:?}");
        assert!(
            family(name, &exp.types).is_some(),
            "untyped sample {line:?}"
        );
        exp.samples.push(Sample {
            name: name.into(),
            labels,
            value: parse_value(value, line),
        });
    }
    exp.check_histograms();
    exp
}

impl Exposition {
    /// The value of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in {:#?}", self.samples))
    }

    /// Every histogram's buckets rise with `le`, end at `+Inf`, and `+Inf` equals `_count`.
    fn check_histograms(&self) {
        for (name, _) in self.types.iter().filter(|(_, t)| *t == "histogram") {
            let mut series: BTreeMap<LabelList, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{name}_bucket"))
            {
                let le = parse_value(&s.labels["le"], name);
                let rest: Vec<_> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                series.entry(rest).or_default().push((le, s.value));
            }
            assert!(!series.is_empty(), "histogram {name} has no buckets");
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{name} {labels:?} not cumulative: {buckets:?}"
                );
                let (le, inf) = *buckets.last().expect("a bucket");
                assert_eq!(le, f64::INFINITY, "{name} {labels:?} lacks +Inf");
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                assert_eq!(self.value(&format!("{name}_count"), &labels), inf, "{name}");
                assert!(
                    self.get(&format!("{name}_sum"), &labels).is_some(),
                    "{name}"
                );
            }
        }
    }
}

async fn scrape(url: &str) -> Exposition {
    let r = reqwest::get(format!("{url}/metrics")).await.expect("get");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse(&r.text().await.expect("body"))
}

const M: (&str, &str) = ("model_name", "tiny");

async fn running(url: &str) -> f64 {
    let e = scrape(url).await;
    let v = e.value("vllm:num_requests_running", &[M]);
    assert_eq!(e.value("wick_requests_running", &[]), v);
    v
}

/// Scrapes until `ok(running)` or 5 s have gone.
async fn wait_running(url: &str, what: &str, ok: impl Fn(f64) -> bool) {
    for _ in 0..100 {
        if ok(running(url).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the running gauge never showed {what}: {}",
        running(url).await
    );
}

async fn tiny_server() -> TestServer {
    let state = AppState::new("tiny", 4096);
    state.set_ready(tiny_served(tiny_config()));
    TestServer::start(state).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_carry_vllm_names_with_model_name() {
    let server = tiny_server().await;
    let e = scrape(&server.url).await;
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds_count",
        "vllm:inter_token_latency_seconds_count",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
    ] {
        assert!(e.get(name, &[M]).is_some(), "{name} with model_name");
    }
    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
    ] {
        assert_eq!(e.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // vLLM's bucket boundaries.
    let ttft_le = e
        .samples
        .iter()
        .filter(|s| s.name == "vllm:time_to_first_token_seconds_bucket")
        .count();
    assert_eq!(ttft_le, 23, "22 boundaries and +Inf");
    assert_eq!(e.value("vllm:kv_cache_usage_perc", &[M]), 0.0);
    assert!(e.value("wick_kv_blocks_total", &[]) > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_counters_move_with_traffic() {
    let server = tiny_server().await;
    let url = &server.url;
    let before = scrape(url).await;
    let (mut usage, mut gaps) = ((0.0, 0.0), 0.0);
    for _ in 0..3 {
        let r = post(
            &format!("{url}/v1/completions"),
            json!({"prompt": [1, 2, 3, 4], "max_tokens": 6, "temperature": 0}),
        )
        .await;
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("json");
        usage.0 += v["usage"]["prompt_tokens"].as_f64().expect("prompt");
        let completion = v["usage"]["completion_tokens"]
            .as_f64()
            .expect("completion");
        usage.1 += completion;
        // A stop token is counted in usage but never streamed: the gaps are between the rest.
        let stop = f64::from(u8::from(v["choices"][0]["finish_reason"] == "stop"));
        gaps += (completion - stop - 1.0).max(0.0);
    }
    let r = reqwest::get(format!("{url}/v1/models/other"))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let r = reqwest::get(format!("{url}/no/such/route"))
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    let after = scrape(url).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.get(name, labels).unwrap_or(0.0)
    };
    let route = |r: &'static str, s: &'static str| [("route", r), ("status", s)];
    assert_eq!(
        delta("wick_http_requests_total", &route("/v1/completions", "200")),
        3.0
    );
    assert_eq!(
        delta(
            "wick_http_requests_total",
            &route("/v1/models/{*id}", "404")
        ),
        1.0
    );
    assert_eq!(
        delta("wick_http_requests_total", &route("unmatched", "404")),
        1.0
    );
    // The first scrape is counted by the time of the second.
    assert!(after.value("wick_http_requests_total", &route("/metrics", "200")) >= 1.0);
    assert_eq!(delta("vllm:prompt_tokens_total", &[M]), usage.0);
    assert_eq!(delta("wick_prompt_tokens_total", &[]), usage.0);
    assert_eq!(delta("vllm:generation_tokens_total", &[M]), usage.1);
    assert_eq!(delta("wick_generation_tokens_total", &[]), usage.1);
    let finished = delta(
        "vllm:request_success_total",
        &[M, ("finished_reason", "length")],
    ) + after
        .get(
            "vllm:request_success_total",
            &[M, ("finished_reason", "stop")],
        )
        .unwrap_or(0.0);
    assert_eq!(finished, 3.0);
    for h in [
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "vllm:time_to_first_token_seconds_count",
    ] {
        assert_eq!(delta(h, &[M]), 3.0, "{h}");
    }
    assert_eq!(delta("wick_inter_token_latency_seconds_count", &[]), gaps);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_running_gauge_follows_a_stream_to_its_end() {
    let server = tiny_server().await;
    let url = server.url.clone();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(
            &json!({"prompt": [1, 2, 3], "max_tokens": 400, "n": 4, "stream": true,
            "logprobs": 1, "temperature": 0}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let mut body = r.bytes_stream();
    body.next().await.expect("a first chunk").expect("bytes");
    wait_running(&url, "the stream", |v| v > 0.0).await;
    while let Some(chunk) = body.next().await {
        chunk.expect("bytes");
    }
    wait_running(&url, "0 after the stream", |v| v == 0.0).await;
    let e = scrape(&url).await;
    assert_eq!(e.value("vllm:e2e_request_latency_seconds_count", &[M]), 4.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_running_gauge_drops_to_zero_after_a_cancelled_stream() {
    let server = tiny_server().await;
    let url = server.url.clone();
    let (sock, _) = crate::common::long_stream_socket(&url).await;
    wait_running(&url, "the stream", |v| v > 0.0).await;
    drop(sock);
    wait_running(&url, "0 after the cancel", |v| v == 0.0).await;
    let e = scrape(&url).await;
    assert!(e.value("wick_cancellations_total", &[]) >= 1.0);
    // Cut choices still count what they generated; none finished.
    assert!(e.value("vllm:generation_tokens_total", &[M]) >= 3.0);
    assert_eq!(e.value("vllm:e2e_request_latency_seconds_count", &[M]), 0.0);
    server.stop().await;
}
