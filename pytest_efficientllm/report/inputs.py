"""Reading runs for the reports and checking where a report goes; errors name the file and the fix."""

from __future__ import annotations

from pathlib import Path

from pytest_efficientllm.storage.runfile import Run, RunFileError, read_run

REPORT_FORMATS: tuple[str, ...] = (".html", ".md", ".json")


class ReportError(ValueError):
    """Input or output a report cannot use; the message says which file and what to do."""


def load_run(path: str | Path, *, allow_empty: bool = False) -> Run:
    """A run file with at least one record (an empty leaderboard is almost always a mistake)."""
    try:
        run = read_run(path)
    except RunFileError as exc:
        raise ReportError(str(exc)) from None
    if not run.records and not allow_empty:
        raise ReportError(
            f"{path}: the run holds no records; did the tests use the `efficiency` fixture, "
            "and did they run (not all skipped or deselected)?"
        )
    return run


def check_report_path(path: str | Path, formats: tuple[str, ...] = REPORT_FORMATS) -> Path:
    """The report path, if its directory exists and its extension names a format we write."""
    path = Path(path)
    if path.suffix.lower() not in formats:
        raise ReportError(
            f"{path}: unknown report format {path.suffix or '(no extension)'!r}; "
            f"name the file with one of {', '.join(formats)}"
        )
    if not path.parent.is_dir():
        raise ReportError(f"{path}: directory {path.parent} does not exist; create it or choose another path")
    if path.is_dir():
        raise ReportError(f"{path}: is a directory; give a file name")
    return path
