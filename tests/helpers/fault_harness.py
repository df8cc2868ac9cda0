"""Helpers for the fault-injection tests: a pytester conftest that writes out what the plugin recorded.

Not a test double: the plugin runs for real; this only reads the records it kept, so a
test can say "the failed test's measurement was discarded" by its absence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

RECORDS_FILE = "recorded.json"

# A conftest for pytester projects: at session end, the records the plugin kept, by node id.
RECORDS_CONFTEST = f"""
import json
from pytest_efficientllm.glue.state import RUN_KEY

def pytest_sessionfinish(session):
    state = session.config.stash.get(RUN_KEY, None)
    records = [] if state is None else [r.to_dict() for r in state.records]
    with open({RECORDS_FILE!r}, "w") as fh:
        json.dump(records, fh)
"""


def recorded(pytester: pytest.Pytester) -> dict[str, dict[str, Any]]:
    """The records the plugin kept in the last pytester run, by test name."""
    data = json.loads(Path(pytester.path, RECORDS_FILE).read_text())
    return {r["nodeid"].split("::")[-1]: r for r in data}


def metric_value(record: dict[str, Any], name: str) -> float | None:
    return record["metrics"][name]["value"]
