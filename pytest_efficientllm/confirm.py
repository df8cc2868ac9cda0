"""Confirmation in fresh processes: a measured regression must show in more than one process.

On a shared machine a whole process can run 5-13% slow for seconds: every round of it,
and often several of its tests (benchmarks/RESULTS.md, "Gate noise"). Within that process
nothing tells such a host episode from a 10% regression: its rounds agree with each other,
a window taken a second later shares its fate, a reference workload and the start-of-run
calibration read normal. A fresh process is another draw of the host's state. So before
a measured metric fails a test, the test is measured again in fresh pytest processes that
run only it (`--efficiency-confirm=N`, default 2), and the verdict is a majority vote:

* **suspect**: a measured metric the gate could fail (it has a tolerance or budget, or is
  checked by default where that check fails) and that, in this process, failed a budget
  or its baseline comparison, or reads worse than *half* its tolerance. The lower trigger
  lets a regression that this process happened to under-read still be caught by the
  others; the vote keeps it from adding false alarms.
* **vote**: each process's record is judged by the same rule as this one (tolerance,
  rank interval, run-to-run noise, budgets: `gate.judge`); the metric fails when it fails
  in more than half of the 1 + N processes. Sequential: no more processes are started
  once the majority is decided (a regression seen in this process and the first fresh one
  costs one process; host noise usually two).
* a metric that the vote clears keeps this process's finding as a warning that says so;
  a confirmation process that cannot run (crash, timeout, its test failing) leaves the
  verdict as this process found it, with a warning naming why.

Only measured metrics are confirmed: counted ones (bytes, FLOPs) are exact and estimates
never fail. `--update-baselines` and gate modes `warn`/`off` never confirm (nothing fails).
A confirmation process runs with `CONFIRM_ENV` set, so it never confirms in turn.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .compare import DEFAULT_MEASURED_TOLERANCE, WARN_BY_DEFAULT, beyond_tolerance, default_measured, tolerances
from .marker import Limit
from .record import Record
from .runfile import RunFileError, read_run
from .verdicts import Verdict

CONFIRM_ENV = "PYTEST_EFFICIENTLLM_CONFIRMING"
DEFAULT_PROCESSES = 2
# What this process's xdist worker identity would tell a confirmation process it is.
_WORKER_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def gated_tolerance(name: str, limits: Iterable[Limit], profile: str) -> float | None:
    """The relative tolerance under which a failed comparison of `name` fails the test, or None
    when its comparison cannot fail it (not gated, or a default check that only warns)."""
    given = tolerances(limits).get(name)
    if given is not None:
        return given
    if name in default_measured(profile) and profile not in WARN_BY_DEFAULT:
        return DEFAULT_MEASURED_TOLERANCE
    return None


def suspects(record: Record, verdicts: Sequence[Verdict], limits: Sequence[Limit]) -> list[str]:
    """The measured metrics of this process's record that need fresh processes (see module doc)."""
    out = []
    for name, metric in sorted(record.metrics.items()):
        if metric.source != "measured" or metric.value is None:
            continue
        mine = [v for v in verdicts if v.metric == name]
        if any(v.failed for v in mine):
            out.append(name)
            continue
        tol = gated_tolerance(name, limits, record.profile)
        if tol is None:
            continue
        for v in mine:
            if v.kind == "baseline" and v.change is not None and beyond_tolerance(v.change, metric.direction, tol / 2)[0]:
                out.append(name)
                break
    return out


def fails(verdicts: Iterable[Verdict], metric: str) -> bool:
    return any(v.metric == metric and v.failed for v in verdicts)


def _change(verdicts: Iterable[Verdict], metric: str) -> float | None:
    for v in verdicts:
        if v.metric == metric and v.kind == "baseline" and v.change is not None:
            return v.change
    return None


def _changes_text(per_process: list[list[Verdict]], metric: str) -> str:
    parts = []
    for i, verdicts in enumerate(per_process):
        change = _change(verdicts, metric)
        shown = f"{change * 100:+.1f}%" if change is not None else "budget"
        mark = "fails" if fails(verdicts, metric) else "passes"
        parts.append(f"{'this process' if i == 0 else f'fresh {i}'} {shown} {mark}")
    return ", ".join(parts)


def _final(metric: str, per_process: list[list[Verdict]], need: int) -> list[Verdict]:
    """`metric`'s verdicts once the vote is decided, each message naming every process's reading."""
    mine = [v for v in per_process[0] if v.metric == metric]
    seen = f"{len(per_process)} processes: {_changes_text(per_process, metric)}"
    if sum(fails(p, metric) for p in per_process) < need:
        return [dataclasses.replace(v, status="warn", message=f"{v.message}; not confirmed in {seen}: the majority "
                                    "passes, not failing") if v.failed else
                dataclasses.replace(v, message=f"{v.message}; cleared in {seen}") if v.kind == "baseline" else v
                for v in mine]
    # Confirmed. Where this process under-read it, the first process that saw it speaks for it.
    source = mine if any(v.failed for v in mine) else next(
        [v for v in p if v.metric == metric] for p in per_process if fails(p, metric))
    return [dataclasses.replace(v, message=f"{v.message}; confirmed in {seen}") if v.failed else v for v in source]


@dataclass
class Confirmation:
    """What confirming one test produced: its final verdicts, the fresh processes' records."""

    verdicts: list[Verdict]
    records: list[Record] = field(default_factory=list)
    seconds: float = 0.0


def confirm(verdicts: list[Verdict], metrics: Sequence[str], measure_again: Callable[[], Record | str],
            judge_record: Callable[[Record], list[Verdict]], processes: int = DEFAULT_PROCESSES) -> Confirmation:
    """Majority vote over this process and up to `processes` fresh ones for each of `metrics`.

    `measure_again` runs the test in a fresh process and returns its record, or a string
    saying why it could not; `judge_record` gives a record's verdicts by the gate's rule.
    """
    if not metrics or processes < 1:
        return Confirmation(list(verdicts))
    t0 = time.monotonic()
    total = 1 + processes
    need = total // 2 + 1
    per_process: list[list[Verdict]] = [list(verdicts)]
    records: list[Record] = []
    problem = ""

    def decided(metric: str) -> bool:
        votes = [fails(v, metric) for v in per_process]
        return sum(votes) >= need or votes.count(False) >= need

    while len(per_process) < total and not all(decided(m) for m in metrics):
        got = measure_again()
        if isinstance(got, str):
            problem = got
            break
        missing = [m for m in metrics if got.metrics.get(m) is None or got.metrics[m].value is None]
        if missing:
            # A process that did not measure the metric cannot vote that it passes.
            problem = f"the fresh process recorded no {', '.join(missing)}"
            break
        records.append(got)
        per_process.append(judge_record(got))

    final = {m: _final(m, per_process, need) if decided(m) else None for m in metrics}
    out: list[Verdict] = []
    for v in verdicts:  # in their order, each suspect's verdicts replaced where its first one stood
        replaced = final.get(v.metric)
        if replaced is None:
            # Not a suspect, or undecided because a fresh process could not run: as this process found it.
            out.append(v)
        elif not any(v.metric == w.metric for w in out):
            out.extend(replaced)
    if problem:
        out.append(Verdict("*", "warn", f"confirmation in a fresh process failed: {problem}", "baseline"))
    return Confirmation(out, records, time.monotonic() - t0)


@dataclass(frozen=True)
class ChildSettings:
    """How to start a confirmation process: the session's settings a fresh pytest must share."""

    rootdir: Path
    inifile: Path | None
    profile: str
    threads: int
    rounds: int
    warmup: int
    min_time_s: float
    plugins: tuple[str, ...] = ()  # `-p NAME` given to this run
    fixed_layout: bool = False  # this process runs with a fixed layout: so does the child
    xdist: bool = False  # pytest-xdist is installed: the child is told `-n 0`
    timeout_s: float = 600.0


def child_command(nodeid: str, settings: ChildSettings, json_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", nodeid, "-q", "-p", "no:cacheprovider", "--rootdir", str(settings.rootdir)]
    if settings.inifile is not None:
        cmd += ["-c", str(settings.inifile)]
    for plugin in settings.plugins:
        cmd += ["-p", plugin]
    if settings.xdist:
        cmd += ["-n", "0"]  # an `-n` in addopts must not spread one test over workers
    cmd += [f"--gpu={settings.profile}", f"--efficiency-threads={settings.threads}",
            f"--efficiency-rounds={settings.rounds}", f"--efficiency-warmup={settings.warmup}",
            f"--efficiency-min-time={settings.min_time_s!r}s", "--efficiency-gate=off",
            f"--efficiency-json={json_path}"]
    return cmd


def child_env(cmd: list[str], fixed_layout: bool, environ: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a confirmation process: not an xdist worker, marked as
    confirming, and (with a fixed layout) started already fixed, so it need not re-execute."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in _WORKER_ENV}
    env[CONFIRM_ENV] = "1"
    if fixed_layout:
        env = layout.fixed_child_env(cmd, env)
    return env


def measure_in_child(nodeid: str, settings: ChildSettings) -> Record | str:
    """Run one test in a fresh pytest process; its record, or why there is none."""
    with tempfile.TemporaryDirectory(prefix="efficiency-confirm-") as tmp:
        json_path = Path(tmp) / "run.json"
        cmd = child_command(nodeid, settings, json_path)
        try:
            proc = subprocess.run(cmd, cwd=settings.rootdir, env=child_env(cmd, settings.fixed_layout),
                                  capture_output=True, text=True, timeout=settings.timeout_s)
        except subprocess.TimeoutExpired:
            return f"no result within {settings.timeout_s:.0f} s"
        except OSError as exc:
            return f"could not start {sys.executable}: {exc}"
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        if proc.returncode != 0:
            return f"pytest exited {proc.returncode}: " + " | ".join(tail)
        try:
            records = [r for r in read_run(json_path).records if r.nodeid == nodeid]
        except RunFileError as exc:
            return str(exc)
        if not records:
            return "the fresh process measured nothing for this test: " + " | ".join(tail)
        return records[0]
