#!/usr/bin/env python3
"""Streaming-chat load test for any OpenAI-compatible server (wick serve, llama.cpp's
llama-server, vLLM): closed loop, `c` clients sending requests back to back, per concurrency
level. Python standard library only.

Each request is a streamed chat completion with a ~N-token user message (distinct per request,
so no prefix cache helps), `max_tokens` M and `ignore_eos` (so every request generates M tokens
on servers that honour it), `stream_options.include_usage` for the token count. Prints the table
`wick bench` prints: requests/s, aggregate generated tok/s, TTFT p50/p95 (first content chunk),
inter-token latency p50/p95 (gaps between content chunks); `--json PATH` also writes those
figures, per level, as JSON (scripts/compare-server.sh merges them into one summary).

    scripts/loadtest.py --url http://127.0.0.1:8080 --concurrency 1,4,8,16
"""

import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse

TEXT = (
    "The lighthouse stood at the edge of the cliff, its white tower weathered by a century of "
    "storms. Every evening the keeper climbed the spiral stairs, trimmed the wick and wound the "
    "clockwork that turned the great lens, and every morning he wrote the weather, the ships he "
    "had seen and the state of the sea into a leather-bound log. "
)


def percentile(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    rank = min(max(math.ceil(q * len(s)), 1), len(s))
    return s[rank - 1]


class Client:
    def __init__(self, url, api_key=None):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.base = u.path.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def conn(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def get(self, path):
        c = self.conn()
        c.request("GET", self.base + path, headers=self.headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def post_json(self, path, payload):
        c = self.conn()
        c.request("POST", self.base + path, json.dumps(payload), self.headers)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body


def prompt_words(client, model, target):
    """Words of TEXT giving about `target` prompt tokens, counted with the server's /tokenize
    when it has one (wick, llama-server), else at 1.3 tokens per word."""
    words = (TEXT * (target // 20 + 2)).split()
    text = " ".join(words)
    # `prompt` for wick and vLLM, `content` for llama-server.
    status, body = client.post_json("/tokenize", {"model": model, "prompt": text, "content": text})
    per_word = 1.3
    if status == 200:
        v = json.loads(body)
        n = v.get("count") or len(v.get("tokens", []))
        if n:
            per_word = n / len(words)
    return words[: max(1, int(target / per_word))]


def one_request(client, model, content, max_tokens):
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    c = client.conn()
    t0 = time.perf_counter()
    c.request(
        "POST",
        client.base + "/v1/chat/completions",
        json.dumps(payload),
        client.headers,
    )
    r = c.getresponse()
    if r.status != 200:
        body = r.read()
        c.close()
        raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
    stamps, usage = [], None
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:
            raise RuntimeError(f"stream error: {chunk['error']}")
        if chunk.get("usage"):
            usage = chunk["usage"]
        for ch in chunk.get("choices", []):
            if ch.get("delta", {}).get("content"):
                stamps.append(time.perf_counter())
    c.close()
    tokens = usage["completion_tokens"] if usage else len(stamps)
    ttft = (stamps[0] - t0) if stamps else None
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return tokens, ttft, gaps


def run_level(client, model, words, concurrency, requests, max_tokens):
    lock = threading.Lock()
    state = {"next": 0, "tokens": 0, "ttft": [], "itl": [], "failed": 0}

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= requests:
                    return
                state["next"] += 1
            content = f"Request {i}: " + " ".join(words)
            try:
                tokens, ttft, gaps = one_request(client, model, content, max_tokens)
            except Exception as e:  # noqa: BLE001 - reported, counted, the level goes on
                print(f"request {i} failed: {e}", file=sys.stderr)
                with lock:
                    state["failed"] += 1
                continue
            with lock:
                state["tokens"] += tokens
                if ttft is not None:
                    state["ttft"].append(ttft)
                state["itl"].extend(gaps)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = lambda x: x * 1e3  # noqa: E731
    done = requests - state["failed"]
    level = {
        "concurrency": concurrency,
        "requests": requests,
        "failed": state["failed"],
        "requests_per_s": done / wall,
        "tok_per_s": state["tokens"] / wall,
        "ttft_p50_ms": ms(percentile(state["ttft"], 0.5)),
        "ttft_p95_ms": ms(percentile(state["ttft"], 0.95)),
        "itl_p50_ms": ms(percentile(state["itl"], 0.5)),
        "itl_p95_ms": ms(percentile(state["itl"], 0.95)),
    }
    print(
        f"| {concurrency} | {level['requests_per_s']:.2f} | {level['tok_per_s']:.1f} "
        f"| {level['ttft_p50_ms']:.0f} | {level['ttft_p95_ms']:.0f} "
        f"| {level['itl_p50_ms']:.1f} | {level['itl_p95_ms']:.1f} |",
        flush=True,
    )
    return level


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", help="model name (default: the first of /v1/models)")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, help="per level (default: 2 x concurrency, >= 4)")
    ap.add_argument("--json", metavar="PATH", help="also write the table's figures there as JSON")
    ap.add_argument("--api-key", help="sent as Authorization: Bearer (default: $OPENAI_API_KEY)")
    a = ap.parse_args()

    client = Client(a.url, a.api_key or os.environ.get("OPENAI_API_KEY"))
    # Wait for the server to finish loading (/health is 503 until then).
    deadline = time.time() + 300
    while True:
        try:
            status, _ = client.get("/health")
        except OSError:
            status = None
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.5)
    model = a.model
    if not model:
        status, body = client.get("/v1/models")
        if status != 200:
            sys.exit(f"GET /v1/models: HTTP {status}")
        model = json.loads(body)["data"][0]["id"]
    words = prompt_words(client, model, a.prompt_tokens)
    print(
        f"loadtest: {a.url} model {model}, ~{a.prompt_tokens}-token user messages, "
        f"{a.max_tokens} generated tokens per request, streamed chat"
    )
    print("| concurrency | requests/s | generated tok/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p95 ms |")
    print("|---|---|---|---|---|---|---|")
    report = {
        "url": a.url,
        "model": model,
        "prompt_tokens": a.prompt_tokens,
        "max_tokens": a.max_tokens,
        "levels": [],
    }
    for c in [int(x) for x in a.concurrency.split(",") if x]:
        report["levels"].append(
            run_level(client, model, words, c, a.requests or max(2 * c, 4), a.max_tokens)
        )
        if a.json:  # after every level, so a run cut short keeps what it measured
            with open(a.json, "w") as f:
                json.dump(report, f, indent=1)
    sys.exit(1 if any(level["failed"] for level in report["levels"]) else 0)


if __name__ == "__main__":
    main()
