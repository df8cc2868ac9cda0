"""Stored baselines: `baselines/<profile>/<test file path>.json`, one entry per node id.

    {"format": "pytest-efficientllm-baselines", "schema": 1, "profile": "cpu",
     "tests": {"suites/test_quant.py::test_decode[int4]": {
         "created": "...", "fingerprint": {...}, "settings": {...}, "world_size": 1, "ranks": [],
         "metrics": {"AL": {"value": 0.0123, "unit": "s", "direction": "lower", "source": "measured",
                            "method": "...", "note": "", "samples": [...],
                            "stats": {"n": 5, "median": ..., "mad": ..., "iqr": ..., "min": ..., "max": ...}}}}}}

Human-diffable: sorted keys, one test per entry, and floats written at a stable precision
(`MEASURED_DIGITS` significant digits for measured and estimated values, whose noise is far
larger; counted values exact). `stats` is derived from `samples` for readers of the file
and is dropped when it is read back into a `Record`.

Writes go through `update`: under a file lock in `<baselines dir>/.locks/` (so two
processes updating one file at once lose nothing), read the current file, replace the
entries of the tests that ran, keep the others, and write atomically (temporary file +
rename). A file that cannot be read — corrupt, truncated, written by a newer schema,
a wrongly typed field, another profile's file — is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from filelock import FileLock, Timeout

from pytest_efficientllm.core.record import (
    DIRECTIONS,
    SCHEMA_VERSION,
    SOURCES,
    Metric,
    Record,
    SchemaError,
)
from pytest_efficientllm.judging.fingerprint import fingerprint_diff
from pytest_efficientllm.judging.run_noise import RunPrior, pool, predict, run_medians
from pytest_efficientllm.judging.stats import summarize
from pytest_efficientllm.storage.runfile import write_atomic

FORMAT = "pytest-efficientllm-baselines"
STORE_SCHEMA = 1
MEASURED_DIGITS = 6
LOCK_TIMEOUT_S = 120.0
# Runs whose medians a baseline keeps per measured metric (the newest is its own samples).
HISTORY_RUNS = 10
# Fields of a record that describe one run, not the baseline: left out of the stored entry.
_RUN_ONLY = ("nodeid", "outcome", "worker", "rank", "schema", "verdicts", "confirmations")


class BaselineError(RuntimeError):
    """A baseline file that cannot be read or written; the message names the file and what to fix."""


def baseline_relpath(nodeid: str) -> PurePosixPath:
    """The baseline file of a test, relative to `<baselines dir>/<profile>/`: its file path + `.json`.

    Only the file part of the node id is used, so parameters containing '/' stay inside
    the entry key. A file outside the rootdir ('../x/test_a.py') maps to '_up_/x/...'.
    """
    file_part = nodeid.split("::", 1)[0]
    parts = [
        ("_up_" if p == ".." else p) for p in PurePosixPath(file_part.replace("\\", "/")).parts if p not in ("/", ".")
    ]
    if not parts:
        raise BaselineError(f"node id {nodeid!r} has no file part to derive its baseline file from")
    return PurePosixPath(*parts[:-1], parts[-1] + ".json")


def _stable(value: float | None, exact: bool) -> float | None:
    if value is None or exact:
        return value
    return float(f"{value:.{MEASURED_DIGITS}g}")


def _metric_entry(metric: Metric) -> dict[str, Any]:
    exact = metric.source == "counted"
    out = metric.to_dict()
    out["value"] = _stable(metric.value, exact)
    out["samples"] = [_stable(x, exact) for x in metric.samples]
    if metric.samples:
        s = summarize(metric.samples)
        out["stats"] = {
            "n": s.n,
            "median": _stable(s.median, exact),
            "mad": _stable(s.mad, exact),
            "iqr": _stable(s.iqr, exact),
            "min": _stable(s.minimum, exact),
            "max": _stable(s.maximum, exact),
        }
    return out


def entry_of(record: Record) -> dict[str, Any]:
    """The stored form of one test's record."""
    data = record.to_dict()
    for key in _RUN_ONLY:
        data.pop(key, None)
    data["metrics"] = {name: _metric_entry(m) for name, m in sorted(record.metrics.items())}
    return data


def carry_history(old: Record, new: dict[str, Any], priors: Mapping[str, RunPrior]) -> list[str]:
    """Keep the medians of the earlier runs of each measured metric in the new entry.

    A baseline recorded over several runs tells the gate how far a run's median moves
    between processes, which the rounds of one run cannot show (`run_noise`). A new run
    *faster* than the earlier runs' prediction bound is a change of the code or the
    machine, since noise only slows runs down: the history restarts with it, or the
    earlier runs' centre would keep the old speed (a deliberate 20% speed-up, recorded
    once, would not move it). A run slower than the bound may be a slow spell: it joins
    the history, where the faster half of the runs outvotes it. Returns one line per
    metric beyond its bound, saying which of the two happened. (Under other software the
    caller carries nothing: `software_change`.)
    """
    notes = []
    for name, metric in new.get("metrics", {}).items():
        before = old.metrics.get(name)
        samples = [x for x in metric.get("samples", []) if x > 0]
        if metric.get("source") != "measured" or not samples or before is None:
            continue
        earlier = run_medians(before)
        if not earlier:
            continue
        median = summarize(samples).median
        direction = metric.get("direction", "lower")
        prediction = predict(earlier, priors.get(name), metric.get("unit", ""), direction)
        kept = [_stable(m, False) for m in earlier[-(HISTORY_RUNS - 1) :]]
        if prediction is None or prediction.low <= median <= prediction.high:
            metric["history"] = kept
            continue
        faster = (median < prediction.low) == (direction != "higher")
        where = (
            f"{old.nodeid} {name}: {median / prediction.centre - 1:+.1%}, beyond "
            f"{prediction.describe('higher' if (median < prediction.low) else 'lower')}"
        )
        if faster:
            notes.append(f"{where}: faster than noise makes a run, so the run history restarts here")
        else:
            metric["history"] = kept
            notes.append(
                f"{where}: kept with the earlier runs, whose faster half outvotes a slow spell; "
                "if the code is meant to be slower, delete this entry and record it again"
            )
    return notes


def software_change(old: Record, new: dict[str, Any]) -> str:
    """How the new entry's software differs from the old one's ("torch 2.13.0 -> 2.14.0"), or "".

    Runs under other software (a package version, another Python, another thread count:
    `FingerprintDiff.software`) timed another program, so the new entry carries none of the old
    one's run history, whatever its median: a 3% slower upgrade would otherwise join the old
    runs, whose faster half would keep the old speed as the centre.
    """
    return ", ".join(fingerprint_diff(old.fingerprint, new.get("fingerprint", {})).software)


# The fields of a stored metric by the type a comparison reads them as (`stats` is derived, not read).
_METRIC_REQUIRED = ("name", "value", "unit", "direction", "source", "method")
_METRIC_TEXT = ("name", "unit", "method", "note")
_METRIC_NUMBER_LISTS = ("samples", "history")
_METRIC_CHOICES = {"direction": DIRECTIONS, "source": SOURCES}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: object, limit: int = 60) -> str:
    """A value as it reads in the file, cut short: a message quotes it, it does not reprint it."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _field_problem(metric: dict[str, Any]) -> str:
    """What is wrong with one stored metric's fields, or ''."""
    for name in _METRIC_REQUIRED:
        if name not in metric:
            return f'has no "{name}"'
    if metric["value"] is not None and not _is_number(metric["value"]):
        return f'"value" must be a number or null, got {_shown(metric["value"])}'
    for name in _METRIC_TEXT:
        if name in metric and not isinstance(metric[name], str):
            return f'"{name}" must be a string, got {_shown(metric[name])}'
    for name, allowed in _METRIC_CHOICES.items():
        if metric[name] not in allowed:
            return f'"{name}" must be one of {", ".join(allowed)}, got {_shown(metric[name])}'
    for name in _METRIC_NUMBER_LISTS:
        values = metric.get(name, [])
        if not isinstance(values, list):
            return f'"{name}" must be a list of numbers, got {_shown(values)}'
        for i, value in enumerate(values):
            if not _is_number(value):
                return f'"{name}" must be a list of numbers, but item {i} is {_shown(value)}'
    return ""


def check_metrics(metrics: object) -> None:
    """SchemaError naming the metric and the field when a stored metric's field has the wrong type.

    Checked when a file is read, because a hand edit ("value": "1 kB") would otherwise
    surface deep inside a comparison as a bare ValueError naming neither file nor test,
    and crash `--update-baselines` the same way, so the file could not be re-recorded.
    """
    if not isinstance(metrics, dict):
        raise SchemaError(f'"metrics" must be a JSON object of name -> metric, got {_shown(metrics)}')
    for name, metric in metrics.items():
        if not isinstance(metric, dict):
            raise SchemaError(f"metric {name!r} must be a JSON object, got {_shown(metric)}")
        problem = _field_problem(metric)
        if problem:
            raise SchemaError(f"metric {name!r}: {problem}")


def record_of(nodeid: str, entry: dict[str, Any]) -> Record:
    """A stored entry back as a `Record` (derived `stats` dropped); SchemaError naming what is wrong."""
    if not isinstance(entry, dict):
        raise SchemaError(f"entry must be a JSON object, got {type(entry).__name__}")
    data = dict(entry)
    metrics = data.get("metrics", {})
    check_metrics(metrics)
    ranks = data.get("ranks", [])
    for i, rank in enumerate(ranks if isinstance(ranks, list) else []):
        if isinstance(rank, dict):
            try:
                check_metrics(rank.get("metrics", {}))
            except SchemaError as exc:
                raise SchemaError(f"rank {i}: {exc}") from None
    data["metrics"] = {k: {f: v for f, v in m.items() if f != "stats"} for k, m in metrics.items()}
    data.update(nodeid=nodeid, schema=SCHEMA_VERSION, outcome="passed")
    return Record.from_dict(data)


def render(profile: str, entries: dict[str, dict[str, Any]]) -> str:
    doc = {"format": FORMAT, "schema": STORE_SCHEMA, "profile": profile, "tests": entries}
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def parse(path: Path, text: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The profile and raw entries of a baseline file's text; BaselineError naming file and position."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"{path}: corrupt baseline file: not valid JSON at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos}): {exc.msg}; fix or delete it (nothing was overwritten)"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BaselineError(
            f'{path}: not a pytest-efficientllm baseline file (no "format": "{FORMAT}"); move it away or delete it'
        )
    schema = doc.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise BaselineError(f'{path}: baseline file has no integer "schema" field')
    if schema > STORE_SCHEMA:
        raise BaselineError(
            f"{path}: written by a newer pytest-efficientllm (baseline schema {schema}; this version "
            f"reads up to {STORE_SCHEMA}): upgrade the plugin; the file was not overwritten"
        )
    tests = doc.get("tests")
    if not isinstance(tests, dict):
        raise BaselineError(f'{path}: "tests" must be a JSON object of node id -> entry')
    return str(doc.get("profile", "")), tests


def read_entries(path: Path, profile: str | None = None) -> dict[str, Record]:
    """Every entry of one baseline file as records; {} when the file does not exist.

    With `profile` (the folder's), a file labelled with another profile is a BaselineError.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise BaselineError(f"{path}: corrupt baseline file: not UTF-8 at byte {exc.start}") from None
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read baseline file ({exc.strerror or exc})") from None
    found, tests = parse(path, text)
    return _records_of(path, _profile_of(path, found, profile), tests)


def _profile_of(path: Path, found: str, expected: str | None) -> str:
    """The profile a file's entries must have: its own, which must be its folder's (`expected`).

    A file copied from another profile's folder holds another machine's numbers: it is
    refused as a whole, before anything is compared with it, or an update would relabel
    it with this profile and keep the other machine's entries in it.
    """
    if expected is not None and found and found != expected:
        raise BaselineError(
            f"{path}: a baseline file of profile {found!r} in the folder of profile {expected!r} "
            f"(copied from another machine's baselines?): move it to the {found!r} baselines or "
            "delete it (nothing was overwritten)"
        )
    return found or expected or ""


def _records_of(path: Path, profile: str, tests: dict[str, dict[str, Any]]) -> dict[str, Record]:
    """A parsed baseline file's entries as records; BaselineError naming the file and the entry."""
    out = {}
    for nodeid, entry in tests.items():
        try:
            record = record_of(nodeid, entry)
        except SchemaError as exc:
            raise BaselineError(
                f"{path}: entry {nodeid!r}: {exc}; fix it, or delete the entry and record it again "
                "with --update-baselines (nothing was overwritten)"
            ) from None
        if profile and record.profile != profile:
            raise BaselineError(f"{path}: entry {nodeid!r} has profile {record.profile!r} in a {profile!r} file")
        out[nodeid] = record
    return out


@dataclass
class FileUpdate:
    """What `update` did to one baseline file."""

    path: Path
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: int = 0
    error: str = ""
    # Metrics whose new run lay beyond their earlier runs' bound, and what became of their history.
    history_notes: list[str] = field(default_factory=list)
    # Tests whose run history restarted under other software, by the change ("torch 2.13.0 -> 2.14.0").
    restarted: dict[str, list[str]] = field(default_factory=dict)
    # How many runs each written test's timings now hold (tests that time something).
    runs: dict[str, int] = field(default_factory=dict)
    # Tests not written because the entry found under the lock was not the writer's (`update`'s `replaces`).
    declined: list[str] = field(default_factory=list)


LOCK_FOLDER = ".locks"
_LOCK_FOLDER_IGNORE = "# Created by pytest-efficientllm: the locks of baseline updates, never committed.\n*\n"


def _lock_for(root: Path, path: Path) -> FileLock:
    """The lock of one baseline file: `<baselines dir>/.locks/`, keyed by the file's path under the dir.

    Beside the baselines rather than in the temp directory, so that every process writing
    this folder takes the same lock whatever its TMPDIR (tox gives each environment its
    own, and so do containers and other users) and however it spells the folder's path.
    The lock folder ignores itself (a `.gitignore` of `*`, as pytest does for
    `.pytest_cache`), so only baselines show up to commit.
    """
    folder = root / LOCK_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        ignore = folder / ".gitignore"
        if not ignore.exists():
            write_atomic(ignore, _LOCK_FOLDER_IGNORE)  # atomic: a writer racing us never leaves it empty
    except OSError as exc:
        raise BaselineError(
            f"{folder}: cannot create the baseline lock folder ({exc.strerror or exc}); every "
            f"update of {root} locks its files there: make it writable; nothing was written"
        ) from None
    key = hashlib.sha256(path.relative_to(root).as_posix().encode()).hexdigest()[:24]
    return FileLock(str(folder / f"{key}.lock"), timeout=LOCK_TIMEOUT_S)


@contextmanager
def _locked(root: Path, path: Path) -> Iterator[None]:
    """Hold the lock of one baseline file; BaselineError when it cannot be taken."""
    lock = _lock_for(root, path)
    try:
        lock.acquire()
    except Timeout:  # a TimeoutError, hence an OSError: caught first
        raise BaselineError(
            f"{path}: another process held the baseline lock {lock.lock_file} for {LOCK_TIMEOUT_S:.0f} s; not written"
        ) from None
    except OSError as exc:
        raise BaselineError(
            f"{lock.lock_file}: cannot take the baseline lock ({exc.strerror or exc}); the lock "
            f"folder {root / LOCK_FOLDER} must be writable by everyone who updates these baselines: "
            "make it writable, or delete it if another user owns it (it is recreated); "
            "nothing was written"
        ) from None
    try:
        yield
    finally:
        try:
            lock.release()
        except OSError:
            pass  # the lock ends when its descriptor closes; the write is done and a stale lock file is harmless


def _count_runs(result: FileUpdate, nodeid: str, entry: dict[str, Any]) -> None:
    """Note how many runs the entry's timings hold: its measured metrics' earlier runs and this one."""
    timed = [m for m in entry.get("metrics", {}).values() if m.get("source") == "measured" and m.get("samples")]
    if timed:
        result.runs[nodeid] = 1 + max(len(m.get("history", [])) for m in timed)


def _identity(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without what changes on every run although nothing measured did."""
    out = {k: v for k, v in entry.items() if k != "created"}
    if isinstance(out.get("fingerprint"), dict):
        out["fingerprint"] = {k: v for k, v in out["fingerprint"].items() if k != "calibration"}
    return out


class BaselineStore:
    """The baselines of one profile under one directory; reads cached per file.

    `folder_name`: the folder under `root` that holds them, the profile's name unless given
    (the `cpu` profile keeps another CPU's baselines beside its own: `cpu_folders`).
    """

    def __init__(self, root: str | Path, profile: str, folder_name: str | None = None) -> None:
        self.root = Path(root)
        self.profile = profile
        self.folder_name = folder_name or profile
        self._cache: dict[Path, dict[str, Record] | BaselineError] = {}
        self._priors: dict[Path, dict[str, RunPrior]] = {}
        self._folder_priors: dict[str, RunPrior] | None = None

    @property
    def folder(self) -> Path:
        return self.root / self.folder_name

    def path_for(self, nodeid: str) -> Path:
        return self.folder / baseline_relpath(nodeid)

    def _entries(self, path: Path) -> dict[str, Record]:
        cached = self._cache.get(path)
        if cached is None:
            try:
                cached = read_entries(path, self.profile)
            except BaselineError as exc:
                cached = exc
            self._cache[path] = cached
        if isinstance(cached, BaselineError):
            raise cached
        return cached

    def lookup(self, nodeid: str) -> Record | None:
        """The stored baseline of a test, or None; BaselineError when its file is unreadable."""
        return self._entries(self.path_for(nodeid)).get(nodeid)

    def run_priors(self, nodeid: str) -> dict[str, RunPrior]:
        """The run-to-run spread per metric that the tests of this test's file share (`run_noise.pool`),
        or, for a metric too few of the file's tests have, the spread the profile's files share."""
        path = self.path_for(nodeid)
        if path not in self._priors:
            self._priors[path] = self._with_folder(self._entries(path).values())
        return self._priors[path]

    def _with_folder(self, records: Iterable[Record]) -> dict[str, RunPrior]:
        # A project of one or two tests per file had no shared spread at all: a test's three
        # baseline runs alone put its 99.9% bound at +300% and more. The machine's drift is
        # what the tests of every file share, so the whole folder stands in where the file
        # cannot; the file's own, where it has one, says more about its tests.
        records = list(records)
        own = pool(records)
        measured = {n for r in records for n, m in r.metrics.items() if m.source == "measured"}
        if measured <= own.keys():
            return own
        if self._folder_priors is None:
            folder: list[Record] = []
            for path in sorted(self.folder.rglob("*.json")) if self.folder.is_dir() else []:
                try:
                    folder += self._entries(path).values()
                except BaselineError:
                    continue  # reported for the tests of that file, not for everyone's
            shared = "the tests of every baseline file of the profile"
            self._folder_priors = {n: replace(p, scope=shared) for n, p in pool(folder).items()}
        return {**self._folder_priors, **own}

    def update(self, records: Iterable[Record], replaces: Callable[[Record], bool] | None = None) -> list[FileUpdate]:
        """Write the given records' entries; other entries of each file are kept.

        Per file: lock, re-read (another process may have written since), merge, write
        atomically. A file that cannot be read or written is reported in its
        `FileUpdate.error` and left as it was; the other files are still written.
        `replaces(stored)` says whether a test's stored entry, as read under the lock, may be
        replaced: a record whose entry may not is left out and listed in `FileUpdate.declined`.
        """
        by_path: dict[Path, list[Record]] = {}
        for record in records:
            by_path.setdefault(self.path_for(record.nodeid), []).append(record)
        results = []
        for path in sorted(by_path):
            result = FileUpdate(path)
            try:
                self._update_file(path, by_path[path], result, replaces)
            except BaselineError as exc:
                result.error = str(exc)
            self._cache.pop(path, None)
            self._priors.clear()  # every file's may have taken the folder's, which this file is part of
            self._folder_priors = None
            results.append(result)
        return results

    def _update_file(
        self, path: Path, records: list[Record], result: FileUpdate, replaces: Callable[[Record], bool] | None
    ) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BaselineError(
                f"{path.parent}: cannot create the baselines folder ({exc.strerror or exc}); nothing was written"
            ) from None
        with _locked(self.root, path):
            entries: dict[str, Any]
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                found, entries = self.profile, {}
            except (OSError, UnicodeDecodeError) as exc:
                raise BaselineError(f"{path}: cannot read baseline file ({exc}); not overwritten") from None
            else:
                found, entries = parse(path, text)
            # Validates every entry (and the file's profile) before anything is replaced.
            stored = _records_of(path, _profile_of(path, found, self.profile), entries)
            if replaces is not None:
                result.declined = sorted(
                    r.nodeid for r in records if r.nodeid in stored and not replaces(stored[r.nodeid])
                )
                records = [r for r in records if r.nodeid not in result.declined]
                if not records:
                    return
            priors = self._with_folder(stored.values())
            for record in sorted(records, key=lambda r: r.nodeid):
                new = json.loads(json.dumps(entry_of(record)))  # normalised as it will be written
                old = entries.get(record.nodeid)
                if old is not None:
                    changed = software_change(stored[record.nodeid], new)
                    timed = any(m.get("source") == "measured" for m in new.get("metrics", {}).values())
                    if changed and timed:
                        result.restarted.setdefault(changed, []).append(record.nodeid)
                    else:
                        result.history_notes += carry_history(stored[record.nodeid], new, priors)
                if old is None:
                    result.added.append(record.nodeid)
                elif _identity(old) == _identity(new):
                    # Same numbers: keep the old entry byte for byte, so a re-record of
                    # unchanged counted facts leaves no diff.
                    result.unchanged.append(record.nodeid)
                    _count_runs(result, record.nodeid, old)
                    continue
                else:
                    result.updated.append(record.nodeid)
                entries[record.nodeid] = new
                _count_runs(result, record.nodeid, new)
            result.kept = len(entries) - len(records)
            try:
                write_atomic(path, render(self.profile, entries))
            except OSError as exc:
                raise BaselineError(
                    f"{path}: cannot write baseline file ({exc.strerror or exc}); "
                    "is the baselines folder read-only? nothing was changed"
                ) from None
