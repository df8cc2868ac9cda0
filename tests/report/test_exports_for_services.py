"""Exports for the services users chart runs on, checked against each format's published schema,
and the example GitHub Actions workflow checked against the workflow schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from pytest_efficientllm.core.metrics import counted, measured, unavailable
from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.report.bencher import bmf
from pytest_efficientllm.report.export import export_entries, left_out_lines
from pytest_efficientllm.storage.runfile import write_run
from tests.helpers import REPO_ROOT
from tests.helpers.report_records import sample_run

# Bencher Metric Format: the JSON schema and the example that Bencher's reference page publishes.
BMF_SCHEMA = {
    "$id": "https://bencher.dev/bmf.json",
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "patternProperties": {
        ".+": {
            "type": "object",
            "patternProperties": {
                ".+": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "number"},
                        "lower_value": {"type": "number"},
                        "upper_value": {"type": "number"},
                    },
                    "required": ["value"],
                }
            },
        }
    },
}
BMF_EXAMPLE = {
    "benchmark_name": {
        "latency": {"value": 88.0, "lower_value": 87.42, "upper_value": 88.88},
        "throughput": {"value": 5.55, "lower_value": 3.14, "upper_value": 6.30},
    },
    "/bin/sh -c ./my_build_script.sh": {"build-time": {"value": 87.0}},
    "my_binary": {"file-size": {"value": 42.0}},
}


def test_the_published_example_is_valid_and_a_wrong_one_is_not() -> None:
    jsonschema.validate(BMF_EXAMPLE, BMF_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"b": {"latency": {"lower_value": 1.0}}}, BMF_SCHEMA)


def test_bmf_of_a_run_follows_the_schema_and_the_examples_shape() -> None:
    data, skipped = bmf(sample_run().records)
    jsonschema.validate(data, BMF_SCHEMA)
    mha = data["suites/test_attention.py::test_prefill[mha] [cpu]"]
    # AL kept its rounds: lower and upper are their extremes, as the example's latency has.
    assert mha["AL"] == {"value": 0.020, "lower_value": pytest.approx(0.0198), "upper_value": pytest.approx(0.0202)}
    assert mha["AEC (estimated)"]["value"] == 35.0 and "lower_value" not in mha["AEC (estimated)"]
    assert (
        "PCU" not in mha
        and ("suites/test_attention.py::test_prefill[mha]", "PCU", "no GPU: NVML not available") in skipped
    )
    # Said once per metric and reason, not once per test.
    assert "PCU in 6 tests: no GPU: NVML not available" in left_out_lines(skipped)
    assert all(len(measure) <= 64 for bench in data.values() for measure in bench)


def test_export_bencher_command_writes_the_file(tmp_path: Path) -> None:
    run_path = tmp_path / "run.json"
    write_run(run_path, sample_run())
    cmd = [sys.executable, "-m", "pytest_efficientllm", "export-bencher", str(run_path), "-o", str(tmp_path / "b.json")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads((tmp_path / "b.json").read_text()), BMF_SCHEMA)


def test_the_example_workflow_is_a_valid_github_workflow() -> None:
    workflow = REPO_ROOT / "examples" / "github-efficiency.yml"
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(workflow)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    text = workflow.read_text()
    assert "pytest-efficientllm ab" in text and "$GITHUB_STEP_SUMMARY" in text and "--update-baselines" in text


def test_the_workflow_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps: 3\n")
    cmd = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(broken)]
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode != 0


def test_the_benchmark_action_export_takes_the_chosen_metrics_in_their_direction() -> None:
    record = Record(nodeid="t.py::a", profile="cpu")
    record.add(measured("AL", 0.01, "timer", samples=(0.009, 0.011)))  # two rounds: a range
    record.add(measured("AT", 100.0, "counted / s", unit="tok/s"))
    record.add(counted("flops", 2e9, "FLOP counter"))  # lower is better, but not among the defaults
    record.add(Metric("arithmetic_intensity", 3.0, "FLOP/B", "info", "counted", "FLOPs / bytes"))
    record.add(unavailable("PCU", "measured", "NVML utilization", ""))  # no reason given

    default = export_entries([record])
    assert [e["name"] for e in default.smaller] == ["t.py::a AL [cpu]"]
    assert [e["name"] for e in default.bigger] == ["t.py::a AT [cpu]"]
    assert default.smaller[0]["range"] == "± 0.001414" and "rounds: 2" in default.smaller[0]["extra"]
    assert "range" not in default.bigger[0]  # one value: no spread to show
    assert default.skipped == [("t.py::a", "PCU", "unavailable")]

    # --metrics: exactly those named, the defaults left out; a metric of no direction never.
    chosen = export_entries([record], ["flops", "arithmetic_intensity"])
    assert [e["name"] for e in chosen.smaller] == ["t.py::a flops [cpu]"] and chosen.bigger == []
    assert chosen.skipped == []
