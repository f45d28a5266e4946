"""`GET /metrics` of the built binary on the real model, read with `prometheus_client`'s own
text parser (what Python scrapers use): it parses, vLLM's names carry `model_name`, and the
counters and histograms move with a request."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from conftest import MODEL


def scrape(server) -> tuple[dict[str, str], dict[tuple[str, tuple], float]]:
    """The families' types by name, and every sample's value by (name, sorted labels)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=60) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def test_metrics_parse_with_prometheus_client_and_move_with_traffic(server, client):
    _, before = scrape(server)
    out = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=4, temperature=0)
    types, after = scrape(server)
    model = (("model_name", MODEL),)

    assert types["vllm:num_requests_running"] == "gauge"
    assert types["vllm:kv_cache_usage_perc"] == "gauge"
    assert types["vllm:time_to_first_token_seconds"] == "histogram"
    assert types["vllm:e2e_request_latency_seconds"] == "histogram"
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:inter_token_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
    ]:
        assert (name, model) in after, name
    assert 0.0 <= after[("vllm:kv_cache_usage_perc", model)] <= 1.0

    def delta(name, labels=model):
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert delta("vllm:prompt_tokens_total") == out.usage.prompt_tokens
    assert delta("vllm:generation_tokens_total") == out.usage.completion_tokens
    assert delta("vllm:e2e_request_latency_seconds_count") == 1
    assert delta("vllm:time_to_first_token_seconds_count") == 1
    reason = (("finished_reason", out.choices[0].finish_reason), ("model_name", MODEL))
    assert delta("vllm:request_success_total", reason) == 1
    route = (("route", "/v1/completions"), ("status", "200"))
    assert delta("wick_http_requests_total", route) == 1
    # Buckets are cumulative up to +Inf, which is the count.
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in after.items()
        if name == "vllm:e2e_request_latency_seconds_bucket"
    )
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert buckets[-1] == (float("inf"), after[("vllm:e2e_request_latency_seconds_count", model)])
