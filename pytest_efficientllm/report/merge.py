"""Merge run files from several machines or CI shards into one, losing nothing.

Rules, each stated in the message it produces:

* **Hardware** — records from different hardware (a different profile, or the same profile
  on a different device model) would be ranked against each other in one leaderboard, which
  compares machines rather than techniques. Refused unless `allow_mixed_profiles`; when
  allowed, reports still rank each hardware in its own table.
* **Software** — the same hardware with different package versions is merged with a
  warning naming the differing keys; each record keeps its own fingerprint.
* **Duplicate node ids** (same test, same profile, in two inputs) — identical records are
  kept once (the same file merged twice). Different ones are refused unless
  `allow_duplicates`, which keeps every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.fingerprint import CPU_KEYS, IGNORED_KEYS
from pytest_efficientllm.report.inputs import ReportError
from pytest_efficientllm.storage.runfile import Run

# Fingerprint keys that describe hardware (as opposed to software or settings). Keys named
# after the device or GPU, and the CPU as the gate names it (its model and its extensions: an
# "AMD EPYC" with AVX-512 and one without are two machines), identify what a number was measured on.
_HARDWARE_EXACT = (*CPU_KEYS, "machine", "cpu_count")
_HARDWARE_PREFIXES = ("device", "gpu", "cuda_device", "sm_", "mig")


class MergeError(ReportError):
    """Inputs that cannot be merged as asked; the message says why and which option allows it."""


@dataclass
class Merged:
    run: Run
    warnings: list[str] = field(default_factory=list)


def is_hardware_key(key: str) -> bool:
    return key in _HARDWARE_EXACT or key.startswith(_HARDWARE_PREFIXES)


def _compared(record: Record) -> dict[str, Any]:
    """The fingerprint but its fields that are no difference between runs at all (`IGNORED_KEYS`:
    the calibration's readings, which GPU of a model, the idle power and state of the moment at
    start-up). Two shards always differ there: read as hardware, two H100 runs were refused as two
    machines; read as software, a warning for each buried the one about a package version."""
    return {k: v for k, v in record.fingerprint.items() if k not in IGNORED_KEYS}


def hardware_identity(record: Record) -> tuple[tuple[str, str], ...]:
    fp = _compared(record)
    return (("profile", record.profile),) + tuple(sorted((k, str(v)) for k, v in fp.items() if is_hardware_key(k)))


def software_identity(record: Record) -> dict[str, str]:
    """The fingerprint's fields that are not hardware, flattened with '.'."""
    fp = _compared(record)
    out = {k: str(v) for k, v in fp.items() if not is_hardware_key(k) and not isinstance(v, dict)}
    for k, v in fp.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": str(vv) for kk, vv in v.items()})
    return out


def _describe(identity: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in identity)


def _check_hardware(sources: list[tuple[str, Record]], allow: bool) -> list[str]:
    seen: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for label, record in sources:
        files = seen.setdefault(hardware_identity(record), [])
        if label not in files:
            files.append(label)
    if len(seen) <= 1:
        return []
    lines = [f"  {_describe(ident)}: from {', '.join(files)}" for ident, files in seen.items()]
    if not allow:
        raise MergeError(
            "refusing to merge records from different hardware into one leaderboard "
            "(ranks would compare machines, not techniques):\n"
            + "\n".join(lines)
            + "\npass --allow-mixed-profiles to keep them all; reports then rank each hardware separately"
        )
    return [
        "merged records from different hardware (--allow-mixed-profiles); ranked per hardware:\n" + "\n".join(lines)
    ]


def _software_warnings(sources: list[tuple[str, Record]]) -> list[str]:
    by_key: dict[str, dict[str, list[str]]] = {}
    for label, record in sources:
        for key, value in software_identity(record).items():
            files = by_key.setdefault(key, {}).setdefault(value, [])
            if label not in files:
                files.append(label)
    out = []
    for key, values in sorted(by_key.items()):
        if len(values) > 1:
            shown = "; ".join(f"{v!r} in {', '.join(files)}" for v, files in values.items())
            out.append(f"fingerprint key {key} differs: {shown} (each record keeps its own fingerprint)")
    return out


def _runs_from_records(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Session entries for an input that lists none: one per distinct fingerprint its records carry."""
    out: list[dict[str, Any]] = []
    for record in records:
        entry = {"profile": record.profile, "fingerprint": record.fingerprint}
        if entry not in out:
            out.append(entry)
    return out


def merge_runs(
    inputs: Sequence[tuple[str, Run]], *, allow_mixed_profiles: bool = False, allow_duplicates: bool = False
) -> Merged:
    """Merge `(label, run)` pairs (label: the file name, used in messages and in `runs`)."""
    sources = [(label, record) for label, run in inputs for record in run.records]
    warnings = [f"{label}: holds no records" for label, run in inputs if not run.records]
    if not sources:
        raise MergeError("nothing to merge: " + ", ".join(label for label, _ in inputs) + " hold no records")
    warnings += _check_hardware(sources, allow_mixed_profiles)
    warnings += _software_warnings(sources)

    kept: list[Record] = []
    by_key: dict[tuple[str, str], list[tuple[str, Record]]] = {}
    for label, record in sources:
        same = by_key.setdefault((record.nodeid, record.profile), [])
        if any(other.to_dict() == record.to_dict() for _, other in same):
            warnings.append(
                f"{record.nodeid} [{record.profile}] in {label}: identical to a record already merged; kept once"
            )
            continue
        same.append((label, record))
        kept.append(record)
    clashes = {key: entries for key, entries in by_key.items() if len(entries) > 1}
    if clashes:
        lines = [
            f"  {nodeid} [{profile}]: in {', '.join(label for label, _ in entries)}"
            for (nodeid, profile), entries in sorted(clashes.items())
        ]
        if not allow_duplicates:
            raise MergeError(
                "the same test appears with different results in more than one input:\n"
                + "\n".join(lines)
                + "\nmerge shards that ran disjoint tests, or pass "
                "--allow-duplicates to keep every result (reports then show each as its own row)"
            )
        warnings.append(
            "kept every result of tests that appear more than once (--allow-duplicates):\n" + "\n".join(lines)
        )

    runs: list[dict[str, Any]] = []
    for label, run in inputs:
        entries = run.runs or _runs_from_records(run.records)
        for entry in entries:
            runs.append({**entry, "label": entry.get("label") or label, "merged_from": label})
    return Merged(Run(records=kept, runs=runs), warnings)
