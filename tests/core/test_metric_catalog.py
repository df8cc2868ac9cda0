"""The metric catalog (core/metrics.py) is the one place that knows a metric's unit and direction.

* No module of the package outside core/ builds a `Metric` itself or restates a unit or a
  direction: they build through `core.metrics` (`measured`, `counted`, `estimated`, `make`,
  `unavailable`, `like`); `declared` (a test's own metric) is for the fixture alone.
* Every metric stored in the baselines agrees with the catalog; the names the catalog does
  not list are the suites' own, declared once by the suite with the unit and direction stored.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_efficientllm.core import metrics
from pytest_efficientllm.core.metrics import CATALOG
from pytest_efficientllm.core.record import DIRECTIONS
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
PACKAGE = ROOT / "pytest_efficientllm"
BUILDERS = {"make", "measured", "counted", "estimated", "unavailable", "like"}
# Where a test's own metric (not in the catalog) enters the package.
DECLARING = {"glue/fixture.py"}


def _called(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _literal(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def restated(source: str, where: str) -> list[str]:
    """What a module outside core/ does that restates a unit or a direction, one line per case."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _called(node)
        keywords = {k.arg: k.value for k in node.keywords}
        at = f"{where}:{node.lineno}"
        if name == "Metric":
            out.append(f"{at}: builds a Metric directly; build it through core.metrics")
        elif name == "replace" and ({"unit", "direction"} & set(keywords)):
            out.append(f"{at}: replace() sets a unit or a direction")
        elif name in BUILDERS:
            if "direction" in keywords:
                out.append(f"{at}: {name}() given a direction: the catalog has it")
            if name == "unavailable" and len(node.args) > 4:
                out.append(f"{at}: unavailable() with unit and direction arguments: the catalog has them")
            unit = _literal(keywords.get("unit"))
            metric = _literal(node.args[0]) if node.args else None
            if isinstance(unit, str):
                spec = CATALOG.get(metric) if isinstance(metric, str) else None
                if spec is None or unit not in spec.units:
                    out.append(f"{at}: {name}({metric!r}, unit={unit!r}): a unit the catalog does not offer for it")
        elif name == "declared":
            if where not in DECLARING:
                out.append(
                    f"{at}: declared() outside {sorted(DECLARING)}: catalog metrics go through make()/measured()/..."
                )
            elif isinstance(_literal(node.args[0]) if node.args else None, str) and _literal(node.args[0]) in CATALOG:
                out.append(f"{at}: declared() of the catalog metric {_literal(node.args[0])!r}")
    return out


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "core" not in p.relative_to(PACKAGE).parts)


def test_no_module_outside_core_restates_a_unit_or_direction() -> None:
    modules = _modules()
    assert len(modules) > 20, "the walk found too few modules: the package moved?"
    problems = [line for p in modules for line in restated(p.read_text(), p.relative_to(PACKAGE).as_posix())]
    assert not problems, "metrics must be built through core.metrics:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "source",
    [
        'Metric("AL", 1.0, "s", "lower", "measured", "m")',
        'record.Metric("AL", 1.0, "s", "lower", "measured", "m")',
        'unavailable("AL", "s", "lower", "measured", "m", "why")',
        'measured("AL", 1.0, "m", direction="lower")',
        'measured("AL", 1.0, "m", unit="ms")',
        'measured("AT", 1.0, "m", unit="tok/min")',
        'dataclasses.replace(metric, unit="ms")',
        'declared("x", 1.0, "B", "lower", "counted", "m")',
    ],
)
def test_the_guard_catches_a_restated_unit_or_direction(source: str) -> None:
    assert restated(source, "telemetry/example.py")


@pytest.mark.parametrize(
    "source",
    [
        'measured("AL", 1.0, "m", samples=(1.0,))',
        'unavailable("AT", "measured", "m", "why", unit="tok/s")',
        'like(m0, 2.0, "max over ranks")',
        "Metric.from_dict(data)",
    ],
)
def test_the_guard_lets_catalog_builds_through(source: str) -> None:
    assert not restated(source, "telemetry/example.py")


def test_catalog_entries_are_well_formed() -> None:
    for spec in CATALOG.values():
        assert spec.direction in DIRECTIONS, spec
        assert spec.description, spec
        assert not spec.units or spec.unit == "", f"{spec.name}: a metric with workload units has no single unit"


def test_builders_take_unit_and_direction_from_the_catalog() -> None:
    m = metrics.measured("AL", 0.5, "clock", samples=(0.5,))
    assert (m.unit, m.direction, m.source, m.samples) == ("s", "lower", "measured", (0.5,))
    gone = metrics.unavailable("energy", "measured", "counter", "no counter")
    assert (gone.value, gone.unit, gone.direction, gone.note) == (None, "J", "lower", "no counter")
    assert metrics.estimated("peak_flops_per_s", 1e12, "estimate: datasheet").direction == "info"
    assert metrics.measured("AT", 1.0, "m", unit="tok/param/s").unit == "tok/param/s"
    with pytest.raises(KeyError, match="not in the metric catalog"):
        metrics.measured("no_such_metric", 1.0, "m")
    with pytest.raises(ValueError, match="catalog's unit"):
        metrics.measured("AL", 1.0, "m", unit="ms")
    with pytest.raises(ValueError, match="unit must be one of"):
        metrics.measured("AT", 1.0, "m")
    with pytest.raises(ValueError, match="is in the catalog"):
        metrics.declared("AL", 1.0, "ms", "lower", "measured", "m")


def test_a_family_of_names_takes_its_unit_and_direction_from_the_catalog() -> None:
    share = metrics.counted("bytes_share:bf16", 0.97, "op counting")
    assert (share.unit, share.direction) == ("fraction", "info")
    assert metrics.lookup("flops_share:fp8_e4m3fn").unit == "fraction"
    assert metrics.spec("bytes_share:int4").direction == "info"
    assert metrics.like(share, 0.5, "merged") == metrics.counted("bytes_share:bf16", 0.5, "merged")
    for unknown in ("bytes_share:", "bytes_share", "no_family:bf16"):
        assert metrics.lookup(unknown) is None
        with pytest.raises(KeyError, match="not in the metric catalog"):
            metrics.counted(unknown, 1.0, "m")
    with pytest.raises(ValueError, match="catalog's unit"):
        metrics.counted("bytes_share:bf16", 1.0, "m", unit="%")
    with pytest.raises(ValueError, match="is in the catalog"):
        metrics.declared("flops_share:bf16", 1.0, "fraction", "info", "counted", "m")


def test_a_count_varies_when_its_counting_runs_disagree() -> None:
    assert not metrics.varies(metrics.counted("bytes_accessed", 8.0, "m"))
    assert not metrics.varies(metrics.counted("bytes_accessed", 8.0, "m", samples=(8.0, 8.0)))
    assert metrics.varies(metrics.counted("bytes_accessed", 9.0, "m", samples=(8.0, 9.0)))
    assert not metrics.varies(metrics.measured("AL", 1.0, "m", samples=(1.0, 2.0)))


def test_like_keeps_a_metric_and_a_tests_own_declaration() -> None:
    own = metrics.declared("kv_bytes", 4.0, "B/tok", "lower", "counted", "by the test")
    assert metrics.like(own, 8.0, "max over ranks") == metrics.declared(
        "kv_bytes", 8.0, "B/tok", "lower", "counted", "max over ranks"
    )
    at = metrics.measured("AT", 1.0, "m", unit="samples/param/s")
    assert metrics.like(at, 2.0, "merged").unit == "samples/param/s"
    peak = metrics.estimated("peak_flops_per_s", 1e12, "estimate: x")
    assert metrics.like(peak, 2e12, "estimate: sum").source == "estimated"


# -- the stored baselines agree with the catalog ----------------------------------------------


def _records(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield record
    for other in record.get("ranks", []) + record.get("confirmations", []):
        yield from _records(other)


def _stored_metrics() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((ROOT / "baselines").glob("*/**/*.json")):
        data = json.loads(path.read_text())
        for nodeid, record in data["tests"].items():
            for r in _records(record):
                for name, metric in r["metrics"].items():
                    assert metric["name"] == name, (
                        f"{path}: {nodeid}: metric stored as {name!r} is named {metric['name']!r}"
                    )
                    out.append((f"{path.relative_to(ROOT)}: {nodeid}", metric))
    return out


def _suite_declarations() -> list[tuple[re.Pattern[str], str, str]]:
    """(name pattern, unit, direction) of each `efficiency.count(...)`/`.quality(...)` in suites/."""
    out = []
    for path in sorted((ROOT / "suites").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or _called(node) not in ("count", "quality") or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                pattern = re.escape(first.value)
            elif isinstance(first, ast.JoinedStr):
                pattern = "".join(re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in first.values)
            else:
                continue
            keywords = {k.arg: _literal(k.value) for k in node.keywords}
            if _called(node) == "quality":
                out.append((re.compile("quality:" + pattern), "", keywords.get("direction")))
            elif keywords.get("unit") is not None and keywords.get("direction") is not None:
                out.append((re.compile(pattern), keywords["unit"], keywords["direction"]))
    return out


def test_stored_metrics_agree_with_the_catalog_or_the_suite_that_declares_them() -> None:
    stored = _stored_metrics()
    assert len(stored) > 100, "too few stored metrics found: the baselines moved?"
    declarations = _suite_declarations()
    problems = []
    for where, m in stored:
        name, unit, direction = m["name"], m["unit"], m["direction"]
        spec = metrics.lookup(name)
        if spec is not None:
            if (unit != spec.unit and unit not in spec.units) or direction != spec.direction:
                problems.append(
                    f"{where}: {name} stored as ({unit!r}, {direction}), "
                    f"catalog says ({spec.units or spec.unit!r}, {spec.direction})"
                )
            continue
        declared = {(u, d) for pattern, u, d in declarations if pattern.fullmatch(name)}
        if not declared:
            problems.append(f"{where}: {name} is neither in the catalog nor declared by a suite's count()/quality()")
        elif (unit, direction) not in declared:
            problems.append(f"{where}: {name} stored as ({unit!r}, {direction}), its suite declares {sorted(declared)}")
    assert not problems, "\n".join(sorted(set(problems)))


def test_count_takes_the_catalogs_unit_and_refuses_another(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_efficientllm.glue.fixture import MeasurementError

        def test_counts(efficiency):
            params = efficiency.count("params", 10, unit="", direction="info")
            assert (params.unit, params.direction, params.source) == ("", "info", "counted")
            assert efficiency.count("flops", 5).unit == "FLOP"
            own = efficiency.count("kv_bytes", 4, unit="B/tok", direction="lower")
            assert (own.unit, own.direction) == ("B/tok", "lower")
            assert efficiency.quality("ppl", 8.1, direction="lower", method="m").unit == ""
            with pytest.raises(MeasurementError, match="a catalog metric"):
                efficiency.count("peak_memory", 1, unit="MiB")
            with pytest.raises(MeasurementError, match="a catalog metric"):
                efficiency.count("flops", 1, direction="higher")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_family_name_takes_its_familys_unit_and_direction() -> None:
    roof = metrics.estimated("roofline_time:h100", 1e-3, "estimate: roofline")
    assert (roof.name, roof.unit, roof.direction, roof.source) == ("roofline_time:h100", "s", "lower", "estimated")
    share = metrics.counted("flops_share:bf16", 0.75, "by dtype")
    assert (share.unit, share.direction) == ("fraction", "info")
    assert metrics.counted("bytes_share:int8", 0.5, "by dtype").unit == "fraction"
    assert metrics.spec("roofline_time:a100").unit == "s"
    assert metrics.resolve_name("flops_share:fp32") == "flops_share:fp32"
    assert metrics.like(roof, 2e-3, "estimate: merged").direction == "lower"
    assert metrics.lookup("roofline_time:") is None  # a family needs its suffix
    assert metrics.lookup("quality:ppl") is None  # a test declares its quality scores
    with pytest.raises(KeyError, match="not in the metric catalog"):
        metrics.estimated("no_such_family:h100", 1.0, "m")
    with pytest.raises(ValueError, match="catalog's unit"):
        metrics.estimated("roofline_time:h100", 1.0, "m", unit="ms")
    with pytest.raises(ValueError, match="is in the catalog"):
        metrics.declared("flops_share:bf16", 1.0, "", "info", "counted", "m")


def test_the_counted_roofline_inputs_are_in_the_catalog() -> None:
    # The same entries the counting branch adds: name, unit, direction.
    got = {n: (metrics.spec(n).unit, metrics.spec(n).direction) for n in ("bytes_accessed", "arithmetic_intensity")}
    assert got == {"bytes_accessed": ("B", "lower"), "arithmetic_intensity": ("FLOP/B", "info")}
    assert (metrics.spec("roofline_time").unit, metrics.spec("roofline_time").direction) == ("s", "lower")


def test_a_record_answers_to_the_aliases_the_marker_takes() -> None:
    # The marker took `latency="<= 50 ms"`, but `run["latency"]` on the run it judged was a KeyError.
    from pytest_efficientllm.core.record import Record

    al = metrics.measured("AL", 0.002, "test", samples=(0.002,))
    record = Record("t.py::t", "cpu", metrics={"AL": al})
    assert record["latency"] is al and record["AL"] is al
    assert "latency" in record and "throughput" not in record
    with pytest.raises(KeyError, match="no metric 'throughput' in the record of t.py::t; it has: AL"):
        record["throughput"]
