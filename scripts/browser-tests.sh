#!/usr/bin/env bash
# The web page's tests: Vitest unit tests (stream parsers, state), then the browser tests
# (web/tests/browser/: playwright-core driving Debian's Chromium, headless, against the built
# `wick` binary on the real test model; axe-core on the chat and the dashboard). Uses the binary
# `cargo test` built ($WICK_BIN, else $CARGO_TARGET_DIR/debug/wick, else target/debug/wick) and
# the browser at $CHROMIUM (default /usr/bin/chromium: `apt-get install -y chromium`).
# WICK_SCREENSHOTS=1 also writes docs/screenshot-chat.png and docs/screenshot-dashboard.png.
set -euo pipefail
cd "$(dirname "$0")/.."
export WICK_BIN="${WICK_BIN:-${CARGO_TARGET_DIR:-target}/debug/wick}"
case "$WICK_BIN" in /*) ;; *) WICK_BIN="$PWD/$WICK_BIN" ;; esac
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$WICK_BIN" ]; then
  echo "error: no wick binary at $WICK_BIN (cargo test --tests builds it)" >&2
  exit 1
fi
if [ ! -x "$CHROMIUM" ]; then
  echo "error: no Chromium at $CHROMIUM (apt-get install -y chromium, or set CHROMIUM)" >&2
  exit 1
fi
cd web
# build.rs has installed the packages when it built the page; a tree built without it has not.
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
npx vitest run
node --test tests/browser/chat.test.mjs
