"""Comparison rules: counted exact, measured noise-aware, estimated never failing, sources and fingerprints."""

from __future__ import annotations

import json

import pytest

from pytest_efficientllm.core.limits import LimitError, parse_limit
from pytest_efficientllm.core.record import Metric
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.glue.summary_findings import finding_kind
from pytest_efficientllm.judging.compare import compare_record
from pytest_efficientllm.judging.fingerprint import calibration_factor, fingerprint_diff
from pytest_efficientllm.judging.verdicts import Verdict, check_budgets
from tests.helpers.record_builders import counted, latency, record


def gpu_record(*metrics, **kwargs):
    """On a GPU profile, wall/CUDA-event latency is gated by default."""
    return record("t.py::a", *metrics, profile="h100", **kwargs)


def by_metric(verdicts):
    return {v.metric: v for v in verdicts}


def test_counted_bytes_compare_exactly() -> None:
    base = record("t.py::a", counted("peak_memory", 1_000_000))
    assert (
        by_metric(compare_record(base, record("t.py::a", counted("peak_memory", 1_000_000))))["peak_memory"].status
        == "pass"
    )
    v = by_metric(compare_record(base, record("t.py::a", counted("peak_memory", 1_000_001))))["peak_memory"]
    assert v.status == "fail" and v.failed
    assert "counted, exact" in v.message and "regression" in v.message
    v = by_metric(compare_record(base, record("t.py::a", counted("peak_memory", 990_000))))["peak_memory"]
    assert v.status == "improved" and "--update-baselines" in v.message


def test_a_one_percent_counted_memory_regression_always_fails() -> None:
    base = record("t.py::a", counted("peak_memory", 2**30))
    cur = record("t.py::a", counted("peak_memory", 2**30 * 1.01))
    v = by_metric(compare_record(base, cur))["peak_memory"]
    assert v.status == "fail" and v.change == pytest.approx(0.01)


def test_non_integer_counts_allow_float_reduction_noise_only() -> None:
    base = record("t.py::a", counted("MCR", 3.7, "x", "higher"))
    assert (
        by_metric(compare_record(base, record("t.py::a", counted("MCR", 3.7 * (1 + 1e-8), "x", "higher"))))[
            "MCR"
        ].status
        == "pass"
    )
    assert (
        by_metric(compare_record(base, record("t.py::a", counted("MCR", 3.6, "x", "higher"))))["MCR"].status == "fail"
    )


def _on(cpu: str, *metrics: Metric, profile: str = "cpu"):
    rec = record("t.py::a", *metrics, profile=profile)
    rec.fingerprint["cpu_model"] = cpu
    return rec


def test_a_quality_figure_computed_on_another_cpu_warns_where_it_would_fail_exactly() -> None:
    # Perplexities of the suites' quantized models, as recorded on an AMD EPYC and computed on an
    # Intel Xeon with AMX: +0.09%, far beyond float reduction noise, from the kernels alone.
    base = _on("AMD EPYC", counted("quality:ppl", 13.7432, "", "lower"), counted("flops", 4096, "FLOP"))
    cur = _on("Intel Xeon", counted("quality:ppl", 13.7560, "", "lower"), counted("flops", 4096, "FLOP"))
    v = by_metric(compare_record(base, cur))["quality:ppl"]
    assert v.status == "warn" and not v.failed and v.change == pytest.approx(0.00093, abs=1e-5)
    assert "computed on another CPU (cpu_model AMD EPYC -> Intel Xeon)" in v.message
    assert "give it a tolerance to gate it across CPUs (e.g. --efficiency-limit quality:ppl=+1%)" in v.message
    # The run's summary counts it under what it is, not as a counted regression.
    assert finding_kind(v) == "quality:ppl moved, computed on another CPU: not gated exactly"
    # Better is no more telling than worse.
    better = _on("Intel Xeon", counted("quality:ppl", 13.7304, "", "lower"))
    assert by_metric(compare_record(base, better))["quality:ppl"].status == "warn"
    # On the same CPU the same change is a regression, as before.
    same = _on("AMD EPYC", counted("quality:ppl", 13.7560, "", "lower"))
    assert by_metric(compare_record(base, same))["quality:ppl"].status == "fail"
    # One generic model name, other extensions (a VM shows "Intel(R) Xeon(R) Processor" for
    # generations with and without AMX): as another CPU. So is a baseline that did not record
    # them: it may be the other generation.
    base.fingerprint["cpu_isa"], same.fingerprint["cpu_isa"] = "avx2 fma avx512f", "avx2 fma avx512f amx_bf16"
    v = by_metric(compare_record(base, same))["quality:ppl"]
    assert v.status == "warn" and "(cpu_isa avx2 fma avx512f -> avx2 fma avx512f amx_bf16)" in v.message
    del base.fingerprint["cpu_isa"]
    verdicts = by_metric(compare_record(base, same))
    assert (
        verdicts["quality:ppl"].status == "warn"
        and "(cpu_isa (not recorded) -> avx2 fma" in verdicts["quality:ppl"].message
    )
    found = verdicts["*"].fingerprint
    assert found is not None and found.differs == ("cpu_isa: (not recorded) -> 'avx2 fma avx512f amx_bf16'",)
    assert "calibration workload" in found.times  # another CPU, maybe: its times through the calibration
    # A CPU that reports no extensions (another architecture) against a record without them: no difference.
    same.fingerprint["cpu_isa"] = ""
    assert by_metric(compare_record(base, same))["quality:ppl"].status == "fail"


def test_across_cpus_a_count_stays_exact_and_a_tolerance_gates_a_quality_figure() -> None:
    base = _on("AMD EPYC", counted("quality:ppl", 13.74, "", "lower"), counted("flops", 4096, "FLOP"))
    cur = _on("Intel Xeon", counted("quality:ppl", 15.0, "", "lower"), counted("flops", 4097, "FLOP"))
    assert by_metric(compare_record(base, cur))["flops"].status == "fail"  # integral: no kernel rounds it
    verdicts = by_metric(compare_record(base, cur, (parse_limit("quality:ppl", "+1%"),)))
    assert verdicts["quality:ppl"].status == "fail" and "tolerance +1%" in verdicts["quality:ppl"].message
    # On a GPU profile the GPU computed it: the host's CPU model is beside the point.
    gpu_base = _on("AMD EPYC", counted("quality:ppl", 13.74, "", "lower"), profile="h100")
    gpu_cur = _on("Intel Xeon", counted("quality:ppl", 13.76, "", "lower"), profile="h100")
    assert by_metric(compare_record(gpu_base, gpu_cur))["quality:ppl"].status == "fail"


def test_a_quality_score_takes_a_tolerance_or_a_bare_budget_by_its_recorded_name() -> None:
    # `efficiency.quality("ppl", ...)` records `quality:ppl`: a name the test makes, so the
    # catalog does not know it, and "give quality:ppl a tolerance" had been impossible.
    tol = parse_limit("quality:ppl", "+1%")
    assert (tol.metric, tol.kind, tol.relative) == ("quality:ppl", "tolerance", pytest.approx(0.01))
    budget = parse_limit("quality:ppl", "<= 14")
    assert (budget.kind, budget.op, budget.bound) == ("budget", "<=", 14.0)
    (over,) = check_budgets(record("t.py::a", counted("quality:ppl", 15.0, "", "lower")), (budget,))
    assert over.status == "fail" and "over budget" in over.message
    with pytest.raises(LimitError, match="unknown metric 'quality:'"):
        parse_limit("quality:", "+1%")


def test_a_process_memory_budget_that_fails_names_the_workloads_own_memory() -> None:
    # A test whose tensors peak at 256 KiB in a process of 320 MiB, under a budget written as
    # pytest-memray's: the failure says what was measured, and which figures are the test's own.
    def mem(name: str, value: float, method: str) -> Metric:
        return Metric(name, value, "B", "lower", "measured", method)

    rec = record(
        "t.py::a",
        mem("peak_memory", 320 * 2**20, "procfs: VmHWM reset per window via clear_refs"),
        mem("peak_memory_delta", 76 * 2**10, "procfs: VmHWM minus RSS at window open"),
        counted("tensor_peak_bytes", 256 * 2**10),
    )
    budgets = (parse_limit("peak_memory", "<= 1 MiB"), parse_limit("tensor_peak_bytes", "<= 128 KiB"))
    whole, own = check_budgets(rec, budgets)
    assert whole.status == "fail" and "over budget (procfs: VmHWM reset per window via clear_refs)" in whole.message
    assert whole.message.endswith(
        "; the workload's own: peak_memory_delta 76.00 KiB, tensor_peak_bytes 256.00 KiB "
        "(a budget on one of those gates the test alone)"
    ), whole.message
    # A budget on the workload's own figure names nothing more.
    assert own.status == "fail" and "the workload's own" not in own.message


def test_a_marker_tolerance_replaces_exactness_for_counted_metrics() -> None:
    limits = (parse_limit("peak_memory", "+1%"),)
    base = record("t.py::a", counted("peak_memory", 1000))
    assert (
        by_metric(compare_record(base, record("t.py::a", counted("peak_memory", 1005)), limits))["peak_memory"].status
        == "pass"
    )
    v = by_metric(compare_record(base, record("t.py::a", counted("peak_memory", 1020)), limits))["peak_memory"]
    assert v.status == "fail" and "tolerance +1%" in v.message


def test_a_measured_slowdown_beyond_tolerance_and_noise_fails_with_the_numbers() -> None:
    base = gpu_record(latency(0.010, seed=1))
    cur = gpu_record(latency(0.012, seed=2))
    v = by_metric(compare_record(base, cur))["AL"]
    assert v.status == "fail"
    assert "+20" in v.message and "95% interval" in v.message and "tolerance +5%" in v.message
    assert "12 ms n=7" in v.message and "10 ms n=7" in v.message


def test_a_measured_comparison_carries_its_interval_as_data_through_the_run_file() -> None:
    base, cur = gpu_record(latency(0.010, seed=1)), gpu_record(latency(0.012, seed=2))
    v = by_metric(compare_record(base, cur))["AL"]
    assert v.interval is not None, v.message
    low, high = v.interval
    assert 0.1 < low <= v.change <= high < 0.3  # about +20%, the interval around it
    assert f"95% interval {format_change(low)} .. {format_change(high)}" in v.message
    assert Verdict.from_dict(json.loads(json.dumps(v.to_dict()))) == v  # a JSON list comes back a pair
    # No interval where the comparison had none: an exact count, or rounds too few for one.
    counts = compare_record(record("t.py::a", counted("flops", 100)), record("t.py::a", counted("flops", 120)))
    assert by_metric(counts)["flops"].interval is None
    few = by_metric(compare_record(gpu_record(latency(0.010, n=3)), gpu_record(latency(0.020, n=3))))["AL"]
    assert few.status == "warn" and few.interval is None


def test_a_slowdown_inside_the_noise_of_the_runs_does_not_fail() -> None:
    base = gpu_record(latency(0.010, spread=0.6, seed=1))
    cur = gpu_record(latency(0.0107, spread=0.6, seed=2))
    v = by_metric(compare_record(base, cur))["AL"]
    assert v.status == "pass"


def test_a_small_change_within_tolerance_passes() -> None:
    v = by_metric(compare_record(gpu_record(latency(0.010, seed=1)), gpu_record(latency(0.0102, seed=2))))["AL"]
    assert v.status == "pass" and v.change == pytest.approx(0.02, abs=0.01)


def test_improvements_are_reported_with_the_refresh_hint() -> None:
    v = by_metric(compare_record(gpu_record(latency(0.010, seed=1)), gpu_record(latency(0.0086, seed=2))))["AL"]
    assert v.status == "improved" and "faster by 14%" in v.message and "--update-baselines" in v.message


def test_too_few_rounds_warn_instead_of_failing() -> None:
    v = by_metric(compare_record(gpu_record(latency(0.010, n=3)), gpu_record(latency(0.020, n=3))))["AL"]
    assert v.status == "warn" and "at least 5 rounds" in v.message


def test_throughput_regressions_are_drops() -> None:
    def tps(value: float) -> Metric:
        return Metric(
            "tokens_per_s",
            value,
            "tok/s",
            "higher",
            "measured",
            "m",
            samples=tuple(value * f for f in (0.99, 1.0, 1.01, 1.0, 0.995, 1.005)),
        )

    limits = (parse_limit("throughput", "-5%"),)
    assert (
        by_metric(compare_record(record("t.py::a", tps(1000)), record("t.py::a", tps(800)), limits))[
            "tokens_per_s"
        ].status
        == "fail"
    )
    assert (
        by_metric(compare_record(record("t.py::a", tps(1000)), record("t.py::a", tps(1200)), limits))[
            "tokens_per_s"
        ].status
        == "improved"
    )


def test_a_single_valued_measured_metric_gates_on_its_tolerance_alone() -> None:
    peak = lambda v: Metric("peak_memory", v, "B", "lower", "measured", "VmHWM")  # noqa: E731
    limits = (parse_limit("peak_memory", "+1%"),)
    v = by_metric(compare_record(record("t.py::a", peak(1e9)), record("t.py::a", peak(1.02e9)), limits))["peak_memory"]
    assert v.status == "fail" and "no noise estimate" in v.message
    # Without a tolerance it is not gated by default (no noise estimate to protect it).
    assert "peak_memory" not in by_metric(compare_record(record("t.py::a", peak(1e9)), record("t.py::a", peak(2e9))))


def test_estimates_never_fail() -> None:
    est = lambda v: Metric("energy", v, "J", "lower", "estimated", "estimate: cpu-seconds x model")  # noqa: E731
    limits = (parse_limit("energy", "+5%"),)
    v = by_metric(compare_record(record("t.py::a", est(10.0)), record("t.py::a", est(20.0)), limits))["energy"]
    assert v.status == "warn" and "never fails" in v.message


def test_different_sources_are_never_compared_and_the_mismatch_is_reported() -> None:
    limits = (parse_limit("energy", "+5%"),)
    base = record("t.py::a", Metric("energy", 10.0, "J", "lower", "measured", "RAPL energy_uj"))
    cur = record("t.py::a", Metric("energy", 99.0, "J", "lower", "estimated", "estimate: cpu-seconds x model"))
    v = by_metric(compare_record(base, cur, limits))["energy"]
    assert v.status == "warn" and v.kind == "source" and v.change is None
    assert "measured (RAPL energy_uj)" in v.message and "estimated" in v.message


def test_another_device_model_or_profile_is_an_error() -> None:
    base = gpu_record(latency(0.01), fingerprint={"device_name": "NVIDIA H100 PCIe"})
    cur = gpu_record(latency(0.01), fingerprint={"device_name": "NVIDIA H100 80GB HBM3"})
    (v,) = compare_record(base, cur)
    assert v.status == "error" and v.failed and "H100 PCIe" in v.message and "--update-baselines" in v.message
    (v,) = compare_record(record("t.py::a", latency(0.01)), record("t.py::a", latency(0.01), profile="h200"))
    assert v.status == "error" and "profile" in v.message


def test_another_cpu_warns_and_compares_calibrated_times() -> None:
    # The candidate machine is 20% slower at the calibration workload and 20% slower at the
    # test: relative to calibration, nothing changed.
    limits = (parse_limit("AL", "+5%"),)
    base = record("t.py::a", latency(0.010, seed=1), fingerprint={"cpu_model": "AMD EPYC 7763"})
    cur = record(
        "t.py::a",
        latency(0.012, seed=2),
        fingerprint={"cpu_model": "Intel(R) Xeon(R) Processor", "calibration": {"index_s": 0.0024}},
    )
    verdicts = by_metric(compare_record(base, cur, limits))
    assert verdicts["*"].status == "warn" and "cpu_model" in verdicts["*"].message and "x1.200" in verdicts["*"].message
    assert verdicts["AL"].status == "pass" and "calibrated" in verdicts["AL"].message
    # What the warning found is data too, and crosses the xdist wire (JSON) whole.
    found = verdicts["*"].fingerprint
    assert found is not None and found.differs == ("cpu_model: 'AMD EPYC 7763' -> 'Intel(R) Xeon(R) Processor'",)
    assert found.calibration == pytest.approx(1.2) and found.times.endswith("(this machine x1.200 the baseline's)")
    assert Verdict.from_dict(json.loads(json.dumps(verdicts["*"].to_dict()))) == verdicts["*"]
    # Same fingerprint: raw times, so the same 20% is a regression.
    same = record("t.py::a", latency(0.012, seed=2), fingerprint={"cpu_model": "AMD EPYC 7763"})
    assert by_metric(compare_record(base, same, limits))["AL"].status == "fail"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"packages": {"torch": "2.13.0"}}, {"packages": {"torch": "2.14.1"}}),
        ({"python": "3.11.7"}, {"python": "3.12.1"}),
        ({"torch_threads": 1}, {"torch_threads": 2}),
        ({"os": "Linux 6.18.44-fc-v1272"}, {"os": "Linux 6.18.44-fc-v1252"}),
        ({"cpu_cores_usable": 2, "cpu_count": 2}, {"cpu_cores_usable": 4, "cpu_count": 4}),
    ],
)
def test_a_difference_of_software_on_the_same_cpu_warns_and_compares_raw_times(before: dict, after: dict) -> None:
    # The calibration read 20% slower and so did the test: on the same CPU that is the change
    # (a torch upgrade's own effect, which a torch calibration workload would partly take out),
    # not the machine's speed.
    limits = (parse_limit("AL", "+5%"),)
    base = record("t.py::a", latency(0.010, seed=1), fingerprint=before)
    cur = record("t.py::a", latency(0.012, seed=2), fingerprint={**after, "calibration": {"index_s": 0.0024}})
    verdicts = by_metric(compare_record(base, cur, limits))
    assert verdicts["*"].status == "warn" and "times compared raw (the CPU is the baseline's)" in verdicts["*"].message
    assert verdicts["AL"].status == "fail" and "calibrated" not in verdicts["AL"].message
    found = verdicts["*"].fingerprint
    assert found is not None and found.calibration is None
    assert found.times == "times compared raw (the CPU is the baseline's)"
    assert len(found.differs) == len(after) and all(d.startswith(tuple(after)) for d in found.differs)


def test_on_a_gpu_profile_the_calibration_stands_for_the_host_s_cpu_time_only() -> None:
    # The host CPU ran the calibration 20% slower; the GPU's latency and the host's CPU time
    # both read 20% slower. The host's CPU time is the CPU's speed; the GPU's latency is not.
    cpu_time = latency(0.010, seed=3, name="cpu_time_per_round")
    base = gpu_record(
        latency(0.010, seed=1), cpu_time, fingerprint={"calibration": {"index_s": 0.002, "cpu_index_s": 0.002}}
    )
    slower = {"cpu_model": "Intel(R) Xeon(R) Processor", "calibration": {"index_s": 0.0024, "cpu_index_s": 0.0024}}
    cpu_time_now = latency(0.012, seed=4, name="cpu_time_per_round")
    limits = (parse_limit("cpu_time_per_round", "+5%"),)
    verdicts = by_metric(
        compare_record(base, gpu_record(latency(0.012, seed=2), cpu_time_now, fingerprint=slower), limits)
    )
    assert (
        "the host's CPU times (the GPU's raw) compared relative to the calibration workload (this machine x1.200"
        in (verdicts["*"].message)
    )
    assert verdicts["AL"].status == "fail" and "calibrated" not in verdicts["AL"].message
    assert verdicts["cpu_time_per_round"].status == "pass" and "calibrated" in verdicts["cpu_time_per_round"].message
    # Another driver on the same host: the host's CPU time is compared raw too.
    driver = {"driver_version": "570.1", "calibration": slower["calibration"]}
    base = gpu_record(latency(0.010, seed=1), cpu_time, fingerprint={**base.fingerprint, "driver_version": "560.9"})
    verdicts = by_metric(
        compare_record(base, gpu_record(latency(0.012, seed=2), cpu_time_now, fingerprint=driver), limits)
    )
    assert "times compared raw (the host CPU is the baseline's)" in verdicts["*"].message
    assert (
        verdicts["cpu_time_per_round"].status == "fail" and "calibrated" not in verdicts["cpu_time_per_round"].message
    )


def test_gate_modes() -> None:
    base, cur = gpu_record(latency(0.010, seed=1)), gpu_record(latency(0.015, seed=2))
    assert by_metric(compare_record(base, cur, mode="warn"))["AL"].status == "warn"
    assert compare_record(base, cur, mode="off") == []
    with pytest.raises(ValueError, match="fail, warn, off"):
        compare_record(base, cur, mode="loud")


def test_unavailable_and_missing_values_are_skipped_or_new() -> None:
    limits = (parse_limit("energy", "+5%"), parse_limit("TTFT", "+5%"))
    base = record("t.py::a", Metric("energy", None, "J", "lower", "measured", "RAPL", note="no RAPL"))
    cur = record("t.py::a", Metric("energy", 3.0, "J", "lower", "measured", "RAPL"), counted("flops", 10, "FLOP"))
    v = by_metric(compare_record(base, cur, limits))
    assert v["energy"].status == "skipped" and "no RAPL" in v["energy"].message
    assert v["flops"].status == "new"
    assert v["TTFT"].status == "skipped" and "not recorded" in v["TTFT"].message


def test_fingerprint_diff_ignores_calibration_and_fields_only_one_side_has() -> None:
    d = fingerprint_diff(
        {"calibration": {"index_s": 1}, "a": 1, "packages": {"torch": "1"}},
        {"calibration": {"index_s": 2}, "b": 2, "packages": {"torch": "2"}},
    )
    assert d.errors == [] and d.warnings == ["packages.torch: '1' -> '2'"]


def test_fingerprint_diff_names_package_and_software_changes_apart() -> None:
    d = fingerprint_diff(
        {"packages": {"torch": "2.13.0", "gguf": ""}, "python": "3.11.7", "cpu_model": "A", "torch_threads": 1},
        {"packages": {"torch": "2.14.0", "gguf": "0.19.0"}, "python": "3.12.1", "cpu_model": "B", "torch_threads": 1},
    )
    assert d.packages == ["gguf not installed -> 0.19.0", "torch 2.13.0 -> 2.14.0"]
    assert d.software == [*d.packages, "python 3.11.7 -> 3.12.1"]  # not the CPU model
    assert len(d.warnings) == 4
    gpu = fingerprint_diff(
        {"driver_version": "580.159.04", "os": "Linux 6.8"}, {"driver_version": "590.1", "os": "Linux 6.9"}
    )
    assert gpu.software == ["driver_version 580.159.04 -> 590.1"]  # not the OS kernel


def test_on_the_cpu_cpu_time_per_round_warns_by_default_and_fails_with_a_tolerance() -> None:
    cpu = lambda v: Metric("cpu_time_per_round", v, "s", "lower", "measured", "cpu_time / rounds")  # noqa: E731
    base = record("t.py::a", latency(0.010, seed=1), cpu(0.008))
    cur = record("t.py::a", latency(0.020, seed=2), cpu(0.0088))
    v = by_metric(compare_record(base, cur))
    assert "AL" not in v and v["cpu_time_per_round"].status == "warn" and "+10.0%" in v["cpu_time_per_round"].message
    assert "give cpu_time_per_round a tolerance" in v["cpu_time_per_round"].message
    v = by_metric(compare_record(base, cur, (parse_limit("cpu_time_per_round", "+5%"), parse_limit("latency", "+5%"))))
    assert v["cpu_time_per_round"].status == "fail" and v["AL"].status == "fail"


def test_cpu_time_is_calibrated_by_the_calibration_cpu_time() -> None:
    cpu = lambda v: Metric("cpu_time_per_round", v, "s", "lower", "measured", "cpu_time / rounds")  # noqa: E731
    base = record("t.py::a", cpu(0.008), fingerprint={"calibration": {"index_s": 0.002, "cpu_index_s": 0.002}})
    # Other CPU: 20% slower in CPU time, its wall clock slowed far more by neighbours.
    cur = record(
        "t.py::a",
        cpu(0.0096),
        fingerprint={"cpu_model": "Other CPU", "calibration": {"index_s": 0.01, "cpu_index_s": 0.0024}},
    )
    v = by_metric(compare_record(base, cur))
    assert v["cpu_time_per_round"].status == "pass" and "calibrated" in v["cpu_time_per_round"].message


def test_which_gpu_of_one_model_and_start_up_probes_are_not_fingerprint_differences() -> None:
    base = {
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_uuids": ["GPU-a"],
        "cuda_visible_devices": "0",
        "gpu_idle_power_w": 70.1,
        "nvml_energy_step_mj": 1.0,
    }
    cur = {
        "gpu_name": "NVIDIA H100 80GB HBM3",
        "gpu_uuids": ["GPU-b"],
        "cuda_visible_devices": "1",
        "gpu_idle_power_w": 73.4,
        "nvml_energy_step_mj": 2.0,
    }
    same = fingerprint_diff(base, cur)
    assert (same.errors, same.warnings) == ([], [])
    assert fingerprint_diff(base, {**cur, "gpu_name": "NVIDIA H100 PCIe"}).errors


# -- run-to-run noise from a baseline recorded over several runs ----------------------------


def _latency_metric(samples, history=()):
    from pytest_efficientllm.core.record import Metric

    return Metric(
        "cpu_time_per_round",
        sum(samples) / len(samples),
        "s",
        "lower",
        "measured",
        "test",
        samples=tuple(samples),
        history=tuple(history),
    )


def _verdict_of(base, cur):
    from pytest_efficientllm.core.record import Record
    from pytest_efficientllm.judging.compare import compare_record

    b = Record("t.py::t", "cpu", metrics={"cpu_time_per_round": base})
    c = Record("t.py::t", "cpu", metrics={"cpu_time_per_round": cur})
    limits = (parse_limit("cpu_time_per_round", "+5%"),)
    return [v for v in compare_record(b, c, limits) if v.metric == "cpu_time_per_round"][0]


def test_a_shift_inside_the_baseline_runs_spread_passes_and_beyond_it_fails() -> None:
    # Each run's rounds agree to ~1%, but the five baseline runs' medians spread over 10-11.5 ms:
    # a run at 12.6 ms (+14% on the newest baseline run) is what unchanged code does here.
    rounds = [1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.0]
    base = _latency_metric([0.011 * x for x in rounds], history=(0.0100, 0.0105, 0.0110, 0.0115))
    assert _verdict_of(base, _latency_metric([0.0126 * x for x in rounds])).status == "pass"
    assert _verdict_of(base, _latency_metric([0.0200 * x for x in rounds])).status == "fail"


def test_with_a_one_run_baseline_the_within_run_rule_decides_and_says_so() -> None:
    rounds = [1.0, 1.01, 0.99, 1.0, 1.005, 0.995, 1.0]
    verdict = _verdict_of(_latency_metric([0.011 * x for x in rounds]), _latency_metric([0.0126 * x for x in rounds]))
    assert verdict.status == "fail"
    assert "run-to-run noise unknown" in verdict.message


def test_update_keeps_the_medians_of_earlier_runs(tmp_path) -> None:
    from pytest_efficientllm.core.record import Record
    from pytest_efficientllm.storage.baselines import BaselineStore

    store = BaselineStore(tmp_path, "cpu")
    for median in (0.010, 0.012, 0.011):
        store.update([Record("suites/t.py::t", "cpu", metrics={"cpu_time_per_round": _latency_metric([median] * 5)})])
    stored = store.lookup("suites/t.py::t")["cpu_time_per_round"]
    assert stored.history == (0.010, 0.012)
    assert stored.samples == (0.011,) * 5


def test_another_cpu_beside_software_differences_is_calibrated() -> None:
    limits = (parse_limit("AL", "+5%"),)
    base = record(
        "t.py::a", latency(0.010, seed=1), fingerprint={"os": "Linux 6.18.44-fc-v1272", "cpu_isa": "avx2 fma"}
    )
    both = {
        "os": "Linux 6.18.44-fc-v1252",
        "packages": {"torch": "2.14.1"},
        "cpu_isa": "avx2 fma avx512f",
        "calibration": {"index_s": 0.0024},
    }
    verdicts = by_metric(compare_record(base, record("t.py::a", latency(0.012, seed=2), fingerprint=both), limits))
    assert verdicts["AL"].status == "pass" and "x1.200" in verdicts["*"].message


def _verdict(base: Metric, cur: Metric, limit: str | None = "+5%") -> Verdict:
    limits = (parse_limit(base.name, limit),) if limit else ()
    (v,) = [v for v in compare_record(record("t.py::a", base), record("t.py::a", cur), limits) if v.metric == base.name]
    return v


def test_a_count_is_exact_only_where_both_sides_are_whole_numbers() -> None:
    # A whole-number baseline and a current value a float rounding off it (a share, an intensity
    # computed from counts): compared within the relative rounding, not read as a regression.
    assert _verdict(counted("bytes_accessed", 1000.0), counted("bytes_accessed", 1000.0000001), None).status == "pass"
    assert _verdict(counted("bytes_accessed", 1000.0), counted("bytes_accessed", 1001.0), None).status == "fail"


def test_a_measured_value_with_rounds_on_one_side_only_is_judged_by_its_tolerance() -> None:
    # A baseline recorded with its rounds, a run that kept one value (or the other way round):
    # no interval to draw, so the tolerance decides, in the metric's own word ("worse", not "slower").
    rounds = Metric("tensor_peak_bytes", 1000.0, "B", "lower", "measured", "test builder", samples=(990.0, 1010.0))
    doubled = Metric("tensor_peak_bytes", 2000.0, "B", "lower", "measured", "test builder")
    halved = Metric("tensor_peak_bytes", 500.0, "B", "lower", "measured", "test builder")
    for base, cur in ((rounds, doubled), (halved, rounds)):
        v = _verdict(base, cur)
        assert v.status == "fail" and "worse beyond tolerance (one value per run: no noise estimate)" in v.message


def test_a_value_unavailable_on_one_side_says_which_side_and_why() -> None:
    there = Metric("energy_per_token", 0.5, "J/token", "lower", "measured", "NVML")
    missing = Metric("energy_per_token", None, "J/token", "lower", "measured", "NVML", note="window too short")
    v = _verdict(missing, there)
    assert v.status == "skipped" and v.message == "not compared: unavailable in the baseline (window too short)"
    v = _verdict(there, missing)
    assert v.status == "skipped" and v.message == "not compared: unavailable in this run (window too short)"


def test_the_calibration_factor_is_this_run_s_index_over_the_baseline_s_and_none_without_one() -> None:
    base = record("t.py::a")
    slower = record("t.py::a", fingerprint={**base.fingerprint, "calibration": {"index_s": 0.003}})
    assert calibration_factor(base, slower) == pytest.approx(1.5)
    for broken in ({"index_s": 0.0}, {"index_s": -1.0}, {}, {"index_s": "fast"}):
        other = record("t.py::a", fingerprint={**base.fingerprint, "calibration": broken})
        assert calibration_factor(base, other) is None and calibration_factor(other, base) is None, broken
