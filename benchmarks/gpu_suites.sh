#!/usr/bin/env bash
# On a lent GPU machine (see README): NVML figures, then the suites at small scale recording
# baselines/<profile>/. Its image lacks some suite packages: those modules skip or fail to
# collect, and the rest runs. Results go to $OUT.
set -u
export HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv > "$OUT/nvidia-smi.csv" 2>&1
timeout 60 python benchmarks/gpu_energy_check.py > "$OUT/nvml.md" 2>&1
rm -rf baselines/h100 baselines/h200
timeout "${SUITE_TIMEOUT:-330}" python -m pytest -p pytest_efficientllm.plugin suites/ --gpu="${GPU:-auto}" --scale=small \
    --update-baselines --continue-on-collection-errors --efficiency-json="$OUT/suites-small.json" -q -p no:cacheprovider \
    > "$OUT/suites-small.log" 2>&1
echo "suites rc=$?" >> "$OUT/suites-small.log"
tar czf "$OUT/baselines-gpu.tgz" $(ls -d baselines/h100 baselines/h200 2>/dev/null)
tail -5 "$OUT/suites-small.log"; cat "$OUT/nvml.md"
