"""The plugin's tests, laid out like the package they test (pytest_efficientllm/).

A package, so that every test module has a dotted name under `tests` (two folders may hold
modules of one name) and shared helpers import as `tests.helpers.<module>`. Test modules
never import one another: what two of them share lives in `tests/helpers/`.
"""
