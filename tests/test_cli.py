"""The command line: compare (the plugin's own verdict rules), merge, report, export, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.cli import main
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.storage.runfile import Run, read_run, write_run
from tests.helpers.report_records import CPU_FP, make_record, sample_run


def slow_down(run: Run, nodeid: str, factor: float) -> Run:
    """A copy of `run` in which one test's latency rounds are `factor` times longer."""
    out = Run.__new__(Run)
    out.records, out.runs = [], run.runs
    for record in run.records:
        copy = type(record).from_dict(record.to_dict())
        if record.nodeid == nodeid:
            al = copy.metrics["AL"]
            samples = tuple(s * factor for s in al.samples)
            copy.add(Metric("AL", al.value * factor, al.unit, al.direction, al.source, al.method, samples=samples))
        out.records.append(copy)
    return out


def jittered_run() -> Run:
    """sample_run with 12 distinct latency rounds per test, so the noise-aware rule can resolve a change."""
    run = sample_run()
    for record in run.records:
        al = record.metrics["AL"]
        samples = tuple(al.value * (1 + 0.002 * ((i * 7) % 12 - 6)) for i in range(12))
        record.add(Metric("AL", al.value, "s", "lower", "measured", al.method, samples=samples))
    return run


def shrink_compression(run: Run, nodeid: str, size_ratio: float) -> Run:
    """`run` with one test's counted size ratio changed (counted metrics are gated exactly)."""
    for record in run.records:
        if record.nodeid == nodeid:
            m = record.metrics["size_ratio"]
            record.add(Metric("size_ratio", size_ratio, m.unit, m.direction, m.source, m.method))
    return run


INT4 = "suites/test_quantization.py::test_decode[int4]"
MQA = "suites/test_attention.py::test_prefill[mqa]"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """old.json, and new.json in which int4 compresses less (3.8x -> 3.0x) and mqa is 1.5x slower."""
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    write_run(old, jittered_run())
    write_run(new, shrink_compression(slow_down(jittered_run(), MQA, 1.5), INT4, 3.0))
    return {"old": old, "new": new, "dir": tmp_path}


def test_compare_names_the_regression_and_exits_nonzero(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(files["old"]), str(files["new"])]) == 1
    out = capsys.readouterr().out
    assert f"  {INT4} [cpu] size_ratio" in out.split("regression(s) in")[1]
    assert "FAIL      size_ratio: 3 x vs baseline 3.8 x (-21.1%; counted" in out


def test_compare_measured_latency_with_a_tolerance_is_noise_aware(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(files["old"]), str(files["new"]), "--tolerance", "AL=+10%"]) == 1
    out = capsys.readouterr().out
    assert f"  {MQA} [cpu] AL" in out.split("regression(s) in")[1]
    assert "FAIL      AL: 15 ms" in out and "+50.0%" in out
    main(["compare", str(files["old"]), str(files["new"]), "--tolerance", "AL=+60%"])
    assert f"{MQA} [cpu] AL" not in capsys.readouterr().out.split("regression(s) in")[1]


def test_compare_judges_each_test_by_the_limits_it_ran_under(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The gate writes a test's limits (marker, ini, command line) into its record; `compare` read
    # only --tolerance, so a test declaring latency='+10%' slowed 1.5x was not even compared on AL.
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    slowed = slow_down(jittered_run(), MQA, 1.5)
    for r in slowed.records:
        r.settings["limits"] = ["AL=+10%", "peak_memory=<= 1 B"]  # a budget is the plugin's, not compare's
    write_run(old, jittered_run())
    write_run(new, slowed)
    assert main(["compare", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert [line.strip() for line in out.split("regression(s) in")[1].splitlines()[1:]] == [f"{MQA} [cpu] AL"], out
    assert "FAIL      AL: 15 ms" in out and "tolerance +10%" in out
    # --tolerance overrides the test's own on that metric.
    assert main(["compare", str(old), str(new), "--tolerance", "AL=+60%"]) == 0, capsys.readouterr().out
    # A report against a baseline judges by the same limits.
    report = tmp_path / "r.md"
    assert main(["report", str(new), "-o", str(report), "--baseline", str(old)]) == 0
    assert any(line.startswith(f"| {MQA} | AL | **fail** |") for line in report.read_text().splitlines())


def test_compare_of_identical_files_exits_zero(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(files["old"]), str(files["old"])]) == 0
    assert "no regression: 6 test(s) compared" in capsys.readouterr().out


def test_compare_lists_findings_and_tallies_the_rest_unless_verbose(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # 71 suite tests read ~850 lines, 715 of them passing or skipped verdicts.
    main(["compare", str(files["old"]), str(files["new"])])
    short = capsys.readouterr().out
    main(["compare", str(files["old"]), str(files["new"]), "-v"])
    full = capsys.readouterr().out
    assert "FAIL      size_ratio" in short and "FAIL      size_ratio" in full
    passing = [line for line in full.splitlines() if line.startswith("  pass ")]
    assert passing and not any(line.startswith("  pass ") for line in short.splitlines())
    tally = next(line for line in short.splitlines() if line.startswith("verdicts: "))
    assert f"{len(passing)} pass" in tally and "-v lists the" in tally
    assert "-v lists" not in next(line for line in full.splitlines() if line.startswith("verdicts: "))


def test_compare_warn_mode_exits_zero_and_bad_tolerances_are_usage_errors(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(files["old"]), str(files["new"]), "--mode", "warn"]) == 0
    assert "size_ratio" in capsys.readouterr().out
    assert main(["compare", str(files["old"]), str(files["new"]), "--tolerance", "AL<=5"]) == 2
    assert "--tolerance 'AL<=5'" in capsys.readouterr().err


def test_compare_reports_tests_on_one_side_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = jittered_run()
    write_run(tmp_path / "old.json", Run(run.records[:-1], run.runs))
    write_run(tmp_path / "new.json", Run(run.records[1:], run.runs))
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 0
    out = capsys.readouterr().out
    assert "only in" in out and "missing" in out and "new " in out


def test_merge_of_disjoint_shards_keeps_every_record(tmp_path: Path) -> None:
    run = sample_run()
    write_run(tmp_path / "a.json", Run(run.records[:3], run.runs))
    write_run(tmp_path / "b.json", Run(run.records[3:], run.runs))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json")]) == 0
    merged = read_run(tmp_path / "all.json")
    assert (
        sorted(
            r.to_dict() == o.to_dict()
            for r, o in zip(sorted(merged.records, key=lambda r: r.nodeid), sorted(run.records, key=lambda r: r.nodeid))
        )
        == [True] * 6
    )
    assert [r["merged_from"] for r in merged.runs] == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]


def test_merge_of_files_without_session_entries_makes_one_per_distinct_fingerprint(tmp_path: Path) -> None:
    newer = dict(CPU_FP, packages={"torch": "2.14.1"})
    a = [make_record(f"t.py::test_{i}", fingerprint=fp) for i, fp in enumerate([CPU_FP, CPU_FP, newer])]
    write_run(tmp_path / "a.json", Run(a))  # no `runs`: a run file written by hand or by a tool of its own
    write_run(tmp_path / "b.json", Run([make_record("t.py::test_b")]))
    out = tmp_path / "all.json"
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(out)]) == 0
    runs = [(r["merged_from"], r["fingerprint"]["packages"]["torch"]) for r in read_run(out).runs]
    a_json, b_json = str(tmp_path / "a.json"), str(tmp_path / "b.json")
    assert runs == [(a_json, "2.13.0"), (a_json, "2.14.1"), (b_json, "2.13.0")]


def test_merge_refuses_mixed_hardware_unless_asked_and_then_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cpu = make_record("suites/test_attention.py::test_prefill[gqa]")
    gpu = make_record(
        "suites/test_attention.py::test_prefill[gqa]",
        profile="h100",
        fingerprint=dict(CPU_FP, device_name="NVIDIA H100 80GB HBM3"),
    )
    write_run(tmp_path / "cpu.json", Run([cpu]))
    write_run(tmp_path / "gpu.json", Run([gpu]))
    args = ["merge", str(tmp_path / "cpu.json"), str(tmp_path / "gpu.json"), "-o", str(tmp_path / "all.json")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refusing to merge records from different hardware" in err and "--allow-mixed-profiles" in err
    assert "profile=h100" in err and "gpu.json" in err
    assert not (tmp_path / "all.json").exists()
    assert main(args + ["--allow-mixed-profiles"]) == 0
    assert "fingerprint key" not in capsys.readouterr().err  # the GPU's name is hardware, said above, not software
    merged = read_run(tmp_path / "all.json")
    assert sorted(r.profile for r in merged.records) == ["cpu", "h100"]
    assert {r.profile: r.to_dict() for r in merged.records} == {"cpu": cpu.to_dict(), "h100": gpu.to_dict()}


def test_merge_of_different_cpus_under_one_profile_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_record("suites/test_attention.py::test_prefill[gqa]")
    b = make_record("suites/test_attention.py::test_prefill[mqa]", fingerprint=dict(CPU_FP, cpu_model="Other CPU"))
    write_run(tmp_path / "a.json", Run([a]))
    write_run(tmp_path / "b.json", Run([b]))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json")]) == 2
    assert "cpu_model=Other CPU" in capsys.readouterr().err


def test_merge_of_two_runs_on_one_gpu_model_says_nothing_of_what_differs_every_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two shards on two H100s: each GPU's own UUID, the idle power and the state at start-up, and the
    # calibration's readings differ in any two runs. Taken for hardware, the shards were refused.
    def shard(nodeid: str, uuid: str, idle_w: float, calibration_s: float):
        gpu = dict(CPU_FP, gpu_name="NVIDIA H100 80GB HBM3", gpu_uuids=[uuid], gpu_idle_power_w=idle_w)
        gpu.update(gpu_preflight={"temperature_c": idle_w / 2}, calibration={"matmul_s": calibration_s}, cuda_ordinal=0)
        return make_record(nodeid, profile="h100", fingerprint=gpu)

    write_run(tmp_path / "a.json", Run([shard("t.py::test_a", "GPU-aaaa", 75.0, 0.0031)]))
    write_run(tmp_path / "b.json", Run([shard("t.py::test_b", "GPU-bbbb", 71.5, 0.0029)]))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json")]) == 0
    assert capsys.readouterr().err == ""
    merged = {r.nodeid: r for r in read_run(tmp_path / "all.json").records}
    assert merged["t.py::test_b"].fingerprint["gpu_uuids"] == ["GPU-bbbb"]  # each keeps its own


def test_merge_of_one_cpu_model_with_and_without_avx512_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One generic model name covers both; the gate keeps their baselines apart, so a leaderboard must.
    a = make_record("t.py::test_a", fingerprint=dict(CPU_FP, cpu_model="AMD EPYC", cpu_isa="avx2 fma avx512f"))
    b = make_record("t.py::test_b", fingerprint=dict(CPU_FP, cpu_model="AMD EPYC", cpu_isa="avx2 fma"))
    write_run(tmp_path / "a.json", Run([a]))
    write_run(tmp_path / "b.json", Run([b]))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json")]) == 2
    err = capsys.readouterr().err
    assert "cpu_isa=avx2 fma avx512f" in err and "cpu_isa=avx2 fma," in err, err


def test_merge_software_differences_warn_and_keep_each_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = make_record("suites/test_attention.py::test_prefill[gqa]")
    b = make_record(
        "suites/test_attention.py::test_prefill[mqa]",
        fingerprint=dict(CPU_FP, packages={"torch": "2.14.1"}, python="3.12.1"),
    )
    also_a = make_record("suites/test_attention.py::test_prefill[mha]")  # a second record, same file and torch
    write_run(tmp_path / "a.json", Run([a, also_a]))
    write_run(tmp_path / "b.json", Run([b]))
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "all.json")]) == 0
    err = capsys.readouterr().err
    # Each file named once per value, nested packages by their dotted key; nothing of the hardware.
    said = (
        f"'2.13.0' in {tmp_path / 'a.json'}; '2.14.1' in {tmp_path / 'b.json'} (each record keeps its own fingerprint)"
    )
    assert f"fingerprint key packages.torch differs: {said}" in err
    assert f"fingerprint key python differs: '3.11.7' in {tmp_path / 'a.json'}; '3.12.1' in" in err
    assert err.count("fingerprint key") == 2
    merged = {r.nodeid: r for r in read_run(tmp_path / "all.json").records}
    assert merged[b.nodeid].fingerprint["packages"]["torch"] == "2.14.1"
    assert merged[a.nodeid].fingerprint["packages"]["torch"] == "2.13.0"


def test_merge_duplicate_node_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_record("suites/test_attention.py::test_prefill[gqa]", al=0.010)
    b = make_record("suites/test_attention.py::test_prefill[gqa]", al=0.011)
    write_run(tmp_path / "a.json", Run([a]))
    write_run(tmp_path / "b.json", Run([b]))
    out = str(tmp_path / "all.json")
    # The same file twice: identical records are kept once.
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "-o", out]) == 0
    assert len(read_run(out).records) == 1 and "identical" in capsys.readouterr().err
    # Different results for one test: refused, naming the test and both files...
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", out]) == 2
    err = capsys.readouterr().err
    assert "test_prefill[gqa] [cpu]: in" in err and "a.json" in err and "b.json" in err and "--allow-duplicates" in err
    # ...or, when asked, both kept.
    assert main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", out, "--allow-duplicates"]) == 0
    assert sorted(r.metrics["AL"].value for r in read_run(out).records) == [0.010, 0.011]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "pytest-efficientllm-run", "schema": 1, "records": [{"sch', "not valid JSON at line 1"),
        ('{"benchmarks": []}', "not a pytest-efficientllm run file"),
        ('{"format": "pytest-efficientllm-run", "schema": 1, "records": []}', "the run holds no records"),
        ('{"format": "pytest-efficientllm-run", "schema": 99, "records": []}', "upgrade the plugin"),
    ],
)
def test_bad_inputs_name_the_file_and_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = tmp_path / "good.json"
    write_run(good, sample_run())
    for args in (
        ["report", str(bad), "-o", str(tmp_path / "r.html")],
        ["compare", str(good), str(bad)],
        ["export-benchmark-action", str(bad), "--smaller", str(tmp_path / "s.json")],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and message in err, (args, err)
    assert not (tmp_path / "r.html").exists()


def test_bad_output_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.json"
    write_run(good, sample_run())
    assert main(["report", str(good), "-o", str(tmp_path / "nope" / "r.html")]) == 2
    assert "directory" in capsys.readouterr().err
    assert main(["report", str(good), "-o", str(tmp_path / "r.pdf")]) == 2
    assert "unknown report format '.pdf'" in capsys.readouterr().err
    assert main(["merge", str(good), "-o", str(tmp_path / "nope" / "all.json")]) == 2
    assert main(["report", str(tmp_path / "absent.json"), "-o", str(tmp_path / "r.md")]) == 2
    assert "absent.json: cannot read" in capsys.readouterr().err


def test_export_for_github_action_benchmark(tmp_path: Path) -> None:
    run = sample_run()
    write_run(tmp_path / "run.json", run)
    s, b = tmp_path / "s.json", tmp_path / "b.json"
    assert main(["export-benchmark-action", str(tmp_path / "run.json"), "--smaller", str(s), "--bigger", str(b)]) == 0
    smaller, bigger = json.loads(s.read_text()), json.loads(b.read_text())
    for entry in smaller + bigger:  # the action's custom format: name, unit, value (+ range, extra)
        assert set(entry) <= {"name", "unit", "value", "range", "extra"}
        assert (
            isinstance(entry["name"], str)
            and isinstance(entry["value"], (int, float))
            and isinstance(entry["unit"], str)
        )
    by_name = {e["name"]: e for e in smaller}
    al = by_name["suites/test_attention.py::test_prefill[gqa] AL [cpu]"]
    assert al["value"] == 0.012 and al["unit"] == "s" and al["range"].startswith("± ")
    assert "suites/test_attention.py::test_prefill[gqa] AEC [cpu] (estimated)" in by_name
    assert not any(" PCU " in e["name"] for e in smaller + bigger)  # n/a values are left out, not zeros
    assert {e["name"].split(" ")[1] for e in bigger} >= {"AT", "MCR", "size_ratio"}
    assert {e["name"].split(" ")[1] for e in smaller} >= {"AL", "AMU", "AEC", "quality:ppl"}


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    write_run(tmp_path / "run.json", sample_run())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_efficientllm",
            "report",
            str(tmp_path / "run.json"),
            "-o",
            str(tmp_path / "r.md"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.md").read_text().startswith("# Efficiency report")


def test_report_against_a_baseline_shows_the_compare_verdicts(files: dict[str, Path]) -> None:
    out = files["dir"] / "r.md"
    assert (
        main(["report", str(files["new"]), "-o", str(out), "--baseline", str(files["old"]), "--tolerance", "AL=+10%"])
        == 0
    )
    md = out.read_text()
    fails = sorted(
        line.split(" | ")[0:2] for line in md.splitlines() if "| **fail** |" in line and line.startswith("| suites/")
    )
    # Against the baseline, int4's compression and mqa's latency fail; the verdict the file
    # itself recorded for gqa (a baseline verdict) was replaced by the new comparison.
    assert fails == [[f"| {MQA}", "AL"], [f"| {INT4}", "size_ratio"]]


@pytest.mark.parametrize("command", ["compare", "merge", "report", "export-benchmark-action", "export-bencher", "ab"])
def test_each_commands_help_shows_its_arguments_as_typed(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A metavar is printed as written (only help text is %-formatted): 'METRIC=+N%%' showed doubled.
    with pytest.raises(SystemExit) as exit_info:
        main([command, "-h"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "%%" not in shown and "usage: pytest-efficientllm " + command in shown
