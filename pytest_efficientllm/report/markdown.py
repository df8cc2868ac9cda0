"""The report as GitHub-flavoured Markdown, fit for `$GITHUB_STEP_SUMMARY` or a PR comment.

Same leaderboards as the HTML report, without plots; of the verdicts, those that did not pass
(the rest counted). A cell reads `12.3 ms #1`: the value with
its unit and its rank in the column; `~` after the value marks an estimate; `n/a` cells
have their reason in the notes under the table (Markdown has no hover).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pytest_efficientllm.judging.verdicts import QUIET_STATUSES
from pytest_efficientllm.report.fingerprints import run_fingerprints
from pytest_efficientllm.report.leaderboard import Cell, Leaderboard, leaderboards
from pytest_efficientllm.storage.runfile import Run


def escape(text: str) -> str:
    """Table-safe text: a '|' would end the cell, a newline the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def cell_text(cell: Cell) -> str:
    text = cell.text + ("~" if cell.estimated else "")
    if cell.rank is not None:
        text += f" #{cell.rank}"
    if cell.text in ("fail", "error"):
        text = f"**{text}**"
    return escape(text)


def table_lines(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def table_notes(board: Leaderboard) -> list[str]:
    """Why each n/a is n/a and how each estimate was made, grouped so each reason shows once."""
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for row in board.rows:
        technique = row.cells["technique"].text
        for col in board.columns:
            cell = row.cells[col.key]
            if not cell.available and col.key != "gate":
                reasons.setdefault(("n/a", col.key, cell.note), []).append(technique)
            elif cell.estimated:
                reasons.setdefault(("~ estimated", col.key, cell.note), []).append(technique)
    return [f"- {kind} {key} ({', '.join(who)}): {escape(note)}" for (kind, key, note), who in reasons.items()]


def leaderboard_lines(board: Leaderboard) -> list[str]:
    lines = [f"### {escape(board.title)}", ""]
    lines += table_lines(
        [c.title for c in board.columns], ([cell_text(row.cells[c.key]) for c in board.columns] for row in board.rows)
    )
    notes = table_notes(board)
    if notes:
        lines += ["", "<details><summary>notes</summary>", "", *notes, "", "</details>"]
    return lines + [""]


def verdict_lines(run: Run) -> list[str]:
    rows, quiet = [], Counter[str]()
    for record in sorted(run.records, key=lambda r: r.nodeid):
        for v in record.verdicts:
            status = str(v.get("status", ""))
            if status in QUIET_STATUSES:  # counted: the HTML report and the run file list them
                quiet[status] += 1
                continue
            shown = f"**{status}**" if status in ("fail", "error") else status
            rows.append(
                [escape(record.nodeid), escape(str(v.get("metric", ""))), shown, escape(str(v.get("message", "")))]
            )
    total = len(rows) + sum(quiet.values())
    if not total:
        return ["No verdicts recorded: no test had budgets or a baseline to compare against.", ""]
    failed = sum(1 for r in rows if r[2].startswith("**"))
    unlisted = " and ".join(f"{n} {s}" for s, n in quiet.items())
    lines = [
        f"{failed} failing verdict(s) of {total}"
        + (f"; {unlisted} not listed (the HTML report lists them)." if unlisted else ".")
    ]
    if rows:
        lines += ["", *table_lines(["test", "metric", "status", "message"], rows)]
    return [*lines, ""]


def fingerprint_lines(run: Run) -> list[str]:
    lines = []
    for label, fp in run_fingerprints(run):
        lines += [
            f"<details><summary>{escape(label)}</summary>",
            "",
            *table_lines(["key", "value"], ([escape(k), escape(v)] for k, v in fp.items())),
            "",
            "</details>",
            "",
        ]
    return lines


def render_markdown(run: Run) -> str:
    boards = leaderboards(run.records)
    profiles = sorted({r.profile for r in run.records})
    lines = [
        "# Efficiency report",
        "",
        f"{len(run.records)} measured test(s), profile(s): {', '.join(profiles) or 'none'}. "
        "Cells: value #rank in its column (1 = best; ↓ lower / ↑ higher is better); "
        "`~` = estimate (never gated); `n/a` reasons in the notes.",
        "",
    ]
    lines += ["## Leaderboards", ""]
    for board in boards:
        lines += leaderboard_lines(board)
    lines += ["## Comparison against baseline", "", *verdict_lines(run)]
    lines += ["## Fingerprint", "", *fingerprint_lines(run)]
    return "\n".join(lines).rstrip() + "\n"
