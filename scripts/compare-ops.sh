#!/usr/bin/env bash
# What the operations features cost: the same release `wick serve` under the same HTTP load
# (scripts/loadtest.py: streamed chat, ~128-token prompts, 128 generated tokens) with them all
# off, and all on, in one run on this machine, alternated (off, on, on, off) so that drift of
# the machine shows as a difference between the two runs of one configuration.
#
#   off: no API key, no tracing, usage statistics into a throwaway --data-dir (they cannot be
#        turned off), nobody scraping /metrics.
#   on:  an API keys file whose key has requests-per-minute, tokens-per-minute and concurrency
#        limits far above the load (so they are checked on every request but never bite),
#        every request sending that key, OTLP traces to a collector on 127.0.0.1 (a Python
#        sink that reads and acknowledges each export), /metrics scraped once a second, the
#        access log on (RUST_LOG=wick=info) and usage statistics.
#
#   scripts/compare-ops.sh [--concurrency 1,16] [--requests N]
#
# Logs and per-run JSON: target/compare-ops-NAME.{log,json}; the summary prints generated tok/s,
# TTFT p50 and ITL p50 per run, and on / off per level (the means of the two runs of each).
set -euo pipefail

CONCURRENCY=1,16
REQUESTS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --requests) REQUESTS=(--requests "$2"); shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=${WICK_THREADS:-2}
scripts/fetch-test-model.sh
cargo build --release --locked --bin wick

PORT=18093
COLLECTOR_PORT=18094
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/keys.toml" <<'TOML'
[[keys]]
name = "bench"
key = "sk-bench"
requests_per_minute = 1000000
tokens_per_minute = 1000000000
max_concurrent_requests = 1000
TOML

# The OTLP/HTTP sink: reads each export whole and answers 200 with an empty
# ExportTraceServiceResponse, as a collector does.
python3 - "$COLLECTOR_PORT" >"$WORK/collector.log" 2>&1 <<'PY' &
import http.server, sys

class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
PIDS+=($!)

NAMES=()
run_load() {
    local name=$1 mode=$2
    local flags=(serve --model "$MODEL" --port "$PORT" --data-dir "$WORK/data-$name")
    local load=()
    local log_filter=wick=warn
    if [ "$mode" = on ]; then
        flags+=(--api-keys-file "$WORK/keys.toml"
            --otlp-traces-endpoint "http://127.0.0.1:$COLLECTOR_PORT/v1/traces")
        load=(--api-key sk-bench)
        log_filter=wick=info
    fi
    rm -f "target/compare-ops-$name.json"
    RUST_LOG=$log_filter WICK_THREADS=$THREADS target/release/wick "${flags[@]}" \
        >"target/compare-ops-$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    sleep 2
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name did not start:" >&2
        tail -5 "target/compare-ops-$name.log" >&2
        exit 1
    fi
    local scraper=
    if [ "$mode" = on ]; then
        (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" || true; done) &
        scraper=$!
        PIDS+=("$scraper")
    fi
    echo "## $name"
    python3 scripts/loadtest.py --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" \
        "${REQUESTS[@]}" "${load[@]}" --json "target/compare-ops-$name.json"
    [ -z "$scraper" ] || kill "$scraper" 2>/dev/null || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    NAMES+=("$name")
    echo
}

echo "wick: target/release/wick ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', uncommitted changes')), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
run_load off-1 off
run_load on-1 on
run_load on-2 on
run_load off-2 off

python3 - "${NAMES[@]}" <<'PY'
import json, sys

names = sys.argv[1:]
runs = {}
for n in names:
    with open(f"target/compare-ops-{n}.json") as f:
        runs[n] = {lv["concurrency"]: lv for lv in json.load(f)["levels"]}
levels = sorted({c for r in runs.values() for c in r})
print("## summary")
for key, title, fmt in [
    ("tok_per_s", "generated tok/s (higher is better)", "{:.1f}"),
    ("ttft_p50_ms", "TTFT p50 ms (lower is better)", "{:.0f}"),
    ("itl_p50_ms", "ITL p50 ms (lower is better)", "{:.1f}"),
]:
    print(f"\n{title}\n")
    cols = names + ["on / off"]
    print("| concurrency | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for c in levels:
        cells = [fmt.format(runs[n][c][key]) if c in runs[n] else "-" for n in names]
        mean = lambda mode: sum(runs[n][c][key] for n in names if n.startswith(mode)) / 2
        off = mean("off")
        cells.append(f"{mean('on') / off:.3f}" if off else "-")
        print(f"| {c} | " + " | ".join(cells) + " |")
PY
