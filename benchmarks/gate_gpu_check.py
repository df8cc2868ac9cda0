"""GPU check of the gate: worker pinning, one measured test per GPU at a time, A/A and +10% on CUDA time.

    python benchmarks/gate_gpu_check.py [--runs 4]

Two xdist workers share one GPU (`-n 2 --efficiency-devices=0`): both must see
CUDA_VISIBLE_DEVICES=0, and their measured tests must never overlap in time (the per-device
lock). Then baselines are recorded once, and candidate runs (separate processes) compare
with them: the same work (A/A) and 10% more matmuls per round (A/B). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOAD = """
import os, time, torch, pytest

EXTRA = float(os.environ.get("GATE_SLOWDOWN", "0"))
MATMULS = 20

@pytest.mark.efficiency(rounds=10, warmup=2, flops=False)
@pytest.mark.parametrize("copy", range(4))
def test_gpu(efficiency, copy):
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    a = torch.randn(4096, 4096, device="cuda")
    count = round(MATMULS * (1 + EXTRA))

    def work():
        for _ in range(count):
            a @ a

    start = time.time()
    efficiency.measure(work, tokens=4096)
    efficiency.settings(span=[start, time.time()])
"""


REPO = Path(__file__).resolve().parents[1]


def _plugin_args() -> list[str]:
    # Without an installed entry point (a bare GPU image), load the plugin from this checkout.
    from importlib.metadata import entry_points

    installed = any(ep.name == "efficiency" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "pytest_efficientllm.glue.hooks"]


def run(project: Path, env: dict[str, str], *args: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *_plugin_args(),
        "-n",
        "2",
        "--efficiency-devices=0",
        *args,
    ]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        cmd, cwd=project, env={**os.environ, **env, "PYTHONPATH": path}, capture_output=True, text=True, timeout=500
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stdout[-4000:] + proc.stderr[-2000:])
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4, help="A/A candidate runs (plus half as many +10%% runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_gpu_workload.py").write_text(WORKLOAD)
        (project / "pytest.ini").write_text("[pytest]\n")
        out = run(project, {"GATE_SLOWDOWN": "0"}, "--update-baselines")
        print("\n".join(line for line in out.splitlines() if "xdist worker" in line or "baselines" in line))
        rows = []
        overlaps = 0
        for i, (name, slow) in enumerate([("A/A", "0")] * args.runs + [("+10%", "0.10")] * max(1, args.runs // 2)):
            path = project / f"run{i}.json"
            run(project, {"GATE_SLOWDOWN": slow}, f"--efficiency-json={path}")
            doc = json.loads(path.read_text())
            spans = sorted(tuple(r["settings"]["span"]) for r in doc["records"])
            overlaps += sum(b[0] < a[1] for a, b in zip(spans, spans[1:]))
            for _nodeid, verdicts in doc["runs"][0]["verdicts"].items():
                for v in verdicts:
                    if v["metric"] == "AL":
                        rows.append((name, v["status"], v["change"]))
        print(
            f"profile: {doc['records'][0]['profile']}; device: {doc['records'][0]['fingerprint'].get('gpu_name', '?')}"
        )
        print(f"overlapping measured tests on the shared GPU: {overlaps}")
        print("| trial | comparisons | gate failed | changes seen |\n|---|---|---|---|")
        for name in ("A/A", "+10%"):
            chosen = [r for r in rows if r[0] == name]
            changes = ", ".join(f"{100 * c:+.1f}%" for _, _, c in chosen if c is not None)
            print(f"| {name} | {len(chosen)} | {sum(s == 'fail' for _, s, _ in chosen)} | {changes} |")


if __name__ == "__main__":
    main()
