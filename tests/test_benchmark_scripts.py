"""The benchmark scripts name only what the package has.

`benchmarks/` is not imported by any test run (its scripts take minutes and write RESULTS.md),
so a rename in the package would break a script unseen until someone ran it for evidence. Every
`from pytest_efficientllm... import name` in them, at any depth, must resolve.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util

from tests.helpers import REPO_ROOT


def _package_imports() -> list[tuple[str, int, str, str]]:
    found = []
    for path in sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_efficientllm"):
                found += [(path.name, node.lineno, str(node.module), alias.name) for alias in node.names]
    return found


def test_every_package_import_of_the_benchmark_scripts_resolves() -> None:
    imports = _package_imports()
    assert len(imports) > 10, "the scan found too few imports to be reading the scripts"
    missing = []
    for script, line, module, name in imports:
        imported = importlib.import_module(module)
        is_submodule = hasattr(imported, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None
        if not hasattr(imported, name) and not is_submodule:
            missing.append(f"benchmarks/{script}:{line}: {module} has no {name}")
    assert missing == []
