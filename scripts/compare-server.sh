#!/usr/bin/env bash
# wick serve against llama.cpp's llama-server under the same HTTP load (scripts/loadtest.py:
# streamed chat, ~128-token user messages, 128 generated tokens, concurrency 1, 4, 8, 16), one
# after the other on this machine, same model, 2 threads. llama-server is built once from the
# llama.cpp that the PyPI sdist llama-cpp-python==0.3.36 vendors (commit 0c1e570), with cmake
# from the throwaway venv of scripts/compare-llamacpp.sh, under target/ (never committed);
# LLAMA_SERVER=path uses one already built elsewhere instead (its build/bin, with the shared
# libraries next to it). It runs with 16 slots and flash attention, as the CPU-speed and engine
# issues specify.
#
# --before BIN (or WICK_BEFORE=BIN) also runs another wick binary, e.g. a release build of the
# commit before a change, as server "wick-before", with exactly the flags wick gets, right
# before this checkout's wick; --no-llamacpp leaves llama-server out. Each server's table is
# printed under its own heading as it runs, then a summary puts generated tok/s, TTFT p50 and
# ITL p50 of every server side by side per concurrency level (with wick / wick-before ratios
# when there is a before). Logs and per-server JSON: target/compare-server-NAME.{log,json}.
#
#   scripts/compare-server.sh [--concurrency 1,4,8,16] [--requests N] [--before BIN] [--no-llamacpp]
#                             [--model FILE]
#
# --model FILE: another GGUF (e.g. a shape model from scripts/make-shape-models.py) for both
# servers; default: the test model.
# --requests N: requests per concurrency level (loadtest.py's default: 2 x concurrency, >= 4).
set -euo pipefail

CONCURRENCY=1,4,8,16
REQUESTS=()
BEFORE=${WICK_BEFORE:-}
LLAMACPP=1
MODEL=
while [ $# -gt 0 ]; do
    case "$1" in
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        --requests) REQUESTS=(--requests "$2"); shift 2 ;;
        --before) BEFORE=$2; shift 2 ;;
        --no-llamacpp) LLAMACPP=0; shift ;;
        --model) MODEL=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# Paths given by the caller are relative to where it runs; make them absolute before the cd.
if [ -n "$BEFORE" ]; then
    [ -x "$BEFORE" ] || { echo "--before $BEFORE: not an executable file" >&2; exit 2; }
    BEFORE=$(realpath "$BEFORE")
fi
if [ -n "${LLAMA_SERVER:-}" ]; then
    [ -x "$LLAMA_SERVER" ] || { echo "LLAMA_SERVER=$LLAMA_SERVER: not an executable file" >&2; exit 2; }
    LLAMA_SERVER=$(realpath "$LLAMA_SERVER")
fi
if [ -n "$MODEL" ]; then
    [ -f "$MODEL" ] || { echo "--model $MODEL: no such file" >&2; exit 2; }
    MODEL=$(realpath "$MODEL")
fi
cd "$(dirname "$0")/.."

THREADS=${WICK_THREADS:-2}
if [ -z "$MODEL" ]; then
    MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
    scripts/fetch-test-model.sh
fi

VENV=${LLAMACPP_VENV:-target/llamacpp-venv}
SRC=target/llamacpp-src
SERVER=${LLAMA_SERVER:-$SRC/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server}
if [ "$LLAMACPP" = 1 ] && [ ! -x "$SERVER" ]; then
    echo "building llama-server from llama-cpp-python==0.3.36's llama.cpp (several minutes)" >&2
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet cmake
    mkdir -p "$SRC"
    "$VENV/bin/pip" download --quiet --no-deps llama-cpp-python==0.3.36 -d "$SRC"
    tar xzf "$SRC/llama_cpp_python-0.3.36.tar.gz" -C "$SRC"
    (
        cd "$SRC/llama_cpp_python-0.3.36/vendor/llama.cpp"
        "$OLDPWD/$VENV/bin/cmake" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
            -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
        "$OLDPWD/$VENV/bin/cmake" --build build --target llama-server -j "$(nproc)" >/dev/null
    )
fi
cargo build --release --locked --bin wick

PORT=18091
NAMES=()
run_load() {
    local name=$1
    shift
    rm -f "target/compare-server-$name.json"
    "$@" >"target/compare-server-$name.log" 2>&1 &
    local pid=$!
    # shellcheck disable=SC2064
    trap "kill $pid 2>/dev/null || true" EXIT
    sleep 2
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name did not start:" >&2
        tail -5 "target/compare-server-$name.log" >&2
        exit 1
    fi
    echo "## $name"
    python3 scripts/loadtest.py --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY" \
        "${REQUESTS[@]}" --json "target/compare-server-$name.json"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    NAMES+=("$name")
    echo
}

if [ "$LLAMACPP" = 1 ]; then
    LD_LIBRARY_PATH="$(dirname "$SERVER")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        run_load llama-server "$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np 16 \
        -c 8192 -fa on -t "$THREADS" -tb "$THREADS" --jinja
fi
WICK_FLAGS=(serve --model "$MODEL" --port "$PORT")
if [ -n "$BEFORE" ]; then
    echo "wick-before: $BEFORE"
    WICK_THREADS=$THREADS run_load wick-before "$BEFORE" "${WICK_FLAGS[@]}"
fi
echo "wick: target/release/wick ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', uncommitted changes'))"
WICK_THREADS=$THREADS run_load wick target/release/wick "${WICK_FLAGS[@]}"

# One table per figure, a column per server, a row per concurrency level.
python3 - "${NAMES[@]}" <<'PY'
import json, sys

names = sys.argv[1:]
runs = {}
for n in names:
    with open(f"target/compare-server-{n}.json") as f:
        runs[n] = {lv["concurrency"]: lv for lv in json.load(f)["levels"]}
levels = sorted({c for r in runs.values() for c in r})
ratio = "wick-before" in runs and "wick" in runs
print("## summary")
for key, title, fmt in [
    ("tok_per_s", "generated tok/s (higher is better)", "{:.1f}"),
    ("ttft_p50_ms", "TTFT p50 ms (lower is better)", "{:.0f}"),
    ("itl_p50_ms", "ITL p50 ms (lower is better)", "{:.1f}"),
]:
    print(f"\n{title}\n")
    cols = names + (["wick / wick-before"] if ratio else [])
    print("| concurrency | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for c in levels:
        cells = [fmt.format(runs[n][c][key]) if c in runs[n] else "-" for n in names]
        if ratio:
            b, a = runs["wick-before"].get(c), runs["wick"].get(c)
            cells.append(f"{a[key] / b[key]:.2f}" if a and b and b[key] else "-")
        print(f"| {c} | " + " | ".join(cells) + " |")
PY
