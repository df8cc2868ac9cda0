"""The terminal summary's layout: 100 columns, what broke, long names, a shared GPU; the memory
and traffic columns; a fingerprint difference said once; warnings counted by kind."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from pytest_efficientllm.core.limits import parse_limit
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.glue.state import TestResult
from pytest_efficientllm.glue.summary import _confirmation_line, _store_lines, _threads_line
from pytest_efficientllm.glue.summary_findings import details, fingerprint_lines
from pytest_efficientllm.glue.summary_table import memory_legend, table
from pytest_efficientllm.glue.summary_text import WIDTH, short_ids
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.leak import LeakFinding
from pytest_efficientllm.judging.verdicts import Verdict, check_budget
from pytest_efficientllm.storage.baselines import FileUpdate
from tests.helpers.record_builders import counted, latency, record

MiB = 2**20
RSS = Metric("peak_memory", 480 * MiB, "B", "lower", "measured", "procfs: VmHWM reset per window via clear_refs")
ALLOCATOR = Metric(
    "peak_memory",
    81 * MiB,
    "B",
    "lower",
    "measured",
    "torch.cuda caching allocator, peak stats reset at window open: max_memory_allocated",
)
OLD_KERNEL = {"os": "Linux 6.18.44-fc-v669"}
NEW_KERNEL = {"os": "Linux 6.18.44-fc-v1272"}


def _row(lines: list[str], name: str) -> str:
    return next(line for line in lines if line.startswith(name))


def _cells(header: str, row: str, column: str) -> str:
    """The text of `row` under `column`, right-aligned like the header (cells end where it ends)."""
    end = header.index(column) + len(column)
    start = header.rfind(" ", 0, header.index(column)) if header.index(column) else 0
    prev_end = len(header[:start].rstrip())
    return row[prev_end:end].strip()


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
    assert any("architecture::test_pretrain" in line and "…" in line for line in lines)
    assert any("tolerance +5%" in line for line in lines)


def test_the_change_column_keeps_the_percentage_of_a_long_metric_name() -> None:
    v = Verdict("cpu_time_per_round", "warn", "+22.0% ...", "baseline", 0.2204)
    results = [TestResult(record("t.py::slow", latency(0.001)), [v], "passed")]
    row = table(results)[1]
    assert "cpu/round +22.0%" in row and row.endswith("warn")
    odd = Verdict("latency_p99_of_a_custom_window", "fail", "", "baseline", -12.5)
    row = table([TestResult(record("t.py::odd", latency(0.001)), [odd], "passed")])[1]
    assert "-1250.0%" in row  # the name gives way, not the number


def test_a_passing_rows_change_is_its_time_not_a_counted_zero() -> None:
    # The CPU suites' passing rows read "allocated_ +0.0%" (the first counted metric, exact by
    # definition) and hid their CPU time's change, which read -2.3% to +47.6% in the same CI run
    # on the rows that had no counted metric to show instead.
    counted_zero = Verdict("allocated_bytes", "pass", "", "baseline", 0.0)
    cpu = Verdict("cpu_time_per_round", "pass", "", "baseline", 0.275)
    (row,) = table([TestResult(record("t.py::a", latency(0.001)), [counted_zero, cpu], "passed")])[1:]
    assert "cpu/round +27.5%" in row
    # On a GPU profile the latency; a worse finding still comes first, whatever its metric.
    gpu = record("t.py::a", latency(0.001), profile="h100")
    al = Verdict("AL", "pass", "", "baseline", 0.03)
    (row,) = table([TestResult(gpu, [counted_zero, al], "passed")])[1:]
    assert "AL +3.0%" in row
    grew = Verdict("allocated_bytes", "fail", "", "baseline", 0.5)
    (row,) = table([TestResult(record("t.py::a", latency(0.001)), [cpu, grew], "passed")])[1:]
    assert "+50.0%" in row and row.endswith("FAIL")
    # Only counted metrics, all passing: one that moved (inside its tolerance) before one that did not.
    moved = Verdict("flops", "pass", "", "baseline", 0.02)
    (row,) = table([TestResult(record("t.py::a", latency(0.001)), [counted_zero, moved], "passed")])[1:]
    assert "flops +2.0%" in row


def test_the_summary_says_when_workers_share_a_gpu_under_its_lock() -> None:
    workers = {f"gw{i}": {"threads": 4, "cores": 16, "device": None, "locked_device": "0"} for i in range(2)}
    line = _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]
    assert "2 xdist workers" in line and "GPU 0 shared by workers: one measured test at a time" in line
    for w in workers.values():
        w["locked_device"] = None
    assert "shared" not in _threads_line(None, SimpleNamespace(workers=workers))  # type: ignore[arg-type]


def test_the_memory_column_is_the_workloads_own_never_the_process_rss() -> None:
    results = [
        # CPU, only the process RSS: nothing to say about the workload.
        TestResult(record("t.py::rss", latency(0.001), RSS), [], "passed"),
        # The counted tensor high-water mark, on any profile, before anything else.
        TestResult(record("t.py::tensors", latency(0.001), RSS, counted("tensor_peak_bytes", 12 * MiB)), [], "passed"),
        # A GPU profile without it: the caching allocator's peak.
        TestResult(record("t.py::gpu", latency(0.001), ALLOCATOR, profile="h100"), [], "passed"),
        # A peak the test counted itself is the workload's too.
        TestResult(record("t.py::counted", latency(0.001), counted("peak_memory", 2 * MiB)), [], "passed"),
        # A GPU profile whose peak_memory is not the allocator's: not shown either.
        TestResult(record("t.py::gpu_rss", latency(0.001), RSS, profile="h100"), [], "passed"),
    ]
    lines = table(results)
    header = lines[0]
    assert "peak mem" in header and max(len(line) for line in lines) <= WIDTH
    names = ("rss", "tensors", "gpu", "counted")
    memory = {name: _cells(header, _row(lines, f"t.py::{name}"), "peak mem") for name in names}
    assert memory == {"rss": "-", "tensors": "12.0 MiB", "gpu": "81.0 MiB", "counted": "2.00 MiB"}
    assert _cells(header, _row(lines, "t.py::gpu_rss"), "peak mem") == "-"
    assert "480" not in "\n".join(lines)  # the RSS is in no row
    legend = memory_legend(results)
    assert "tensor_peak_bytes" in legend and "allocator" in legend and "resident set" in legend
    assert memory_legend(results[:1]).startswith("peak mem '-' where only the process's resident set")


def test_the_traffic_column_shows_intensity_else_bytes_and_is_left_out_when_nothing_has_either() -> None:
    plain = [TestResult(record("t.py::a", latency(0.001)), [], "passed")]
    assert "FLOP/B" not in table(plain)[0] and "B/round" not in table(plain)[0]

    with_bytes = [
        *plain,
        TestResult(record("t.py::b", latency(0.001), counted("bytes_accessed", 3 * 2**30)), [], "passed"),
    ]
    lines = table(with_bytes)
    assert "B/round" in lines[0] and "FLOP/B" not in lines[0]
    assert _cells(lines[0], _row(lines, "t.py::b"), "B/round") == "3.00 GiB"
    assert _cells(lines[0], _row(lines, "t.py::a"), "B/round") == "-"

    intensity = counted("arithmetic_intensity", 42.7, unit="FLOP/B", direction="info")
    both = [*with_bytes, TestResult(record("t.py::c", latency(0.001), intensity), [], "passed")]
    lines = table(both)
    assert "FLOP/B" in lines[0] and "B/round" not in lines[0]  # one unit per column: the intensity
    assert _cells(lines[0], _row(lines, "t.py::c"), "FLOP/B") == "42.7"
    assert max(len(line) for line in lines) <= WIDTH
    # The test column keeps a useful width beside it: a suite test keeps its file, shortened.
    suite = TestResult(record("suites/test_attention.py::test_decode[gqa]", latency(0.001), intensity), [], "passed")
    assert table([suite])[1].startswith("attention::test_decode[gqa] ")
    assert table([TestResult(record("suites/test_attention.py::test_decode[gqa]"), [], "passed")])[1].startswith(
        "test_attention.py::test_decode[gqa] "
    )


def test_the_rows_of_one_file_name_their_tests_alike() -> None:
    # The suites' summary read `test_moe.py::test_decode[dense]` above `moe::test_train_step[dense]`,
    # and under torchrun `distributed::test_train_step[ddp]` above `test_train_step[fsdp2]`: each row
    # took the fullest form that fitted it alone, the last dropping its file.
    ids = ["suites/test_distributed.py::test_train_step[ddp]", "suites/test_distributed.py::test_train_step[fsdp2]"]
    assert short_ids(ids, 45) == {i: i.removeprefix("suites/") for i in ids}
    assert short_ids(ids, 35) == {i: i.replace("suites/test_distributed.py", "distributed") for i in ids}
    assert short_ids(ids, 33) == {
        ids[0]: "distributed::test_train_step[ddp]",
        ids[1]: "distributed::test_train_st…fsdp2]",  # the file stays, the rest is cut
    }
    assert short_ids(ids, 20) == {ids[0]: "test_train_step[ddp]", ids[1]: "test_train_st…fsdp2]"}  # no room for both
    other = "suites/test_moe.py::test_decode[dense]"  # another file keeps its own fullest form
    assert short_ids([*ids, other], 35)[other] == "test_moe.py::test_decode[dense]"
    # The summary's own width, with an intensity column as the torchrun run had.
    intensity = counted("arithmetic_intensity", 3.2, unit="FLOP/B", direction="info")
    rows = table([TestResult(record(n, latency(0.001), intensity), [], "passed") for n in ids])[1:]
    assert all(row.startswith("distributed::test_") for row in rows), rows


def _fingerprint_verdicts(nodeid: str, *metrics: Metric) -> list[Verdict]:
    """What compare says of a test whose baseline was recorded under another kernel build."""
    baseline = record(nodeid, *metrics, fingerprint=OLD_KERNEL)
    current = record(nodeid, *metrics, fingerprint=NEW_KERNEL)
    return compare_record(baseline, current)


def test_a_shared_fingerprint_difference_is_said_once_above_the_rows_which_keep_their_own_verdicts() -> None:
    results = [
        TestResult(record(f"t.py::same{i}"), _fingerprint_verdicts(f"t.py::same{i}", counted("flops", 1000)), "passed")
        for i in range(3)
    ]
    assert all(any(v.kind == "fingerprint" and v.status == "warn" for v in r.verdicts) for r in results)
    own = LeakFinding(retained_bytes=4 * 2**20, late_bytes=2 * 2**20, rounds=7).as_verdict()
    leaking = TestResult(record("t.py::leaks"), _fingerprint_verdicts("t.py::leaks") + [own], "passed")
    fresh = TestResult(record("t.py::fresh"), [Verdict("*", "new", "no baseline yet", "baseline")], "passed")
    results += [leaking, fresh]

    said = fingerprint_lines(results)
    assert said[0].startswith("fingerprint differs from the baselines' in 4 of 5 tests")
    assert sum("os: 'Linux 6.18.44-fc-v669' -> 'Linux 6.18.44-fc-v1272'" in line for line in said) == 1
    rows = table(results)[1:]
    verdicts = {row.split()[0]: row.split()[-1] for row in rows}
    assert verdicts == {
        "t.py::same0": "pass",
        "t.py::same1": "pass",
        "t.py::same2": "pass",
        "t.py::leaks": "warn",
        "t.py::fresh": "new",
    }
    text = "\n".join(details(results))
    assert "fingerprint" not in text  # not again as each test's warning
    assert f"{own.metric} grew across rounds: a leak: 1 test" in text

    # Fields that differ for some tests only say for how many.
    partial = _fingerprint_verdicts("t.py::other")
    other = record("t.py::other", fingerprint={**NEW_KERNEL, "python": "3.12.1"})
    both = compare_record(record("t.py::other", fingerprint={**OLD_KERNEL, "python": "3.11.7"}), other)
    said = fingerprint_lines([TestResult(record("t.py::x"), partial, "passed"), TestResult(other, both, "passed")])
    assert said[0].startswith("fingerprint differs from the baselines' in all 2 tests")
    assert any(line.strip() == "python: '3.11.7' -> '3.12.1' (1 test)" for line in said)
    assert any(line.strip().startswith("os: ") and "test)" not in line for line in said)


def _on_another_cpu(*index_s: float) -> list[TestResult]:
    """One test per calibration index, each run on an Intel Xeon and under another kernel than its
    AMD EPYC baseline (0.002 s): another CPU beside the kernel, since the kernel alone leaves times raw."""
    results = []
    for i, index in enumerate(index_s):
        fingerprint = {**NEW_KERNEL, "cpu_model": "Intel(R) Xeon(R) Processor", "calibration": {"index_s": index}}
        current = record(f"t.py::t{i}", fingerprint=fingerprint)
        verdicts = compare_record(record(f"t.py::t{i}", fingerprint={**OLD_KERNEL, "cpu_model": "AMD EPYC"}), current)
        results.append(TestResult(current, verdicts, "passed"))
    return results


def test_the_calibration_factors_of_a_shared_difference_are_one_range_unless_verbose() -> None:
    results = _on_another_cpu(0.002, 0.0022, 0.0021)
    said = [line.strip() for line in fingerprint_lines(results, width=200)]
    assert said[-1] == (
        "times compared relative to the calibration workload (this machine x1.000 .. x1.100 the baselines'): 3 tests"
    )
    verbose = [line.strip() for line in fingerprint_lines(results, width=200, verbose=1)]
    assert [line.split("(this machine ")[1] for line in verbose if "this machine" in line] == [
        "x1.000 the baseline's): 1 test",
        "x1.050 the baseline's): 1 test",
        "x1.100 the baseline's): 1 test",
    ]


def test_the_shared_difference_is_read_from_the_verdicts_finding_not_its_wording() -> None:
    results = _on_another_cpu(0.002, 0.0022)
    said = fingerprint_lines(results, width=200)
    reworded = [
        TestResult(r.record, [dataclasses.replace(v, message="reworded; x9.999") for v in r.verdicts], r.functional)
        for r in results
    ]
    assert fingerprint_lines(reworded, width=200) == said
    assert any(line.strip().startswith("cpu_model: 'AMD EPYC' -> ") for line in said)
    assert (
        said[-1]
        .strip()
        .startswith("times compared relative to the calibration workload (this machine x1.000 .. x1.100")
    )


def test_a_fingerprint_of_other_hardware_stays_the_tests_own_error() -> None:
    baseline = record("t.py::a", fingerprint={"device_name": "NVIDIA H100"})
    verdicts = compare_record(baseline, record("t.py::a", fingerprint={"device_name": "NVIDIA A100"}))
    assert [(v.kind, v.status) for v in verdicts] == [("fingerprint", "error")]
    results = [TestResult(record("t.py::a"), verdicts, "passed")]
    assert fingerprint_lines(results) == []
    assert table(results)[1].endswith("error")


def _noisy(nodeid: str, change: float) -> Verdict:
    return Verdict(
        "cpu_time_per_round",
        "warn",
        f"10.2 ms n=3 vs baseline 13.1 ms n=3 ({change * 100:+.1f}%; tolerance +5%): beyond tolerance, but 3 "
        "baseline and 3 current rounds cannot separate change from noise at 95% confidence; run at least 5 "
        "rounds on each side",
        "baseline",
        change,
        reason="too_few_rounds",
    )


def test_warnings_of_one_kind_are_counted_once_with_each_tests_numbers_under_verbose() -> None:
    results = [
        TestResult(record(f"t.py::noisy{i}"), [_noisy(f"t.py::noisy{i}", 0.1 + i / 100)], "passed") for i in range(12)
    ]
    energy = Metric("energy_per_token", 0.5, "J/tok", "lower", "estimated", "a test's estimate")
    budget = check_budget(record("t.py::estimate", energy), parse_limit("energy_per_token", "<= 0.1 J/tok"))
    assert budget.status == "warn"
    results.append(TestResult(record("t.py::estimate"), [budget], "passed"))
    odd = Verdict("my_metric", "warn", "something this summary has never seen")
    results += [TestResult(record(f"t.py::odd{i}"), [odd], "passed") for i in range(2)]
    quick = record("t.py::quick", latency(1e-3))
    [improved] = compare_record(record("t.py::quick", latency(2e-3)), quick, [parse_limit("AL", "+5%")])
    assert improved.status == "improved"
    results.append(TestResult(quick, [improved], "passed"))

    lines = details(results)
    assert "warnings (15 tests):" in lines
    text = "\n".join(lines)
    # One line per kind, with the spread of its changes: a whole run shifted, or one test far out.
    assert (
        "  cpu_time_per_round beyond tolerance but within noise (too few rounds to tell): 12 tests (+10.0% ..\n"
        "    +21.0%, median +15.5%)" in text
    )
    assert "  energy_per_token over budget (an estimate never fails): 1 test" in lines
    assert "  my_metric: something this summary has never seen: 2 tests" in lines  # unknown: by its text
    assert "  AL faster than the baseline: 1 test (-50.0%)" in lines
    assert not any("10.2 ms" in line for line in lines)  # the numbers wait for -v
    assert any("-v shows each test's numbers" in line for line in lines)

    verbose = details(results, verbose=1)
    assert sum(line.startswith("    t.py::noisy") for line in verbose) == 12
    assert any(line.startswith("    t.py::noisy3: 10.2 ms n=3") for line in verbose)
    assert max(len(line) for line in verbose) <= WIDTH
    assert not any("-v shows" in line for line in verbose)


def test_the_samplers_cpu_cost_is_said_against_the_workloads_cpu() -> None:
    from pytest_efficientllm.core.metrics import measured
    from pytest_efficientllm.glue.summary import telemetry_cost_line

    def with_cpu(name: str, sampler: float | None, cpu: float) -> TestResult:
        metrics = [measured("cpu_time", cpu, "process CPU"), measured("sampler_cpu_time", sampler, "sampler clocks")]
        return TestResult(record(name, latency(0.001), *metrics), [], "passed")

    results = [with_cpu("t.py::a", 0.002, 0.098), with_cpu("t.py::b", 0.001, 0.199)]
    line = telemetry_cost_line(results)
    assert "used 3 ms of CPU in the measured windows, 1.0% of their CPU time" in line
    # A record without the reading (a platform without thread CPU clocks) adds nothing to either side.
    assert telemetry_cost_line([*results, with_cpu("t.py::c", None, 5.0)]) == line
    assert telemetry_cost_line([TestResult(record("t.py::d", latency(0.001)), [], "passed")]) == ""


def test_an_update_says_once_per_software_change_which_run_histories_restarted(tmp_path) -> None:
    ids = [f"suites/t.py::t{i}" for i in range(30)]
    update = FileUpdate(tmp_path / "t.py.json", updated=ids, restarted={"torch 2.13.0 -> 2.14.0": ids})
    state = SimpleNamespace(updates=[update], options=SimpleNamespace(update=True), problems=[])
    lines = _store_lines(state, WIDTH)  # type: ignore[arg-type]
    assert "  ! torch 2.13.0 -> 2.14.0 since their earlier runs: run history restarted for 30 tests" in lines
    assert not any("beyond their runs' bound" in line for line in lines)


def test_files_of_one_name_in_different_folders_are_told_apart() -> None:
    # `a/test_x.py` and `b/test_x.py` had read `x::TestMatmul::test_mm[128]` and `test_x.py::test_mm`:
    # nothing said which folder either came from.
    ids = ["a/test_x.py::TestMatmul::test_mm[128]", "b/test_x.py::test_mm", "c/test_y.py::test_mm"]
    assert short_ids(ids, 60) == {ids[0]: ids[0], ids[1]: ids[1], ids[2]: "test_y.py::test_mm"}
    assert short_ids(ids, 30)[ids[0]] == "a/x::TestMatmul::test_mm[128]"  # the short name keeps its folder
    deep = ["p/a/t/test_x.py::test_1", "q/b/t/test_x.py::test_1"]  # the first folder that differs
    assert short_ids(deep, 60) == {deep[0]: "a/t/test_x.py::test_1", deep[1]: "b/t/test_x.py::test_1"}


def test_an_update_says_how_many_more_runs_the_baselines_need(tmp_path) -> None:
    # A first --update-baselines said only "3 added": nothing told the user that one run cannot
    # tell the machine's drift from a slowdown, or how many more make it.
    def lines(*runs: dict[str, int]) -> list[str]:
        updates = [FileUpdate(tmp_path / f"f{i}.json", runs=r) for i, r in enumerate(runs)]
        state = SimpleNamespace(updates=updates, options=SimpleNamespace(update=True), problems=[])
        return " ".join(" ".join(_store_lines(state, WIDTH)).split())  # type: ignore[arg-type]

    assert "3 tests with 1 timed run in the baselines: run --update-baselines 2 more times;" in lines(
        {"a::t": 1, "b::t": 1}, {"c::t": 1}
    )
    assert "2 tests with 1 to 2 timed runs in the baselines: run --update-baselines 2 more times" in lines(
        {"a::t": 1, "b::t": 2, "c::t": 3}
    )
    assert "1 test with 2 timed runs in the baselines: run --update-baselines 1 more time;" in lines({"a::t": 2})
    assert "timed run" not in lines({"a::t": 3, "b::t": 5}, {})


def _passing(nodeid: str, change: float) -> Verdict:
    return Verdict("cpu_time_per_round", "pass", f"({change * 100:+.1f}%; tolerance +5%)", "baseline", change)


def _timed(nodeid: str) -> Record:
    return record(nodeid, latency(0.01, name="cpu_time_per_round"))


def test_the_median_over_every_test_compared_tells_the_machine_from_one_test() -> None:
    # A machine that slowed: nearly every test warned, and so did the run as a whole.
    results = [TestResult(_timed(f"t.py::w{i}"), [_noisy(f"t.py::w{i}", 0.2 + i / 100)], "passed") for i in range(5)]
    results.append(TestResult(_timed("t.py::p"), [_passing("t.py::p", 0.04)], "passed"))
    lines = details(results, width=200)
    assert (
        "the run as a whole: cpu_time_per_round +21.5%, the median over all 6 tests compared (passed ones too); "
        "a test far beyond that moved on its own"
    ) in lines
    # One test far out: the run as a whole did not move.
    results = [TestResult(_timed(f"t.py::p{i}"), [_passing(f"t.py::p{i}", 0.01)], "passed") for i in range(9)]
    results.append(TestResult(_timed("t.py::slow"), [_noisy("t.py::slow", 0.8)], "passed"))
    assert any(
        line.startswith("the run as a whole: cpu_time_per_round +1.0%, ") for line in details(results, width=200)
    )
    # Too few tests compared to speak of a run: four are too few, five enough.
    assert not any("the run as a whole" in line for line in details(results[-4:], width=200))
    assert any("the run as a whole" in line for line in details(results[-5:], width=200))


def test_no_run_wide_median_for_a_counted_metric() -> None:
    # A machine does not move what is counted: every test's bytes at +100% is the code, and the
    # warnings say so already.
    def doubled(nodeid: str) -> TestResult:
        verdict = Verdict("allocated_bytes", "warn", "2 MiB vs baseline 1 MiB (+100.0%); counted, ", "baseline", 1.0)
        return TestResult(record(nodeid, counted("allocated_bytes", 2 * MiB)), [verdict], "passed")

    lines = details([doubled(f"t.py::c{i}") for i in range(6)], width=200)
    assert any("allocated_bytes" in line for line in lines)
    assert not any("the run as a whole" in line for line in lines)


def _voted(nodeid: str, *verdicts: Verdict) -> TestResult:
    rec = record(nodeid, latency(0.001))
    rec.settings.update(confirmation_s=3.0, confirmation_spacing_s=20.0)
    return TestResult(rec, list(verdicts), "passed")


def test_the_confirmation_line_says_what_the_vote_found_not_whether_the_test_failed() -> None:
    # A test that fails on a count while the vote cleared its time: it fails, but no process of the
    # vote is why. The line read "1 of them failing (a regression fails only where every process
    # found it)" for such a run.
    grew = Verdict("allocated_bytes", "fail", "+100%", "baseline", 1.0, reason="counted_regression")
    cleared = Verdict("AL", "warn", "+89%", "baseline", 0.89, reason="beyond_noise", softened="vote_cleared")
    found = Verdict("AL", "fail", "+40%", "baseline", 0.4, reason="beyond_noise", confirmed="fresh_processes")
    # A test whose vote found one metric and cleared another counts as found.
    both = _voted("t.py::d", cleared, found)
    line = _confirmation_line(
        [_voted("t.py::a", grew, cleared), _voted("t.py::b", found), _voted("t.py::c", cleared), both]
    )
    assert "4 test(s)" in line and "20 s or more" in line and "12.0 s" in line, line
    assert "found by every process in 2 test(s), cleared by a process that did not find it in 2 " in line, line
