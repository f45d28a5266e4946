"""Validates every object of rendered Kubernetes YAML (files given, `-` for stdin) against the
Kubernetes OpenAPI schemas that `kubernetes-validate` ships, strictly (unknown fields fail), for
each version given with `-k`. Kinds from CRDs (the components' ServiceMonitor, ScaledObject,
InferencePool, HTTPRoute) have no schema in that package and none may be vendored here: they
are listed in CRD_KINDS and skipped with a note; any other kind without a schema fails.

Run by scripts/check-deploy.sh; exits 1 on the first failure, printing which object and why.
"""

from __future__ import annotations

import argparse
import sys

import kubernetes_validate
import yaml

# apiVersion/kind of the custom resources the manifests use; skipped with a note.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("-k", "--kubernetes-version", action="append", required=True)
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    skipped: set[tuple[str, str]] = set()
    checked = 0
    for name in a.files:
        text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            key = (obj.get("apiVersion", ""), obj.get("kind", ""))
            what = f"{name}: {key[1]}/{obj.get('metadata', {}).get('name')}"
            if key in CRD_KINDS:
                skipped.add(key)
                continue
            for version in a.kubernetes_version:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    print(f"error: {what} (Kubernetes {version}): {e.message} at {list(e.path)}")
                    return 1
                except kubernetes_validate.SchemaNotFoundError as e:
                    print(f"error: {what}: no schema for {key} in Kubernetes {version}: {e}")
                    return 1
            checked += 1
    print(f"schemas: {checked} objects valid against Kubernetes {', '.join(a.kubernetes_version)}")
    for api, kind in sorted(skipped):
        print(f"note: {kind} ({api}) is a CRD kind with no bundled schema: not validated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
