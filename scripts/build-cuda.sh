#!/usr/bin/env bash
# Compiles `wick` with `--features cuda` on a machine without a GPU or a CUDA install: NVIDIA's
# CUDA 13.0 (Update 2) compiler and libraries come from their PyPI wheels, pinned, in a venv
# under target/; candle's kernels are compiled for CUDA_COMPUTE_CAP (default 90, Hopper; see the
# table in Dockerfile.cuda). The binary lands in target/release/wick.
#
# cudarc (candle's CUDA binding) links the driver library libcuda.so at build time, and no
# wheel ships it (it comes with the GPU driver). The CUDA toolkit's answer is a stub library of
# the same name: this script builds one from the driver entry points cudarc declares, used for
# linking only; at run time the real libcuda.so.1 of the driver is loaded (in the container,
# the NVIDIA container toolkit mounts it).
#
# Not run in CI: a release build of every dependency plus nvcc on candle's kernels. Measured
# cold on the shared 2-core development machine with CARGO_BUILD_JOBS=1 at nice 19: 1923 s
# (the result: a stripped 66 MB binary); far over CI's budget. Once target/release holds the
# dependencies, a change to wick rebuilds in minutes.
# Needs network access to PyPI and crates.io on first use. `--toolchain-only` stops before the
# cargo build, after checking that nvcc compiles a kernel for CUDA_COMPUTE_CAP and that a
# program links against the stub and the wheels' cuBLAS, cuRAND and NVRTC (a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/cuda-venv"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"

# CUDA 13.0 Update 2's components. cuBLAS and cuRAND number their versions on their own
# (cuBLAS 13.1.0 and cuRAND 10.4.0 are the ones CUDA 13.0 Update 2 ships).
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.1.0.3
  nvidia-curand==10.4.0.35
)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
cuda="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
[ -x "$cuda/bin/nvcc" ] || { echo "error: no nvcc under $cuda" >&2; exit 1; }

# The linker wants unversioned names (libcublas.so); the wheels ship libcublas.so.13 and such.
links="$target/cuda-link"
rm -rf "$links" && mkdir -p "$links"
for lib in "$cuda"/lib/lib*.so.*; do
  base="$(basename "$lib")"
  ln -sf "$(cd "$(dirname "$lib")" && pwd)/$base" "$links/${base%%.so.*}.so"
done

# The libcuda.so stub: one empty function per driver entry point cudarc declares.
cargo fetch --locked --quiet
cudarc="$(cargo metadata --format-version 1 --locked --features cuda \
  | "$venv/bin/python" -c 'import json, sys, os
pkgs = json.load(sys.stdin)["packages"]
print(next(os.path.dirname(p["manifest_path"]) for p in pkgs if p["name"] == "cudarc"))')"
grep -rhoE '\bfn cu[A-Za-z0-9_]+' "$cudarc/src/driver/sys" | sed 's/^fn //' | sort -u \
  | sed 's/.*/void &(void) {}/' >"$links/cuda_stub.c"
[ -s "$links/cuda_stub.c" ] || { echo "error: no driver entry points found in $cudarc" >&2; exit 1; }
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$links/libcuda.so" "$links/cuda_stub.c"

export PATH="$cuda/bin:$PATH"
export CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export LIBRARY_PATH="$PWD/$links${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$cuda/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false
nvcc --version | tail -2
if [ "${1:-}" = --toolchain-only ]; then
  printf '%s\n' 'extern "C" __global__ void add(float *x) { x[threadIdx.x] += 1.0f; }' >"$links/k.cu"
  nvcc --ptx -arch="sm_$CUDA_COMPUTE_CAP" -o "$links/k.ptx" "$links/k.cu"
  grep -q "\.target sm_$CUDA_COMPUTE_CAP" "$links/k.ptx"
  printf '%s\n' 'int cuInit(unsigned); int cublasCreate_v2(void **); int nvrtcVersion(int *, int *);' \
    'int curandCreateGenerator(void **, int);' \
    'int main(void) { return cuInit(0) + cublasCreate_v2(0) + nvrtcVersion(0, 0) + curandCreateGenerator(0, 0); }' \
    >"$links/main.c"
  cc -o "$links/main" "$links/main.c" -L"$links" -lcuda -lcublas -lnvrtc -lcurand
  echo "toolchain ok: nvcc compiles for sm_$CUDA_COMPUTE_CAP; libcuda stub, cuBLAS, NVRTC, cuRAND link"
  exit 0
fi
echo "building wick --features cuda for compute capability $CUDA_COMPUTE_CAP ..."
start=$(date +%s)
cargo build --release --locked --features cuda --bin wick
echo "built $target/release/wick with CUDA in $(( $(date +%s) - start )) s"
