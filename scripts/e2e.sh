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
py="$venv/bin/python"
if [ ! -x "$py" ] && ! python3 -m venv "$venv" >/dev/null 2>&1; then
  # No venv module (a bare distro Python): install next to the tree with pip --target instead.
  rm -rf "$venv"
  py=python3
  export PYTHONPATH="$PWD/$venv/site${PYTHONPATH:+:$PYTHONPATH}"
  pip_target=(--target "$venv/site")
fi
"$py" -m pip install --quiet --disable-pip-version-check ${pip_target[@]+"${pip_target[@]}"} \
  -r tests/e2e/requirements.txt
[ $# -gt 0 ] || set -- tests/e2e
"$py" -m pytest -q -p no:cacheprovider "$@"
