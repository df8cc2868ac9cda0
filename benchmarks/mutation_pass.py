"""Does a module's test suite notice when its logic changes? One small mutation at a time.

    python benchmarks/mutation_pass.py pytest_efficientllm/judging/evaluate.py --tests tests/judging
    python benchmarks/mutation_pass.py pytest_efficientllm/judging/gate.py --tests tests/glue \\
        --lines 138 --pytest-arg=-n --pytest-arg=2

Each mutant changes one operator of the module: a comparison turned into its neighbour
(`<` and `<=`, `>` and `>=`, `==` and `!=`, `in` and `not in`, `is` and `is not`), `and` and `or`
swapped, or a `not` dropped. The tests run against it (`-x`, so the first failure ends the
run); a mutant that no test fails **survived**. A survivor is a place to look, not a verdict:
some are equivalent to the original (`x <= 0` against `x < 0` where 0 gives the same result
either way), most are a rule no test pins down.

The mutant is written over the module in place, and the original is written back when the
pass ends, however it ends: run it in a worktree of its own (`git worktree add`), not beside edits.
Hypothesis keeps the failing examples it finds in `.hypothesis/`, a mutant's too: one that also
fails the unchanged module (a real fault) makes every later mutant read as killed. The pass checks
the unchanged module only before it starts; where a run reads as killed throughout, run the tests
on the unchanged module.
Standard library only; the tests run under this interpreter.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NEIGHBOUR: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Site:
    kind: str  # "compare", "boolean" or "not"
    line: int
    col: int


def sites(tree: ast.AST) -> list[Site]:
    """Every place one mutation applies, in source order."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _NEIGHBOUR:
            found.append(Site("compare", node.lineno, node.col_offset))
        elif isinstance(node, ast.BoolOp):
            found.append(Site("boolean", node.lineno, node.col_offset))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Site("not", node.lineno, node.col_offset))
    return sorted(found, key=lambda s: (s.line, s.col, s.kind))


class _Mutate(ast.NodeTransformer):
    def __init__(self, site: Site) -> None:
        self.site = site
        self.done = False

    def _here(self, node: ast.AST) -> bool:
        return not self.done and (node.lineno, node.col_offset) == (self.site.line, self.site.col)  # type: ignore[attr-defined]

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if self.site.kind == "compare" and self._here(node):
            node.ops = [_NEIGHBOUR[type(node.ops[0])]()]
            self.done = True
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        if self.site.kind == "boolean" and self._here(node):
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.done = True
        return self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if self.site.kind == "not" and self._here(node):
            self.done = True
            return self.generic_visit(node.operand)
        return self.generic_visit(node)


def mutant(source: str, site: Site) -> str:
    tree = ast.parse(source)
    mutate = _Mutate(site)
    tree = mutate.visit(tree)
    if not mutate.done:
        raise ValueError(f"no {site.kind} at line {site.line}, column {site.col}")
    return ast.unparse(ast.fix_missing_locations(tree))


def killed(tests: list[str], pytest_args: list[str], timeout: float) -> bool:
    command = [sys.executable, "-m", "pytest", *tests, "-q", "-x", "-p", "no:cacheprovider", *pytest_args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout, env=env).returncode != 0
    except subprocess.TimeoutExpired:
        return True  # a mutant that hangs the tests is noticed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", help="the module to mutate, relative to the repository")
    p.add_argument("--tests", action="append", required=True, help="a test path to run (repeatable)")
    p.add_argument("--lines", default="", help="only the sites on these lines (comma-separated)")
    p.add_argument("--pytest-arg", action="append", default=[], help="one more argument for pytest (repeatable)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    args = p.parse_args(argv)
    path = ROOT / args.module
    original = path.read_text()
    lines = {int(x) for x in args.lines.split(",") if x}
    todo = [s for s in sites(ast.parse(original)) if not lines or s.line in lines]
    if killed(args.tests, args.pytest_arg, args.timeout):
        print("the tests fail on the unchanged module: nothing to learn from mutants", file=sys.stderr)
        return 2
    survivors = []
    started = time.monotonic()
    try:
        for site in todo:
            path.write_text(mutant(original, site))  # each mutant is made from the original
            caught = killed(args.tests, args.pytest_arg, args.timeout)
            code = original.splitlines()[site.line - 1].strip()
            print(f"{'killed  ' if caught else 'SURVIVED'} {site.kind:8} line {site.line:4}: {code[:100]}", flush=True)
            if not caught:
                survivors.append(site)
    finally:
        path.write_text(original)
    print(
        f"{args.module}: {len(survivors)} of {len(todo)} mutants survived "
        f"({', '.join(args.tests)}; {time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
