"""benchmarks/results_md.py: a script's `--write` rewrites its own RESULTS.md section only, and keeps
what was added to it by hand below the `KEPT` line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.helpers import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("results_md", REPO_ROOT / "benchmarks" / "results_md.py")
assert SPEC and SPEC.loader
results_md = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(results_md)

BEFORE = f"""# Benchmark results

## Mine

old table

{results_md.KEPT}

**And 20 more runs** (by hand): 1 failed.

## Theirs

their table
"""


def test_a_rewrite_keeps_what_was_added_by_hand_and_the_other_sections(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(BEFORE)
    results_md.replace_section("## Mine", "## Mine\n\nnew table\n", path)
    assert path.read_text() == (
        f"# Benchmark results\n\n## Mine\n\nnew table\n\n{results_md.KEPT}\n\n**And 20 more runs** (by hand): 1 failed."
        "\n\n## Theirs\n\ntheir table\n"
    )
    # Rewritten again: still there, once.
    results_md.replace_section("## Mine", "## Mine\n\nnewer table\n", path)
    assert path.read_text().count("**And 20 more runs**") == 1 and "newer table" in path.read_text()


def test_without_the_line_the_section_is_replaced_whole_and_a_new_one_appended(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Mine\n\nold\n\n## Theirs\n\ntheirs\n")
    results_md.replace_section("## Mine", "## Mine\n\nnew\n", path)
    results_md.replace_section("## Last", "## Last\n\nlast\n", path)
    assert path.read_text() == "# Benchmark results\n\n## Mine\n\nnew\n\n## Theirs\n\ntheirs\n\n## Last\n\nlast\n"
