"""Leave-one-out A/A over suite runs of unchanged code: each run judged against baselines built from the others.

    python benchmarks/cross_aa.py DIR [--limit energy_per_token=+5%] [--out cross-aa.md]
    python benchmarks/cross_aa.py RUN1.json RUN2.json RUN3.json [...] [--differ python]

DIR is a GPU check's files (`suites-*.json` in the order its `phases.json` ran them) or any folder of
run files (`--efficiency-json`), taken in name order. One GPU check measures the suites four times
(three recorded, one A/A): judging each run against the baselines the other three make gives four
A/As for the device time of one. The baselines are built as `--update-baselines` builds them (the
runs in the order they ran, with the history rules of the store) in a temporary folder.

Unchanged code, so every regression is a false alarm. Offline there are no fresh processes to vote,
so each check is judged twice by the plugin's own decision (`judging.evaluate`):
- **alone**: the rule of `--efficiency-confirm=0`, one process at the 99.9% run-to-run bound;
- **suspect**: the first process of the default vote (1 + 2 processes, each at its 90% bound). A
  suspect is re-measured in two fresh processes and fails only if both find it too, so the suspects
  bound the default gate's false alarms from above.

`--differ KEY` judges each held-out run as if its fingerprint differed from the baselines' in KEY
(`python`, `packages.torch`, `cpu_model`, ...): what the fingerprint rule makes of unchanged code
under a difference that changed nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from gpu_check_report import suite_run_files  # noqa: E402

from pytest_efficientllm.core.limits import Limit, parse_limit_assignments  # noqa: E402
from pytest_efficientllm.core.record import Record  # noqa: E402
from pytest_efficientllm.judging.evaluate import BaselineView, evaluate  # noqa: E402
from pytest_efficientllm.judging.gate import GateOptions  # noqa: E402
from pytest_efficientllm.storage.baselines import BaselineStore  # noqa: E402
from pytest_efficientllm.storage.runfile import read_run  # noqa: E402

# The default vote's fresh processes (`--efficiency-confirm`'s default).
CONFIRM = 2
# Rows of the table: the default measured checks of the GPU and CPU profiles, and energy per token.
SHOWN = ("AL", "TTFT", "TPOT", "energy_per_token", "cpu_time_per_round")


@dataclass
class Tally:
    """Per metric: checks against a baseline, failures alone, suspects of the vote, improvements."""

    checks: Counter = field(default_factory=Counter)
    alone: Counter = field(default_factory=Counter)
    suspect: Counter = field(default_factory=Counter)
    improved: Counter = field(default_factory=Counter)
    warned: Counter = field(default_factory=Counter)
    sources: dict[str, set[str]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for mine, theirs in (
            (self.checks, other.checks),
            (self.alone, other.alone),
            (self.suspect, other.suspect),
            (self.improved, other.improved),
            (self.warned, other.warned),
        ):
            mine.update(theirs)
        for metric, sources in other.sources.items():
            self.sources.setdefault(metric, set()).update(sources)
        self.examples += other.examples


def run_files(paths: Sequence[Path]) -> list[Path]:
    """The run files in the order they ran: a GPU check's phase order, else as given (a folder: by name)."""
    if len(paths) != 1 or not paths[0].is_dir():
        return list(paths)
    folder = paths[0]
    phases = folder / "phases.json"
    if phases.exists():
        return suite_run_files(folder, json.loads(phases.read_text())["phases"])
    return sorted(folder.glob("*.json"))


def baselines_from(runs: Sequence[list[Record]], root: Path, profile: str) -> BaselineStore:
    """A store in `root` written as `--update-baselines` would after each of `runs` in turn."""
    store = BaselineStore(root, profile)
    for records in runs:
        store.update(r for r in records if r.outcome == "passed")
    return store


def judge_run(records: Sequence[Record], store: BaselineStore, limits: Sequence[Limit]) -> Tally:
    """Every record of one run against `store`, alone and as the first process of the default vote."""
    tally = Tally()
    options = GateOptions(cli_limits=tuple(limits))
    for record in records:
        if record.outcome != "passed":
            continue
        baseline = BaselineView(store.lookup(record.nodeid), store.run_priors(record.nodeid))
        if baseline.record is None:
            continue
        alone = evaluate(record, (), baseline, options, confirm_processes=0)
        first = evaluate(record, (), baseline, options, confirm_processes=CONFIRM)
        for v in alone.verdicts:
            if v.kind != "baseline" or v.metric == "*":
                continue
            tally.checks[v.metric] += 1
            if v.metric in record.metrics:
                tally.sources.setdefault(v.metric, set()).add(record.metrics[v.metric].source)
            if v.failed:
                tally.alone[v.metric] += 1
                tally.examples.append(f"{record.nodeid} {v.message}")
            elif v.status == "improved":
                tally.improved[v.metric] += 1
            elif v.status == "warn":
                tally.warned[v.metric] += 1
        for name in first.suspects:
            tally.suspect[name] += 1
    return tally


def differing(record: Record, key: str) -> Record:
    """`record` with its fingerprint's `key` (dotted for a nested one) set to a value no baseline has."""
    fingerprint = json.loads(json.dumps(record.fingerprint))
    *path, last = key.split(".")
    holder = fingerprint
    for part in path:
        holder = holder.setdefault(part, {})
    holder[last] = f"{holder.get(last)} (differs)"
    return replace(record, fingerprint=fingerprint)


def cross_aa(
    files: Sequence[Path], limits: Sequence[Limit], differ: str | None = None
) -> tuple[list[tuple[str, Tally]], Tally]:
    """Each run held out in turn and judged against the baselines of the others, in the order they ran
    (its fingerprint's `differ` key made to differ from theirs where given)."""
    runs = [(f.stem, read_run(f).records) for f in files]
    profiles = {r.profile for _, records in runs for r in records}
    if len(profiles) != 1:
        raise SystemExit(f"the runs must share one profile; found {sorted(profiles) or 'no records'}")
    profile = profiles.pop()
    per_run, total = [], Tally()
    for i, (name, records) in enumerate(runs):
        others = [rec for j, (_, rec) in enumerate(runs) if j != i]
        held_out = [differing(r, differ) for r in records] if differ else records
        with tempfile.TemporaryDirectory() as tmp:
            tally = judge_run(held_out, baselines_from(others, Path(tmp), profile), limits)
        per_run.append((name, tally))
        total.add(tally)
    return per_run, total


def _rate(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else str(part)


def table(
    files: Sequence[Path],
    limits: Sequence[Limit],
    per_run: list[tuple[str, Tally]],
    total: Tally,
    differ: str | None = None,
) -> str:
    shown = [m for m in SHOWN if total.checks[m]]
    lines = [
        f"Leave-one-out A/A (`benchmarks/cross_aa.py`): each of the {len(files)} runs judged against the baselines "
        f"the other {len(files) - 1} make, recorded in the order they ran; limits beyond the defaults: "
        f"{', '.join(f'`{lim.metric}={lim.text}`' for lim in limits) or 'none'}. Unchanged code, so every failure "
        "is a false alarm. *Alone*: the verdict with `--efficiency-confirm=0` (99.9% run-to-run bound). "
        f"*Suspect*: the first process of the default vote (90% bound); it fails only if {CONFIRM} fresh "
        "processes confirm it, so suspects bound the default's false alarms from above."
        + (f" Each held-out run's fingerprint made to differ from its baselines' in `{differ}`." if differ else ""),
        "",
        "| metric | source | checks | failed alone | suspects of the vote | warned alone | improved |",
        "|---|---|---|---|---|---|---|",
    ]
    for metric in [*shown, "all gated"]:
        counters = (total.checks, total.alone, total.suspect, total.warned, total.improved)
        if metric == "all gated":
            n, a, s, w, imp = (sum(c.values()) for c in counters)
            source = "all"
        else:
            n, a, s, w, imp = (c[metric] for c in counters)
            source = ", ".join(sorted(total.sources.get(metric, ())))
            if source == "estimated":
                source += " (never fails)"
        lines.append(f"| {metric} | {source} | {n} | {_rate(a, n)} | {_rate(s, n)} | {w} | {imp} |")
    lines += [
        "",
        "Per held-out run (checks / failed alone / suspects): "
        + "; ".join(
            f"{name} {sum(t.checks.values())} / {sum(t.alone.values())} / {sum(t.suspect.values())}"
            for name, t in per_run
        )
        + ".",
    ]
    if total.examples:
        lines += ["", "Failed alone: " + "; ".join(total.examples[:8]) + (" …" if len(total.examples) > 8 else "")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run files, or one folder of them")
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="METRIC=LIMIT",
        help="a run-wide limit as --efficiency-limit takes it (repeatable), e.g. energy_per_token=+5%%",
    )
    parser.add_argument("--differ", metavar="KEY", help="make each held-out run's fingerprint differ in KEY")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        limits = parse_limit_assignments(args.limit, "--limit")
    except ValueError as exc:
        parser.error(str(exc))
    files = run_files(args.paths)
    if len(files) < 2:
        parser.error(f"need two or more run files; found {len(files)} in {', '.join(map(str, args.paths))}")
    per_run, total = cross_aa(files, limits, args.differ)
    text = table(files, limits, per_run, total, args.differ)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
