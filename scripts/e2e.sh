#!/usr/bin/env bash
# The end-to-end suite (tests/e2e/): the official `openai` Python client against the built
# `wick` binary on the real test model. Uses the binary `cargo test` built for the integration
# tests ($WICK_BIN, else $CARGO_TARGET_DIR/debug/wick, else target/debug/wick): no second build.
# Makes .venv-e2e (git-ignored) with the pinned packages on first use. Extra arguments go to
# pytest instead of the whole suite, e.g. `scripts/e2e.sh tests/e2e/test_api.py -k embeddings`.
set -euo pipefail
cd "$(dirname "$0")/.."
export WICK_BIN="${WICK_BIN:-${CARGO_TARGET_DIR:-target}/debug/wick}"
if [ ! -x "$WICK_BIN" ]; then
  echo "error: no wick binary at $WICK_BIN (cargo test --tests builds it)" >&2
  exit 1
fi
venv=.venv-e2e
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
[ $# -gt 0 ] || set -- tests/e2e
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
