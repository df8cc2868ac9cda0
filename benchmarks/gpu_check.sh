#!/usr/bin/env bash
# The prepared GPU check (issue 19); benchmarks/gpu_check.py says what it does and how to run it.
#   here, once, with network:  python benchmarks/gpu_check.py prepare      (builds .wheelhouse/)
#   on the GPU machine:        bash benchmarks/gpu_check.sh                (files into $OUT)
#   rehearsal on this CPU:     bash benchmarks/gpu_check.sh --cpu
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
for arg in "$@"; do [ "$arg" = --cpu ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python; done
exec "$PY" benchmarks/gpu_check.py "$@"
