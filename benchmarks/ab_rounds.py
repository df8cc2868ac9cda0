"""Do more rounds per process narrow `ab`'s intervals? A/A comparisons of the tiny Llama forward
copies (`gate_evidence.WORKLOAD`, `test_forward`), 6 pairs, no confirmation, alternating between
the default rounds and `--efficiency-min-time` (more rounds in each process) so that both see
the same minutes of the machine. Printed per comparison: its seconds, the median width of the
CPU-time intervals (points), how many are not resolved, and the changes.

    python benchmarks/ab_rounds.py [--reps 4] [--min-time "0.5 s"] [--tests 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("GATE_BENCHMARKS_DIR", str(HERE))
sys.path.insert(0, str(HERE.parent))

import ab_evidence  # noqa: E402

from pytest_efficientllm.ab.command import run_comparison  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--min-time", default="0.5 s")
    parser.add_argument("--tests", type=int, default=4, help="forward copies per process")
    args = parser.parse_args()
    os.environ["GATE_FWD_TESTS"] = str(args.tests)
    settings = {"default rounds": [], f"min-time {args.min_time}": [f"--efficiency-min-time={args.min_time}"]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, head = ab_evidence.side_folder(root, "a", 0.0), ab_evidence.side_folder(root, "b", 0.0)
        for rep in range(args.reps):
            order = list(settings.items()) if rep % 2 == 0 else list(settings.items())[::-1]
            for name, extra in order:
                started = time.monotonic()
                comparison = run_comparison(
                    str(base),
                    str(head),
                    ["--efficiency-threads=1", "-k", "test_forward", *extra],
                    root / f"out-{rep}-{len(extra)}",
                    pairs=6,
                    confirm=False,
                )
                seconds = time.monotonic() - started
                timings = [v for t in comparison.tests for v in t.verdicts if v.metric == "cpu_time_per_round"]
                widths = []
                for v in timings:
                    assert v.interval is not None, v.message
                    widths.append(100 * (v.interval[1] - v.interval[0]))
                changes = [v.change or 0.0 for v in timings]
                unresolved = sum(v.unresolved is not None for v in timings)
                print(
                    f"{time.strftime('%H:%M:%S')} rep {rep} {name:18s} {seconds:5.0f} s; median width "
                    f"{statistics.median(widths):5.1f} points; not resolved {unresolved} of {len(timings)}; "
                    f"changes {min(changes):+.1%} .. {max(changes):+.1%}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
