#!/usr/bin/env bash
# The test command: fetches the test model if needed, then builds once and runs every test
# (unit, integration against ../shared/reference/, CLI) from that build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-test-model.sh
cargo test --locked --lib --bins --tests "$@"
