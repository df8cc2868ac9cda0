#!/usr/bin/env bash
# The prepared GPU check (issue 19); benchmarks/gpu_check.py says what it does and how to run it.
#   here, once, with network:  python benchmarks/gpu_check.py prepare      (builds .wheelhouse/)
#   on the GPU machine:        bash benchmarks/gpu_check.sh                (files into $OUT)
#   rehearsal on this CPU:     bash benchmarks/gpu_check.sh --cpu
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU rehearsal uses the project's virtual environment where there is one (PYTHON overrides).
cpu=${GPU_CHECK_MODE:-}
for arg in "$@"; do [ "$arg" = --cpu ] && cpu=cpu; done
if [ "$cpu" = cpu ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
exec "$PY" benchmarks/gpu_check.py "$@"
