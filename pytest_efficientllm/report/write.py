"""Write a run as a report, the format chosen by the file's extension (.html, .md, .json)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pytest_efficientllm.report.html import render_html
from pytest_efficientllm.report.inputs import ReportError, check_report_path
from pytest_efficientllm.report.markdown import render_markdown
from pytest_efficientllm.storage.runfile import Run, write_atomic


def render(run: Run, suffix: str) -> str:
    if suffix == ".html":
        return render_html(run)
    if suffix == ".md":
        return render_markdown(run)
    if suffix == ".json":
        # The records themselves, as a run file: `compare`, `merge` and `report` read it back.
        return json.dumps(run.to_dict(), indent=1, sort_keys=True) + "\n"
    raise ReportError(f"no renderer for {suffix!r}")


def write_report(run: Run, path: str | Path) -> Path:
    """Render and write atomically (a reader never sees half a report); returns the path."""
    path = check_report_path(path)
    if not run.records:
        raise ReportError(f"{path}: nothing to report: the run holds no records")
    write_atomic(path, render(run, path.suffix.lower()))
    # write_atomic's temporary file is private (0600); a report is meant to be read and served.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path
