"""benchmarks/mutation_pass.py makes exactly one change per mutant, and puts the module back."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("mutation_pass", REPO_ROOT / "benchmarks" / "mutation_pass.py")
assert SPEC is not None and SPEC.loader is not None
mutation_pass = importlib.util.module_from_spec(SPEC)
sys.modules["mutation_pass"] = mutation_pass
SPEC.loader.exec_module(mutation_pass)

SOURCE = "def f(a, b, c):\n    return a < b and not c\n"


def test_each_site_gives_one_mutant_that_differs_from_the_original_in_that_operator_alone() -> None:
    sites = mutation_pass.sites(ast.parse(SOURCE))
    assert [s.kind for s in sites] == ["boolean", "compare", "not"]
    mutants = [mutation_pass.mutant(SOURCE, s) for s in sites]
    assert mutants == [
        "def f(a, b, c):\n    return a < b or not c",
        "def f(a, b, c):\n    return a <= b and (not c)",
        "def f(a, b, c):\n    return a < b and c",
    ]
    f = {}
    exec(mutants[1], f)  # the mutant runs, and differs exactly where a == b
    assert f["f"](1, 1, False) is True and f["f"](1, 0, False) is False
    with pytest.raises(ValueError, match="no compare at line 9"):
        mutation_pass.mutant(SOURCE, mutation_pass.Site("compare", 9, 0))


def test_the_module_is_written_back_and_survivors_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = tmp_path / "m.py"
    module.write_text(SOURCE)
    monkeypatch.setattr(mutation_pass, "ROOT", tmp_path)
    # The test runs, as a test double: the unchanged module passes; the mutants are caught, survive, caught.
    outcomes = iter([False, True, False, True])
    seen = []

    def killed(tests: list[str], pytest_args: list[str], timeout: float) -> bool:
        seen.append(module.read_text())
        return next(outcomes)

    monkeypatch.setattr(mutation_pass, "killed", killed)
    assert mutation_pass.main(["m.py", "--tests", "t"]) == 0
    assert module.read_text() == SOURCE
    assert seen[0] == SOURCE and len(set(seen[1:])) == 3 and SOURCE not in seen[1:]
    out = capsys.readouterr().out
    assert "SURVIVED compare  line    2: return a < b and not c" in out
    assert "m.py: 1 of 3 mutants survived (t; " in out
