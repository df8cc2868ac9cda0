"""What several test modules share: test doubles, record builders, fault-injection harnesses.

Test doubles are named as such: the module says `double` (`nvml_double`, `torch_cuda_double`)
and the classes are `FakeX`. Builders (`record_builders`, `report_records`) make real objects
with numbers a test chooses; `fault_harness` and `read_only_folders` are harnesses.

Scripts that a test runs in a fresh interpreter (`python -c`, a pytester conftest) import
these the same way, after putting `REPO_ROOT` first on `sys.path`.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
