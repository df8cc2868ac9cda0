"""Confirmation in fresh processes, apart in time: a measured regression must show in every one.

On a shared machine a whole process can run 5-100% slow for seconds: every round of it,
and often several of its tests (benchmarks/RESULTS.md, "Gate noise"). Within that process
nothing tells such a slow spell from a regression: its rounds agree with each other, a
window taken a second later shares its fate, a reference workload and the start-of-run
calibration read normal. A fresh process is another draw of the host's state, but only
when it is not started inside the same spell: fresh processes started right after the
suspect one read +90.8% after +12.8%, +64.7% after +80.3% (RESULTS.md, "Baselines of
several runs"). So before a measured metric fails a test, the test is measured again in
N fresh pytest processes that run only it (`--efficiency-confirm=N`, default 2), each
started at least `--efficiency-confirm-spacing` (default 20 s) after the test's previous
measurement, and the metric fails only when **every one** of the 1 + N processes finds
the regression:

* **suspect**: a measured metric that failed in this process (a budget or its baseline
  comparison), but for a budget broken 3 times over (`verdicts.FAR_OVER_BUDGET`), which no
  slow spell explains;
* **vote**: each fresh process's record is judged by the same rule as this one (tolerance,
  rank interval, run-to-run noise at the level for 1 + N processes, budgets:
  `gate.judge`). The first process that passes clears the metric and no more are
  started: its failure becomes a warning naming every process's reading. Host noise
  usually costs one fresh process, a regression N.
* **the wait**: the test's reports are held while the spacing passes and the run goes on
  with the next tests (`confirm_queue`); what is still held when the last test ends is
  confirmed then, sleeping out what is left of its spacing.
* a confirmation process that cannot run (crash, timeout, its test failing) leaves the
  verdict as this process found it, with a warning naming why.

Why every process and not a majority, and why apart: over whole processes ~20 s apart
the unanimous vote cut an A/A forward pass's false alarms from 14% (majority) to 3% and
a matmul's to 0/128, and still caught 91% of +10% matmul regressions (RESULTS.md).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.core.units import format_change
from pytest_efficientllm.judging.verdicts import Reason, Verdict
from pytest_efficientllm.measuring import process_layout as layout
from pytest_efficientllm.storage.runfile import RunFileError, read_run

CONFIRM_ENV = "PYTEST_EFFICIENTLLM_CONFIRMING"
DEFAULT_PROCESSES = 2
DEFAULT_SPACING_S = 20.0
# What this process's xdist worker identity would tell a confirmation process it is.
_WORKER_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")


def fails(verdicts: Iterable[Verdict], metric: str) -> bool:
    return any(v.metric == metric and v.failed for v in verdicts)


def _change(verdicts: Iterable[Verdict], metric: str) -> float | None:
    for v in verdicts:
        if v.metric == metric and v.kind == "baseline" and v.change is not None:
            return v.change
    return None


# Why a process's reading beyond the tolerance passes, where its verdict says (`Verdict.reason`): a
# vote cleared by "fresh 1 +75.0% passes" under a +10% tolerance read as a broken rule.
_PASSES_BECAUSE: dict[str, str] = {
    "within_noise": " (within the noise)",
    "within_resolution": " (within the energy counter's resolution)",
}


def _changes_text(per_process: list[list[Verdict]], metric: str) -> str:
    parts = []
    for i, verdicts in enumerate(per_process):
        change = _change(verdicts, metric)
        shown = format_change(change) if change is not None else "budget"
        if fails(verdicts, metric):
            mark = "fails"
        else:
            why = next(
                (_PASSES_BECAUSE[v.reason] for v in verdicts if v.metric == metric and v.reason in _PASSES_BECAUSE), ""
            )
            mark = "passes" + why
        parts.append(f"{'this process' if i == 0 else f'fresh {i}'} {shown} {mark}")
    return ", ".join(parts)


@dataclass
class Vote:
    """The unanimous vote on one test's suspect metrics, one fresh process at a time.

    `verdicts`: this process's; `metrics`: the suspects (`judging.evaluate.suspects`); `processes`: fresh
    processes at most. `add` each fresh process's record (or why there is none) until
    `done`; then `final_verdicts`, with the fresh processes' `records` and the `seconds`
    they took (the queue adds those).
    """

    verdicts: list[Verdict]
    metrics: list[str]
    processes: int = DEFAULT_PROCESSES
    records: list[Record] = field(default_factory=list)
    problem: str = ""
    stopped: bool = False  # the run stopped before the vote was done (`problem` says how)
    seconds: float = 0.0
    per_process: list[list[Verdict]] = field(init=False)

    def __post_init__(self) -> None:
        self.per_process = [list(self.verdicts)]

    def readings(self, metric: str) -> list[float]:
        """Each voting process's change of `metric` against the baseline, this process's first."""
        return [c for p in self.per_process if (c := _change(p, metric)) is not None]

    def cleared(self, metric: str) -> bool:
        return not all(fails(p, metric) for p in self.per_process)

    def decided(self, metric: str) -> bool:
        return self.cleared(metric) or len(self.per_process) >= 1 + self.processes

    @property
    def done(self) -> bool:
        return bool(self.problem) or all(self.decided(m) for m in self.metrics)

    def add(self, got: Record | str, judge_record: Callable[[Record], list[Verdict]]) -> None:
        """One fresh process's record (judged by `judge_record`), or the reason it has none."""
        if isinstance(got, str):
            self.problem = f"a fresh process failed: {got}"
            return
        missing = [m for m in self.metrics if got.metrics.get(m) is None or got.metrics[m].value is None]
        if missing:
            # A process that did not measure the metric cannot vote that it passes.
            self.problem = f"a fresh process recorded no {', '.join(missing)}"
            return
        self.records.append(got)
        self.per_process.append(judge_record(got))

    def _final(self, metric: str) -> list[Verdict]:
        """`metric`'s verdicts once decided, each changed one naming every process's reading."""
        mine = [v for v in self.per_process[0] if v.metric == metric]
        seen = f"{len(self.per_process)} processes: {_changes_text(self.per_process, metric)}"
        if self.cleared(metric):
            return [
                dataclasses.replace(
                    v,
                    status="warn",
                    message=f"{v.message}; not confirmed in {seen}: a process passes, not failing",
                    softened="vote_cleared",
                )
                if v.failed
                else v
                for v in mine
            ]
        return [
            dataclasses.replace(v, message=f"{v.message}; confirmed in {seen}", confirmed="fresh_processes")
            if v.failed
            else v
            for v in mine
        ]

    def _with_readings(self, verdict: Verdict) -> Verdict:
        if verdict.metric not in self.metrics or verdict.kind != "baseline" or verdict.change is None:
            return verdict
        return dataclasses.replace(verdict, readings=tuple(self.readings(verdict.metric)))

    def final_verdicts(self) -> list[Verdict]:
        """This process's verdicts with each decided suspect's replaced by the vote's, and each
        suspect's comparison carrying the processes' `readings` (decided or not)."""
        voted = len(self.per_process) > 1
        final = {m: self._final(m) if voted and self.decided(m) else None for m in self.metrics}
        out: list[Verdict] = []
        for v in self.verdicts:  # in their order, each suspect's verdicts replaced where its first one stood
            replaced = final.get(v.metric)
            if replaced is None:
                # Not a suspect, or undecided because a fresh process could not run: as this process found it.
                out.append(self._with_readings(v))
            elif not any(v.metric == w.metric for w in out):
                out.extend(self._with_readings(w) for w in replaced)
        if self.problem:
            reason: Reason = "vote_stopped" if self.stopped else "vote_failed"
            out.append(Verdict("*", "warn", f"not confirmed: {self.problem}", "baseline", reason=reason))
        return out


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
    cmd += [
        f"--gpu={settings.profile}",
        f"--efficiency-threads={settings.threads}",
        f"--efficiency-rounds={settings.rounds}",
        f"--efficiency-warmup={settings.warmup}",
        f"--efficiency-min-time={settings.min_time_s!r}s",
        "--efficiency-gate=off",
        f"--efficiency-json={json_path}",
    ]
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
            proc = subprocess.run(
                cmd,
                cwd=settings.rootdir,
                env=child_env(cmd, settings.fixed_layout),
                capture_output=True,
                text=True,
                timeout=settings.timeout_s,
            )
        except subprocess.TimeoutExpired:
            return f"no result within {settings.timeout_s:.0f} s"
        except OSError as exc:
            return f"could not start {sys.executable}: {exc}"
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        if proc.returncode != 0:
            return f"pytest exited {proc.returncode}: " + " | ".join(tail)
        try:
            records = [r for r in read_run(json_path).records if r.nodeid == nodeid] if json_path.exists() else []
        except RunFileError as exc:
            return str(exc)
        if not records:  # with none at all, the process wrote no run file
            return "the fresh process measured nothing for this test: " + " | ".join(tail)
        return records[0]
