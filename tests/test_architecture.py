"""The package's shape: every module imports on its own, and imports go one way only.

Layers, lowest first (a module may import its own layer and the ones below, never one above):
core < telemetry < measuring < judging < storage < confirmation < glue, with report/,
distributed/, ab/, every `hooks` module (the pytest hooks of glue/, confirmation/, report/ and
distributed/), cli, plugin, `__main__` and the package's `__init__` on top.

The import graph is read with `ast` from the source, not from a running interpreter: every
import statement counts, at any nesting level (inside a function, a class, an `if
TYPE_CHECKING:`), absolute or relative, so a deferred import cannot hide a cycle or a layer
crossing. `from pkg import mod` is an import of `pkg.mod` when `mod` is a submodule; the
string forms (`importlib.import_module("...")`, `pytest_plugins = [...]`) count too. The
implicit import of a parent package's `__init__` does not: every module has one.

Strict on purpose: no allow-list. A failure names each offending import with its line.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO_ROOT

PACKAGE = "pytest_efficientllm"
PACKAGE_DIR = REPO_ROOT / PACKAGE
LAYERS = ("core", "telemetry", "measuring", "judging", "storage", "confirmation", "glue")
TOP = "top"  # report/, distributed/, the hooks modules, cli, plugin, __main__, the package __init__
RANK = {**{layer: i for i, layer in enumerate(LAYERS)}, TOP: len(LAYERS)}


# -- reading the package ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    imported: str  # dotted module (or package) name, resolved
    line: int
    where: str  # "module level", "in function f", "under TYPE_CHECKING", ...
    statement: str  # the source line, stripped

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line}, {self.where}: {self.statement})"


def module_files(package_dir: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's `__init__.py` under the package's name."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def package_names(package_dir: Path) -> set[str]:
    """Every package, namespace packages (folders without `__init__.py`) included."""
    return {
        ".".join(d.relative_to(package_dir.parent).parts)
        for d in [package_dir, *package_dir.rglob("*")]
        if d.is_dir() and d.name != "__pycache__"
    }


def from_source(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a `from X import ...` statement in `module` reads X as, relative forms resolved."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str], root: str, lines: list[str]) -> None:
        self.module, self.is_package, self.known, self.root, self.lines = module, is_package, known, root, lines
        self.context: list[str] = []
        self.found: list[Import] = []

    # -- context ----------------------------------------------------------------------------------------------

    def _nested(self, label: str, node: ast.AST) -> None:
        self.context.append(label)
        self.generic_visit(node)
        self.context.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._nested(f"in function {node.name}", node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._nested(f"in function {node.name}", node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._nested(f"in class {node.name}", node)

    def visit_If(self, node: ast.If) -> None:
        test = ast.unparse(node.test)
        if "TYPE_CHECKING" in test:
            self.context.append("under TYPE_CHECKING")
            for child in node.body:
                self.visit(child)
            self.context.pop()
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    # -- imports ----------------------------------------------------------------------------------------------

    def _ours(self, name: str) -> bool:
        return name == self.root or name.startswith(self.root + ".")

    def _add(self, imported: str, node: ast.AST) -> None:
        line = node.lineno  # type: ignore[attr-defined]
        where = self.context[-1] if self.context else "module level"
        self.found.append(Import(self.module, imported, line, where, self.lines[line - 1].strip()))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if self._ours(alias.name):
                self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = from_source(node, self.module, self.is_package)
        if not self._ours(base):
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.known else base, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = ast.unparse(node.func)
        if func in ("importlib.import_module", "import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and self._ours(arg.value):
                self._add(arg.value, node)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        if "pytest_plugins" in names and isinstance(node.value, (ast.List, ast.Tuple)):
            for element in node.value.elts:
                if isinstance(element, ast.Constant) and isinstance(element.value, str) and self._ours(element.value):
                    self._add(element.value, element)
        self.generic_visit(node)


def read_imports(package_dir: Path) -> list[Import]:
    """Every import of the package's own modules by the package's modules, resolved to module names."""
    root = package_dir.name
    modules = module_files(package_dir)
    known = set(modules) | package_names(package_dir)
    found: list[Import] = []
    for name, path in modules.items():
        source = path.read_text(encoding="utf-8")
        visitor = _ImportVisitor(name, path.name == "__init__.py", known, root, source.splitlines())
        visitor.visit(ast.parse(source, filename=str(path)))
        found.extend(visitor.found)
    return list(dict.fromkeys(found))  # `from m import a, b` is one import of m


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[-1] == "hooks":
        return TOP  # pytest hooks sit above every layer, the glue's own included: they only wire
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else TOP


def layer_violations(imports: list[Import]) -> list[Import]:
    return [i for i in imports if RANK[layer_of(i.imported)] > RANK[layer_of(i.importer)]]


@dataclass(frozen=True)
class Cycle:
    members: list[str]  # a strongly connected component of the graph, sorted
    example: list[Import]  # one shortest cycle through its first member
    inside: list[Import]  # every import between two members: each lies on some cycle

    def __str__(self) -> str:
        return (
            "  "
            + " -> ".join([self.example[0].importer, *(i.imported for i in self.example)])
            + "\n  imports between these modules (each lies on a cycle):\n"
            + "\n".join(f"    {i}" for i in self.inside)
        )


def cycles(imports: list[Import]) -> list[Cycle]:
    """Each strongly connected component of the graph (Tarjan) with more than one module, or a self-import."""
    edges: dict[str, dict[str, Import]] = {}
    for i in imports:
        edges.setdefault(i.importer, {}).setdefault(i.imported, i)  # the first import of a pair stands for it
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:  # recursion depth is bounded by the module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, {}):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, {}):
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)

    found = []
    for component in sorted(components):
        members, start = set(component), component[0]
        # The shortest way from `start` back to itself inside the component (breadth first).
        previous: dict[str, str] = {}
        frontier, seen = [start], {start}
        while start not in previous:
            following = []
            for node in frontier:
                for succ in sorted(edges.get(node, {})):
                    if succ == start:
                        previous.setdefault(start, node)
                    elif succ in members and succ not in seen:
                        seen.add(succ)
                        previous[succ] = node
                        following.append(succ)
            frontier = following
        path, node = [], start
        while True:
            before = previous[node]
            path.append(edges[before][node])
            node = before
            if node == start:
                break
        inside = sorted(
            (i for i in imports if i.importer in members and i.imported in members),
            key=lambda i: (i.importer, i.line, i.imported),
        )
        found.append(Cycle(component, path[::-1], inside))
    return found


# -- the package's own checks -----------------------------------------------------------------------------


def _read() -> list[Import]:
    modules = module_files(PACKAGE_DIR)
    assert {layer_of(m) for m in modules} == set(LAYERS) | {TOP}, "a layer folder has no module: wrong package path?"
    return read_imports(PACKAGE_DIR)


# Imports one module in this fresh interpreter, then the package names its deferred
# (function-level) `from X import Y` statements ask for, which importing alone does not run.
_IMPORT_ONE = """
import importlib, json, sys, traceback
name, deferred = sys.argv[1], json.loads(sys.argv[2])
try:
    module = importlib.import_module(name)
except BaseException:
    print(json.dumps({"error": traceback.format_exc(limit=-3)}))
    raise SystemExit(0)
missing = []
for line, source, names in deferred:
    try:
        target = importlib.import_module(source)
        for n in names:
            if not hasattr(target, n):
                importlib.import_module(f"{source}.{n}")  # a submodule not imported by its package
    except BaseException as exc:
        missing.append(f"line {line}: from {source} import {', '.join(names)}: {type(exc).__name__}: {exc}")
print(json.dumps({"file": module.__file__, "missing": missing}))
"""


def _deferred_from_imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """`from <ours> import names` statements inside functions, absolute or relative, resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out = []

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                yield child, in_function
            yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    for node, in_function in walk(tree, False):
        source = from_source(node, module, is_package)
        if in_function and (source == PACKAGE or source.startswith(PACKAGE + ".")):
            out.append((node.lineno, source, [a.name for a in node.names if a.name != "*"]))
    return out


def import_alone(name: str, path: Path, root: Path, deferred: str | None = None) -> str | None:
    """Import module `name` (file `path`, under folder `root`) in a fresh interpreter; None, or what went wrong.

    `deferred`: `_deferred_from_imports` of the module as JSON, parsed by the caller in the main
    thread (CPython 3.11's `ast.parse` is not safe in several threads at once: "AST constructor
    recursion depth mismatch"); parsed here when not given."""
    if deferred is None:
        deferred = json.dumps(_deferred_from_imports(path, name))
    # `root` first on sys.path, ahead of any installed copy (an editable install may point at another checkout).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ONE, name, deferred],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    last = done.stdout.strip().splitlines()[-1:]
    if done.returncode != 0 or not last:
        return f"exit {done.returncode}: {done.stderr.strip()[-600:]}"
    result = json.loads(last[0])
    if "error" in result:
        return str(result["error"]).strip()
    if Path(result["file"]).resolve() != path.resolve():
        return f"imported {result['file']}, not {path}"
    if result["missing"]:
        return "deferred imports that fail: " + "; ".join(result["missing"])
    return None


def test_every_module_imports_on_its_own_in_a_fresh_interpreter() -> None:
    modules = {m: p for m, p in module_files(PACKAGE_DIR).items() if not m.endswith(".__main__")}  # runs the CLI
    assert len(modules) > 30
    deferred = {name: json.dumps(_deferred_from_imports(path, name)) for name, path in modules.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = pool.map(
            lambda name: (name, import_alone(name, modules[name], REPO_ROOT, deferred[name])), sorted(modules)
        )
        failures = {name: why for name, why in outcomes if why}
    assert not failures, "modules that do not import on their own:\n" + "\n\n".join(
        f"{name}:\n{why}" for name, why in sorted(failures.items())
    )


def test_every_import_of_the_package_names_a_module_that_exists() -> None:
    known = set(module_files(PACKAGE_DIR)) | package_names(PACKAGE_DIR)
    unknown = [str(i) for i in _read() if i.imported not in known]
    assert not unknown, "imports of modules that do not exist:\n" + "\n".join(unknown)


def test_telemetry_imports_only_core_and_telemetry() -> None:
    allowed = (f"{PACKAGE}.core", f"{PACKAGE}.telemetry")
    wrong = [
        str(i)
        for i in _read()
        if layer_of(i.importer) == "telemetry"
        and not any(i.imported == a or i.imported.startswith(a + ".") for a in allowed)
    ]
    assert not wrong, "telemetry imports outside core and telemetry:\n" + "\n".join(wrong)


def test_no_module_imports_a_higher_layer() -> None:
    wrong = [f"[{layer_of(i.importer)} imports {layer_of(i.imported)}] {i}" for i in layer_violations(_read())]
    assert not wrong, "imports from a lower layer into a higher one:\n" + "\n".join(wrong)


def test_the_import_graph_has_no_cycle() -> None:
    found = cycles(_read())
    assert not found, f"{len(found)} group(s) of modules that import each other in a cycle:\n" + "\n\n".join(
        str(c) for c in found
    )


def test_only_the_entry_point_imports_a_hooks_module() -> None:
    # pytest registers each hooks module as a plugin (`plugin.pytest_plugins`) and rewrites its
    # asserts as it imports it; one that another module imported first cannot be rewritten, and
    # every pytest run of the environment, measured or not, then ends "1 warning"
    # (PytestAssertRewriteWarning: Module already imported so cannot be rewritten).
    wrong = [str(i) for i in _read() if i.imported.endswith(".hooks") and i.importer != f"{PACKAGE}.plugin"]
    assert not wrong, "hooks modules imported by other modules than the entry point:\n" + "\n".join(wrong)


# -- the checks check: a small package built to break every rule --------------------------------------------


def test_the_reader_sees_deferred_relative_string_and_from_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "core/a.py": "def f():\n    from ..glue import b  # deferred, relative, a submodule\n",
        "core/c.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pytest_efficientllm.telemetry.t import X\n"
        ),
        "telemetry/t.py": "import pytest_efficientllm.measuring.m\nX = 1\n",
        "measuring/m.py": (
            "class K:\n    def g(self):\n        import importlib\n"
            "        importlib.import_module('pytest_efficientllm.core.c')\n"
        ),
        "glue/__init__.py": "from .b import Y\n",
        "glue/b.py": "from pytest_efficientllm.core import a\nY = 1\n",
        "plugin.py": "pytest_plugins = ['pytest_efficientllm.glue.b']\nfrom .glue import Y  # a name, no submodule\n",
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)

    imports = read_imports(pkg)
    edges = {(i.importer, i.imported, i.line, i.where) for i in imports}
    assert edges == {
        (f"{PACKAGE}.core.a", f"{PACKAGE}.glue.b", 2, "in function f"),
        (f"{PACKAGE}.core.c", f"{PACKAGE}.telemetry.t", 3, "under TYPE_CHECKING"),
        (f"{PACKAGE}.telemetry.t", f"{PACKAGE}.measuring.m", 1, "module level"),
        (f"{PACKAGE}.measuring.m", f"{PACKAGE}.core.c", 4, "in function g"),
        (f"{PACKAGE}.glue", f"{PACKAGE}.glue.b", 1, "module level"),
        (f"{PACKAGE}.glue.b", f"{PACKAGE}.core.a", 1, "module level"),
        (f"{PACKAGE}.plugin", f"{PACKAGE}.glue.b", 1, "module level"),
        (f"{PACKAGE}.plugin", f"{PACKAGE}.glue", 2, "module level"),
    }
    assert {(i.importer, i.imported) for i in layer_violations(imports)} == {
        (f"{PACKAGE}.core.a", f"{PACKAGE}.glue.b"),
        (f"{PACKAGE}.core.c", f"{PACKAGE}.telemetry.t"),
        (f"{PACKAGE}.telemetry.t", f"{PACKAGE}.measuring.m"),
    }
    found = cycles(imports)
    assert [c.members for c in found] == [
        [f"{PACKAGE}.core.a", f"{PACKAGE}.glue.b"],
        [f"{PACKAGE}.core.c", f"{PACKAGE}.measuring.m", f"{PACKAGE}.telemetry.t"],
    ]
    assert [[(i.importer, i.imported) for i in c.example] for c in found] == [
        [(f"{PACKAGE}.core.a", f"{PACKAGE}.glue.b"), (f"{PACKAGE}.glue.b", f"{PACKAGE}.core.a")],
        [
            (f"{PACKAGE}.core.c", f"{PACKAGE}.telemetry.t"),
            (f"{PACKAGE}.telemetry.t", f"{PACKAGE}.measuring.m"),
            (f"{PACKAGE}.measuring.m", f"{PACKAGE}.core.c"),
        ],
    ]
    assert [len(c.inside) for c in found] == [2, 3]
    # And a graph without a cycle has none, a self-import is one.
    assert cycles([i for i in imports if i.importer != f"{PACKAGE}.core.a" and i.importer != f"{PACKAGE}.core.c"]) == []
    self_import = Import(f"{PACKAGE}.core.x", f"{PACKAGE}.core.x", 1, "module level", "from . import x")
    assert [c.members for c in cycles([self_import])] == [[f"{PACKAGE}.core.x"]]


def test_importing_alone_catches_a_cycle_and_a_deferred_import_of_nothing(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    files = {
        "__init__.py": "",
        "a.py": "from pytest_efficientllm.b import B\nA = 1\n",  # a -> b -> a: a alone cannot import
        "b.py": "from pytest_efficientllm.a import A\nB = 2\n",
        "c.py": "def f():\n    from pytest_efficientllm.d import gone\n",  # only calling f() would fail
        "d.py": "X = 1\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    a = import_alone(f"{PACKAGE}.a", pkg / "a.py", tmp_path)
    assert a is not None and "ImportError" in a and "partially initialized" in a
    c = import_alone(f"{PACKAGE}.c", pkg / "c.py", tmp_path)
    assert c is not None and "deferred imports that fail: line 2: from pytest_efficientllm.d import gone" in c
    assert import_alone(f"{PACKAGE}.d", pkg / "d.py", tmp_path) is None
