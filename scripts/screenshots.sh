#!/usr/bin/env bash
# Regenerates the README's screenshots (docs/screenshot-chat.png, docs/screenshot-dashboard.png)
# by running the browser tests with WICK_SCREENSHOTS=1. Build first: cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
WICK_SCREENSHOTS=1 ./scripts/browser-tests.sh
ls -l docs/screenshot-*.png
