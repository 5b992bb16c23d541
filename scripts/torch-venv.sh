#!/usr/bin/env bash
# PyTorch and sentence-transformers in .bench-venv/, for the scripts that run
# them (the peer in benchmarks, model adaptation): installed from PyPI on
# first use (about 2.5 GB: PyPI's torch wheels carry CUDA libraries).
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .bench-venv/bin/python ]; then
  python3 -m venv .bench-venv >&2
  .bench-venv/bin/pip install --quiet --disable-pip-version-check torch sentence-transformers >&2
fi
echo .bench-venv/bin/python
