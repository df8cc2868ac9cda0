"""A regression injected into the baselines rather than the code: every measured time divided.

Dividing a baseline's times by FACTOR makes unchanged code read FACTOR times slower against
it, as a slowdown of the code would, without writing a slow variant of every suite test.
Used by the halved-baselines test and by benchmarks/gross_evidence.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_efficientllm.measuring.fingerprint import host_fingerprint
from pytest_efficientllm.storage.cpu_folders import BaselineFolders


def slow_down(folder: Path, factor: float, only: str = "") -> int:
    """Divide every measured time (value, rounds, run history) in the baseline files under
    `folder` by `factor`, in place, of the tests whose node id contains `only` (all by default);
    returns how many metrics were changed."""
    changed = 0
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        for nodeid, entry in data["tests"].items():
            if only not in nodeid:
                continue
            for metric in entry["metrics"].values():
                if metric.get("source") != "measured" or metric.get("unit") != "s" or metric.get("value") is None:
                    continue
                metric["value"] /= factor
                for key in ("samples", "history"):
                    if metric.get(key):
                        metric[key] = [x / factor for x in metric[key]]
                changed += 1
        path.write_text(json.dumps(data))
    return changed


def compared_here(root: Path) -> Path:
    """The `cpu` baselines under `root` that a run on this machine is compared with: this CPU
    model's own folder where it has one (`cpu@<cpu>`), else `root/cpu`."""
    folders = BaselineFolders(root, "cpu", host_fingerprint(threads=1))
    return folders.own_folder() or folders.main.folder
