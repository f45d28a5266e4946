#!/usr/bin/env bash
# The test command: fetches the test model if needed, then builds once and runs every test
# (unit, integration against ../shared/reference/, CLI), then the end-to-end suite with the
# `openai` Python client against the binary that same build made (scripts/e2e.sh; skipped with
# WICK_SKIP_E2E=1), then the web page's tests in Chromium (scripts/browser-tests.sh; skipped with
# WICK_SKIP_BROWSER=1). Arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-test-model.sh
cargo test --locked --lib --bins --tests "$@"
if [ "${WICK_SKIP_E2E:-}" != 1 ]; then
  ./scripts/e2e.sh
fi
if [ "${WICK_SKIP_BROWSER:-}" != 1 ]; then
  ./scripts/browser-tests.sh
fi
