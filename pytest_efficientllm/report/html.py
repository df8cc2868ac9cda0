"""The report as one self-contained HTML file: no network, plots embedded as PNG data URIs,
tables sortable by any column with a few lines of inline JavaScript (no libraries).

Each metric cell keeps its raw value in `data-v` (for sorting) and its provenance in
`title` (hover): the method for measured/counted values, the model for estimates (also
marked `~`), the reason for `n/a`.
"""

from __future__ import annotations

import base64
from html import escape

from pytest_efficientllm.report.fingerprints import run_fingerprints
from pytest_efficientllm.report.leaderboard import Cell, Leaderboard, leaderboards
from pytest_efficientllm.report.plots import Plot, tradeoff_plots
from pytest_efficientllm.storage.runfile import Run

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f2f2f2;cursor:pointer;user-select:none}
th[data-dir=asc]::after{content:" \\25B2"} th[data-dir=desc]::after{content:" \\25BC"}
td.text{text-align:left}
td.msg{white-space:normal;min-width:30em}
td.na{color:#999;font-style:italic}
td.est{background:#fff8e1}
td.r1{font-weight:bold}
.rank{color:#777;font-size:85%;margin-left:.3em}
tr.fail td,tr.error td,td.s-fail,td.s-error{background:#fdd;color:#900;font-weight:bold}
tr.warn td,td.s-warn{background:#fff3cd}
tr.improved td,td.s-improved{background:#e3f6e3}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
figcaption{font-size:85%;color:#555}
.skipped-plot{color:#777;font-style:italic}
"""

# Click a header to sort by it; again to reverse. Numeric columns sort by data-v, and
# n/a cells (data-na) stay last either way; text columns sort as text.
_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    var asc = th.dataset.dir !== "asc";
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? "asc" : "desc";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i], y = b.cells[i];
      if (x.dataset.na || y.dataset.na) return (x.dataset.na ? 1 : 0) - (y.dataset.na ? 1 : 0);
      var d = (x.dataset.v !== undefined && y.dataset.v !== undefined)
        ? parseFloat(x.dataset.v) - parseFloat(y.dataset.v)
        : x.textContent.localeCompare(y.textContent);
      return asc ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def td(cell: Cell, text_column: bool = False) -> str:
    classes = []
    attrs = ""
    if text_column:
        classes.append("text")
    if not cell.available:
        classes.append("na")
        attrs += ' data-na="1"'
    if cell.estimated and cell.available:
        classes.append("est")
    if cell.rank == 1:
        classes.append("r1")
    if cell.value is not None:
        attrs += f' data-v="{cell.value!r}"'
    if cell.note:
        attrs += f' title="{escape(cell.note)}"'
    body = escape(cell.text) + ("~" if cell.estimated and cell.available else "")
    if cell.rank is not None:
        body += f'<span class="rank">#{cell.rank}</span>'
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}{attrs}>{body}</td>"


def board_html(board: Leaderboard, anchor: str) -> str:
    head = "".join(f'<th title="{escape(c.description)}">{escape(c.title)}</th>' for c in board.columns)
    rows = []
    for row in board.rows:
        gate = row.cells["gate"].text
        cls = f' class="{gate}"' if gate in ("error", "fail", "warn", "improved") else ""
        cells = "".join(td(row.cells[c.key], text_column=c.direction is None) for c in board.columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    table = f'<table class="sortable board"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    plots = "".join(plot_html(p) for p in tradeoff_plots(board))
    return f'<section id="{anchor}"><h3>{escape(board.title)}</h3>{table}<div class="plots">{plots}</div></section>'


def plot_html(plot: Plot) -> str:
    if plot.png is None:
        return f'<p class="skipped-plot">{escape(plot.title)}: {escape(plot.note)}</p>'
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure><img class="plot" alt="{escape(plot.title)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(plot.title)} — {escape(plot.note)}</figcaption></figure>"
    )


def verdicts_html(run: Run) -> str:
    rows = []
    for record in sorted(run.records, key=lambda r: r.nodeid):
        for v in record.verdicts:
            status = str(v.get("status", ""))
            rows.append(
                f'<tr><td class="text">{escape(record.nodeid)}</td>'
                f'<td class="text">{escape(str(v.get("metric", "")))}</td>'
                f'<td class="text s-{escape(status)}">{escape(status)}</td>'
                f'<td class="text msg">{escape(str(v.get("message", "")))}</td></tr>'
            )
    if not rows:
        return "<p>No verdicts recorded: no test had budgets or a baseline to compare against.</p>"
    return (
        '<table class="sortable verdicts"><thead><tr><th>test</th><th>metric</th><th>status</th><th>message</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def fingerprints_html(run: Run) -> str:
    parts = []
    for label, fp in run_fingerprints(run):
        rows = "".join(
            f'<tr><td class="text">{escape(k)}</td><td class="text">{escape(v)}</td></tr>' for k, v in fp.items()
        )
        parts.append(f'<details><summary>{escape(label)}</summary><table class="fingerprint">{rows}</table></details>')
    return "".join(parts)


def render_html(run: Run) -> str:
    boards = leaderboards(run.records)
    toc = "".join(f'<li><a href="#t{i}">{escape(b.title)}</a></li>' for i, b in enumerate(boards))
    sections = "".join(board_html(b, f"t{i}") for i, b in enumerate(boards))
    profiles = ", ".join(sorted({r.profile for r in run.records})) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Efficiency report</title>
<style>{_CSS}</style></head><body>
<h1>Efficiency report</h1>
<p>{len(run.records)} measured test(s), profile(s): {escape(profiles)}. Cells show the value and its rank
in the column (#1 = best; ↓ lower / ↑ higher is better). Shaded <span style="background:#fff8e1">~</span> =
estimate (never gated); <i>n/a</i> = unavailable; hover a cell for its method or the reason. Click a
column header to sort.</p>
<h2>Leaderboards</h2><ul>{toc}</ul>{sections}
<h2>Comparison against baseline</h2>{verdicts_html(run)}
<h2>Fingerprint</h2>{fingerprints_html(run)}
<script>{_JS}</script>
</body></html>
"""
