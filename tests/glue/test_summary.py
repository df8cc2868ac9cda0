"""The terminal summary's layout: 100 columns, what broke, long names, a shared GPU."""

from __future__ import annotations

from types import SimpleNamespace

from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.summary import WIDTH, _threads_line, details, table
from pytest_efficientllm.judging.verdicts import Verdict
from tests.helpers.record_builders import counted, latency, record


def test_the_summary_fits_100_columns_and_shows_what_broke() -> None:
    long_id = "suites/test_architecture.py::test_pretrain_step[" + "MLA-latent-" * 8 + "]"
    results = [
        TestResult(
            record(long_id, latency(0.0123), counted("peak_memory", 3 * 2**30)),
            [
                Verdict(
                    "AL",
                    "fail",
                    "12.3 ms n=7 vs baseline 10.1 ms n=7 (+21.8%, 95% interval +18.0% .. "
                    "+25.1%; tolerance +5%): slower beyond tolerance and noise",
                    "baseline",
                    0.218,
                )
            ],
            "passed",
        ),
        TestResult(record("t.py::ok", latency(0.001)), [Verdict("AL", "pass", "fine", "baseline", -0.01)], "passed"),
    ]
    lines = table(results) + details(results)
    assert max(len(line) for line in lines) <= WIDTH
    assert any("AL +21.8%" in line and line.rstrip().endswith("FAIL") for line in lines)
    assert any("test_pretrain_step[MLA" in line and "…" in line for line in lines)
    assert any("tolerance +5%" in line for line in lines)


def test_the_change_column_keeps_the_percentage_of_a_long_metric_name() -> None:
    v = Verdict("cpu_time_per_round", "warn", "+22.0% ...", "baseline", 0.2204)
    results = [TestResult(record("t.py::slow", latency(0.001)), [v], "passed")]
    row = table(results)[1]
    assert "cpu/round +22.0%" in row and row.endswith("warn")
    odd = Verdict("latency_p99_of_a_custom_window", "fail", "", "baseline", -12.5)
    row = table([TestResult(record("t.py::odd", latency(0.001)), [odd], "passed")])[1]
    assert "-1250.0%" in row  # the name gives way, not the number


def test_the_summary_says_when_workers_share_a_gpu_under_its_lock() -> None:
    workers = {f"gw{i}": {"threads": 4, "cores": 16, "device": None, "locked_device": "0"} for i in range(2)}
    line = _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]
    assert "2 xdist workers" in line and "GPU 0 shared by workers: one measured test at a time" in line
    for w in workers.values():
        w["locked_device"] = None
    assert "shared" not in _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]
