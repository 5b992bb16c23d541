#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible chat server (llama-cpp-python[server]) in a
# virtual environment, for trying answers against a real endpoint and for the
# tests in tests/answer_endpoint.rs. pip builds llama.cpp from source: CPU
# only, tuned for this machine (GGML_NATIVE), no BLAS. It needs a C/C++
# compiler; CMake comes from PyPI when none is installed. The build takes
# several minutes on a small machine (about 5 on 2 cores).
#
# Usage: scripts/setup-llama-server.sh [VENV_DIR]
#
# VENV_DIR defaults to $LLAMA_SERVER_VENV, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/discord-indexer/llama-server-venv (where
# the tests look). Running it again does nothing when the server is already
# installed. Prints the venv's python, which runs the server:
#
#   "$(scripts/setup-llama-server.sh)" -m llama_cpp.server \
#       --model models/SmolLM2-135M-Instruct.Q4_1.gguf --host 127.0.0.1 --port 8080
#
# and answers at http://127.0.0.1:8080/v1 ([answer] endpoint).
# scripts/llama-server.sh starts and stops one in the background.
set -euo pipefail
VERSION="0.3.36"
CACHE=${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}
VENV=${1:-${LLAMA_SERVER_VENV:-$CACHE/discord-indexer/llama-server-venv}}
case "$VENV" in
  /*) ;;
  *) VENV="$PWD/$VENV" ;;
esac
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" -c 'import llama_cpp.server, uvicorn, sse_starlette' 2>/dev/null; then
  echo "$PY"
  exit 0
fi

if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
  echo "setup-llama-server: no C++ compiler; install one (Debian/Ubuntu: apt-get install build-essential)" >&2
  exit 1
fi

PYTHON=${PYTHON:-python3}
if [ ! -x "$PY" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" >&2
fi
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install --quiet --upgrade pip >&2
# No system CMake: the one from PyPI (the build backend, scikit-build-core,
# would fetch it too, but this way the build finds it on PATH).
if ! command -v cmake >/dev/null 2>&1; then
  "${PIP[@]}" install --quiet cmake ninja >&2
  export PATH="$VENV/bin:$PATH"
fi

echo "setup-llama-server: building llama-cpp-python $VERSION (llama.cpp from source, CPU only); this takes minutes" >&2
START=$(date +%s)
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF ${LLAMA_CMAKE_ARGS:-}" \
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc 2>/dev/null || echo 2)} \
  "${PIP[@]}" install --quiet --no-cache-dir "llama-cpp-python[server]==$VERSION" >&2
echo "setup-llama-server: installed in $(($(date +%s) - START)) s" >&2

"$PY" -c 'import llama_cpp.server, uvicorn, sse_starlette' >&2
echo "$PY"
