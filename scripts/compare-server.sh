#!/usr/bin/env bash
# wick serve against llama.cpp's llama-server under the same HTTP load (scripts/loadtest.py:
# streamed chat, ~128-token user messages, 128 generated tokens, concurrency 1, 4, 8, 16), one
# after the other on this machine, same model, 2 threads. llama-server is built once from the
# llama.cpp that the PyPI sdist llama-cpp-python==0.3.36 vendors (commit 0c1e570), with cmake
# from the throwaway venv of scripts/compare-llamacpp.sh, under target/ (never committed).
# It runs with 16 slots and flash attention, as the CPU-speed and engine issues specify.
#
#   scripts/compare-server.sh [--concurrency 1,4,8,16]
set -euo pipefail
cd "$(dirname "$0")/.."

CONCURRENCY=1,4,8,16
while [ $# -gt 0 ]; do
    case "$1" in
        --concurrency) CONCURRENCY=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=${WICK_THREADS:-2}
scripts/fetch-test-model.sh

VENV=${LLAMACPP_VENV:-target/llamacpp-venv}
SRC=target/llamacpp-src
SERVER=$SRC/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server
if [ ! -x "$SERVER" ]; then
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
run_load() {
    local name=$1
    shift
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
    python3 scripts/loadtest.py --url "http://127.0.0.1:$PORT" --concurrency "$CONCURRENCY"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    trap - EXIT
    echo
}

LD_LIBRARY_PATH="$(dirname "$SERVER")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    run_load llama-server "$SERVER" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -np 16 -c 8192 \
    -fa on -t "$THREADS" -tb "$THREADS" --jinja
WICK_THREADS=$THREADS run_load wick target/release/wick serve --model "$MODEL" --port "$PORT"
