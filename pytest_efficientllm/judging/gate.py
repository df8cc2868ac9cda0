"""What the gate decides for one test: budgets, the baseline comparison, strictness and mode.

Pure: a record, its limits, its baseline (or why there is none) and the run's
`GateOptions` in, `Verdict`s out. The pytest hooks only fetch the inputs and apply the
result to the test report; `compare` holds the comparison rules themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_efficientllm.core.limits import Limit
from pytest_efficientllm.core.metrics import make
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.compare import MODES, compare_record
from pytest_efficientllm.judging.run_noise import RunPrior
from pytest_efficientllm.judging.verdicts import Verdict, check_budgets, soften


@dataclass(frozen=True)
class GateOptions:
    """The run's gate settings after CLI and ini are merged.

    `ini_limits` are project-wide defaults (a test's marker overrides them);
    `cli_limits` override everything for this run.
    """

    mode: str = "fail"
    strict: bool = False
    update: bool = False
    ini_limits: tuple[Limit, ...] = ()
    cli_limits: tuple[Limit, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"--efficiency-gate={self.mode!r}: expected one of {', '.join(MODES)}")


def effective_limits(
    marker_limits: Iterable[Limit], options: GateOptions, recorded: Iterable[str] | None = None
) -> tuple[Limit, ...]:
    """ini defaults, then the test's marker, then the command line; later ones replace earlier
    ones for the same metric and kind (budget or tolerance).

    With `recorded` (the metric names the test recorded), a run-wide limit on a metric the
    test does not record is dropped: `--efficiency-limit=latency=+10%` concerns the tests
    that measure latency, and is no finding about those that only count bytes. A marker's
    limit stays, so its test hears that the metric was never recorded.
    """
    names = set(recorded) if recorded is not None else None
    merged: dict[tuple[str, str], Limit] = {}
    for limit in options.ini_limits:
        if names is None or limit.metric in names:
            merged[(limit.metric, limit.kind)] = limit
    for limit in marker_limits:
        merged[(limit.metric, limit.kind)] = limit
    for limit in options.cli_limits:
        if names is None or limit.metric in names:
            merged[(limit.metric, limit.kind)] = limit
    return tuple(merged.values())


def add_derived(record: Record) -> None:
    """Metrics the gate reads that the measuring loop does not record itself.

    `cpu_time_per_round`: the CPU timer records it per round (with raw samples); for a
    timer that does not, it is the window's process CPU time divided by its rounds — one
    value per window, so its tolerance alone decides.
    """
    cpu, rounds = record.metrics.get("cpu_time"), record.metrics.get("rounds")
    if "cpu_time_per_round" in record.metrics or cpu is None or cpu.value is None or not rounds or not rounds.value:
        return
    record.add(make("cpu_time_per_round", cpu.value / rounds.value, cpu.source, f"cpu_time / rounds; {cpu.method}"))


def judge(
    record: Record,
    limits: Iterable[Limit],
    baseline: Record | None,
    baseline_error: str,
    options: GateOptions,
    run_priors: Mapping[str, RunPrior] | None = None,
    processes: int = 1,
) -> list[Verdict]:
    """All verdicts of one test that passed its own assertions.

    * budgets: absolute, from `limits`;
    * baseline: `compare_record` (with the run-to-run spread the baseline's file shares,
      `run_priors`, and `processes`: how many processes must all find a measured
      regression before it fails; 1 under `update` or mode `warn`, where none is put to a
      vote), or `new` when there is none (a failure with `strict`), or an error when the
      baseline file is unreadable;
    * with `update`, findings against the old baseline warn (it is being replaced), except
      an unreadable file, which will not be replaced either;
    * mode `warn` turns every failure into a warning; `off` checks nothing.
    """
    if options.mode == "off":
        return []
    limits = tuple(limits)
    verdicts = check_budgets(record, limits)
    if baseline is not None and baseline.world_size != record.world_size:
        # Another world size is another workload (per-rank memory, global throughput): never
        # compared silently, and not a failure of this run either.
        verdicts.append(
            Verdict(
                "*",
                "warn",
                f"baseline taken at world_size={baseline.world_size}, this run has "
                f"{record.world_size}: not compared; record one with --update-baselines",
                "baseline",
                reason="world_size",
            )
        )
    elif baseline_error:
        verdicts.append(Verdict("*", "error", baseline_error, "store"))
    elif baseline is None:
        if options.strict and not options.update:
            verdicts.append(
                Verdict(
                    "*",
                    "fail",
                    "no baseline for this test and --efficiency-strict is set: record one with --update-baselines",
                    "baseline",
                )
            )
        else:
            verdicts.append(
                Verdict(
                    "*",
                    "new",
                    "no baseline yet"
                    + (": recorded now" if options.update else "; record one with --update-baselines"),
                    "baseline",
                )
            )
    else:
        voting = processes if options.mode == "fail" and not options.update else 1
        compared = compare_record(baseline, record, limits, mode="fail", run_priors=run_priors, processes=voting)
        if options.update:
            compared = [
                dataclasses.replace(
                    v, status="warn", message=v.message + " [baseline being replaced]", softened="baseline_replaced"
                )
                if v.failed
                else v
                for v in compared
            ]
        verdicts.extend(compared)
    return soften(verdicts) if options.mode == "warn" else verdicts
