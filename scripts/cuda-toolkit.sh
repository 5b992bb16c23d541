#!/usr/bin/env bash
# Installs what building `--features cuda` needs into .cuda/ (no root, no
# Debian packages): NVIDIA's CUDA 13.0 compiler, headers and libraries from
# PyPI's wheels, laid out as a toolkit directory, plus a link-time stub of the
# driver library (libcuda.so), which only a machine with an NVIDIA driver has.
# The 13.0 line matches a CUDA 13.0 driver (R580); a newer nvcc would emit PTX
# that driver cannot load. Prints the environment to build and run with
# (the libraries' folder on LD_LIBRARY_PATH: a CUDA build needs them to start);
# use it as
#   eval "$(scripts/cuda-toolkit.sh)"
# About 600 MB of wheels on first use; later runs reuse .cuda/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD/.cuda
TK=$ROOT/toolkit
if [ ! -x "$TK/bin/nvcc" ] || [ ! -f "$TK/lib/stubs/libcuda.so" ]; then
  echo "installing the CUDA 13.0 toolkit from PyPI into .cuda/ ..." >&2
  rm -rf "$ROOT.partial" && mkdir -p "$ROOT.partial/wheels"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 --python-version 3.11 \
    -d "$ROOT.partial/wheels" \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 >&2
  mkdir -p "$ROOT.partial/unpacked"
  for w in "$ROOT.partial"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$ROOT.partial/unpacked" >&2
  done
  mv "$ROOT.partial/unpacked/nvidia/cu13" "$ROOT.partial/toolkit"
  chmod +x "$ROOT.partial"/toolkit/bin/* "$ROOT.partial"/toolkit/nvvm/bin/* 2>/dev/null || true
  # The linker's names for the versioned libraries the wheels ship.
  (cd "$ROOT.partial/toolkit/lib" && for f in lib*.so.*; do
     base=${f%%.so.*}.so; [ -e "$base" ] || ln -s "$f" "$base"; done)
  ln -s lib "$ROOT.partial/toolkit/lib64"
  # libcuda.so comes with the driver, not the toolkit: link against a stub that
  # defines the driver functions cudarc declares; the real library is loaded at
  # run time. (NVIDIA's toolkit ships the same kind of stub in lib64/stubs.)
  mkdir -p "$ROOT.partial/toolkit/lib/stubs"
  # The cudarc that Cargo.lock names for candle.
  VERSION=$(grep -A1 '^name = "cudarc"' Cargo.lock | sed -n 's/^version = "\(0\.19\.[0-9]*\)"/\1/p' | head -1)
  find_cudarc() { (ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$VERSION" 2>/dev/null || true) | head -1; }
  CUDARC=$(find_cudarc)
  if [ -z "$CUDARC" ]; then
    cargo fetch --quiet >&2
    CUDARC=$(find_cudarc)
  fi
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u \
    | sed 's/.*/int &(void) { return 999; }/' > "$ROOT.partial/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT.partial/toolkit/lib/stubs/libcuda.so" "$ROOT.partial/stub.c"
  rm -rf "$ROOT.partial/wheels" "$ROOT.partial/unpacked" "$ROOT.partial/stub.c" "$ROOT"
  mv "$ROOT.partial" "$ROOT"
  "$TK/bin/nvcc" --version | tail -2 >&2
fi
# The GPU's own architecture when one is here (candle's kernels are built for
# it), else the H100/H200 generation (9.0); CUDA_COMPUTE_CAP overrides both.
CAP=${CUDA_COMPUTE_CAP:-$( (nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true) | head -1 | tr -d '. ')}
cat <<EOF
export CUDA_HOME="$TK" CUDA_PATH="$TK" CUDA_ROOT="$TK"
export PATH="$TK/bin:\$PATH"
export CUDA_COMPUTE_CAP="${CAP:-90}"
export LIBRARY_PATH="$TK/lib:$TK/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$TK/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
