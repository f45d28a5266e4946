#!/usr/bin/env bash
# wick against llama.cpp on this machine, same model, same threads, same token ids:
# prefill 128 / 512, decode 128, batched decode 16 x 64 (after 128-token prompts).
#
# llama.cpp comes from the PyPI sdist llama-cpp-python==0.3.36 (it compiles the llama.cpp it
# vendors, -march=native), installed once into a throwaway venv under target/ (git-ignored,
# never committed; delete it to rebuild). Runs the two alternately (--rounds, default 2) and
# prints median tok/s and the ratios. Measure on a quiet machine: only ratios from one run
# count.
#
#   scripts/compare-llamacpp.sh [--rounds N] [--threads N] [--model FILE]
set -euo pipefail

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
THREADS=2
ROUNDS=2
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# A --model path is relative to where the caller runs; the default is relative to the checkout.
if [ "$MODEL" != models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    [ -f "$MODEL" ] || { echo "--model $MODEL: no such file" >&2; exit 2; }
    MODEL=$(realpath "$MODEL")
fi
cd "$(dirname "$0")/.."

if [ "$MODEL" = models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    scripts/fetch-test-model.sh
fi

VENV=${LLAMACPP_VENV:-target/llamacpp-venv}
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "building llama-cpp-python==0.3.36 into $VENV (compiles llama.cpp; several minutes)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        "$VENV/bin/pip" install --quiet "llama-cpp-python==0.3.36"
fi

cargo build --release --locked --bin wick

python3 scripts/compare_speed.py \
    --wick target/release/wick \
    --python "$VENV/bin/python" \
    --model "$MODEL" \
    --threads "$THREADS" \
    --rounds "$ROUNDS"
