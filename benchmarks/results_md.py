"""benchmarks/RESULTS.md is shared by every benchmark script: each rewrites only its own `## ` section."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# Later runs told by hand (their own commands and dates) follow this line inside a section; a
# script's `--write` keeps them under its new text, where it used to drop them with the old.
KEPT = "<!-- written by hand below: kept when the script rewrites this section -->"


def replace_section(title: str, text: str, path: Path = RESULTS) -> None:
    """Put `text` (which starts with the `title` line) in place of the section under `title`, or append it.

    What follows a `KEPT` line in the old section stays, after the new text. The file is re-read
    just before writing (other scripts write theirs) and replaced atomically.
    """
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    body = text.rstrip("\n") + "\n"
    start = ("\n" + old).find("\n" + title + "\n")  # the title as a whole line, at this index of `old`
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        nxt = old.find("\n## ", start + len(title))
        section = old[start : nxt + 1 if nxt >= 0 else len(old)]
        kept = section.find("\n" + KEPT + "\n")
        if kept >= 0:
            body += "\n" + section[kept + 1 :].rstrip("\n") + "\n"
        new = old[:start] + body + ("\n" + old[nxt + 1 :] if nxt >= 0 else "")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
