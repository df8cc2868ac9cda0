"""A failing test's text: a first line that names what failed, then each finding in full."""

from __future__ import annotations

from pytest_efficientllm.glue.outcome import failure_text, headline
from pytest_efficientllm.judging.verdicts import Verdict

BUDGET = Verdict("AL", "fail", "61.2 ms (budget <= 50 ms, measured): over budget", "budget")
COUNTED = Verdict(
    "bytes_accessed", "fail", "43.82 MiB vs baseline 23.66 MiB (+85.2%; counted, exact): regression", "baseline", 0.852
)
STORE = Verdict("*", "error", "baselines/cpu/t.json: corrupt baseline file: not valid JSON", "store")
THROTTLED = Verdict("energy_per_token", "fail", "window throttled (power cap)", "gpu_state")


def test_the_headline_names_each_failure_with_its_change_or_budget() -> None:
    assert headline([BUDGET, COUNTED]) == (
        "efficiency: AL 61.2 ms (budget <= 50 ms, measured): over budget, bytes_accessed +85.2%"
    )


def test_a_finding_without_a_change_is_shown_whole() -> None:
    assert headline([STORE]) == "efficiency: baselines/cpu/t.json: corrupt baseline file: not valid JSON"
    assert headline([THROTTLED]) == "efficiency: energy_per_token: window throttled (power cap)"


def test_the_failure_text_leads_with_the_headline_then_budgets_then_the_gate() -> None:
    lines = failure_text([COUNTED, BUDGET]).splitlines()
    assert lines[0] == headline([COUNTED, BUDGET])
    assert lines[1:] == [
        "efficiency budget exceeded:",
        "  AL: " + BUDGET.message,
        "efficiency gate (against the baseline):",
        "  bytes_accessed: " + COUNTED.message,
    ]


def test_a_finding_whole_in_the_headline_is_not_said_again() -> None:
    assert failure_text([STORE]) == headline([STORE])
    assert failure_text([COUNTED, THROTTLED]).splitlines()[1:] == [
        "efficiency gate (against the baseline):",
        "  bytes_accessed: " + COUNTED.message,
    ]
