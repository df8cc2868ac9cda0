"""Where the untimed counting run goes: after warm-up, or after the rounds when there is none.

The counting run calls the workload too. With `warmup=0` the first timed round must be the
workload's first call (a cold start, which is what warmup=0 asks to time), and the counted cost
must still be a steady call's, the same as with warm-up, or the exact gate would flip on a
change of the warm-up alone.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")

COLD_START_S = 0.05


def test_warmup_0_times_the_first_call_and_counts_the_same_as_with_warmup(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        f"""
        import time, pytest, torch

        state = {{}}

        def work():
            state["calls"] = state.get("calls", 0) + 1
            if state["calls"] == 1:
                time.sleep({COLD_START_S})
                state["cache"] = torch.zeros(4096)  # built lazily on the first call, then kept
            return torch.ones(256) * 2

        @pytest.mark.efficiency(rounds=3, warmup=0)
        def test_cold(efficiency):
            state.clear()
            run = efficiency.measure(work)
            first, *rest = run["AL"].samples
            assert first >= {COLD_START_S}, "the first timed round was not the first call"
            assert max(rest) < {COLD_START_S}
            assert state["calls"] == 4  # 3 timed rounds, then the counting run

        @pytest.mark.efficiency(rounds=3, warmup=1)
        def test_warm(efficiency):
            state.clear()
            run = efficiency.measure(work)
            assert max(run["AL"].samples) < {COLD_START_S}
            assert state["calls"] == 5  # warm-up, the counting run, 3 timed rounds
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--efficiency-json=run.json")
    result.assert_outcomes(passed=2)
    records = {
        r["nodeid"].rsplit("::", 1)[1]: r["metrics"]
        for r in json.loads((pytester.path / "run.json").read_text())["records"]
    }
    for name in ("allocations", "allocated_bytes", "bytes_accessed", "operators", "tensor_peak_bytes", "flops"):
        cold, warm = records["test_cold"][name], records["test_warm"][name]
        assert cold["source"] == "counted" and cold["value"] == warm["value"], (name, cold["value"], warm["value"])
