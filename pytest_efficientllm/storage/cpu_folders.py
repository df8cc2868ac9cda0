"""The `cpu` profile's baselines, one folder per CPU: `baselines/cpu/` and `baselines/cpu@<cpu>/`.

On the `cpu` profile the CPU is the device, and the runners of one CI label mix CPU models
(hosted runners are AMD EPYC one day and Intel Xeon the next). One folder for all of them
compares each with whichever recorded last, through a calibration workload that does not
stand for small-model work across CPU models (the suites on an Intel Xeon against AMD EPYC
baselines read +10% to +90% in CPU time with nothing changed), and every `--update-baselines`
on the other model would replace the first's entries and history.

So each test's baseline is looked up first in this CPU's own folder, `<profile>@<cpu>/`
(`cpu_folder_name`: the model name and its widest vector extension), and then in the
profile's folder, which holds whatever CPU recorded the test first (a fingerprint warning
names the CPU then, as before). `--update-baselines` writes a test into the profile's folder
when it has no entry there or that entry is this CPU's, and into this CPU's own folder
otherwise: a second CPU model adds its folder and never rewrites the first's. GPU profiles
have one folder: their device is the GPU, and another GPU is another profile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_efficientllm.core.devices import widest_vector_extension
from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.fingerprint import CPU_KEYS, fingerprint_diff
from pytest_efficientllm.judging.run_noise import RunPrior
from pytest_efficientllm.storage.baselines import BaselineError, BaselineStore, FileUpdate

# The profiles whose device is the host CPU.
CPU_PROFILES = ("cpu",)


def cpu_folder_name(profile: str, fingerprint: Mapping[str, Any]) -> str:
    """`cpu@intel-xeon-processor-amx`: the profile, the fingerprint's CPU model in lower-case
    words, and the widest vector extension the CPU has."""
    words = re.sub(r"\((r|tm)\)", " ", str(fingerprint.get("cpu_model") or "").lower())
    slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "unknown-cpu"
    widest = widest_vector_extension(str(fingerprint.get("cpu_isa") or ""))
    return f"{profile}@{slug}-{widest}" if widest else f"{profile}@{slug}"


class BaselineFolders:
    """A profile's baselines: its folder and, on a CPU profile, this CPU's own beside it."""

    def __init__(self, root: str | Path, profile: str, fingerprint: Mapping[str, Any]) -> None:
        self.main = BaselineStore(root, profile)
        # This CPU as the fingerprints name it; another entry's is compared by the fingerprint
        # rule, so an entry recorded before fingerprints listed `cpu_isa` counts as its model's.
        self._cpu = {key: fingerprint[key] for key in CPU_KEYS if key in fingerprint}
        on_cpu = profile in CPU_PROFILES and "cpu_model" in self._cpu
        self.own = BaselineStore(root, profile, cpu_folder_name(profile, fingerprint)) if on_cpu else None
        self._own_existed: bool | None = None

    def _note_own(self) -> None:
        # Whether this CPU had a folder when the run first asked: the one its update may create
        # held none of the baselines the run was compared with.
        if self._own_existed is None:
            self._own_existed = self.own is not None and self.own.folder.is_dir()

    @property
    def folder(self) -> Path:
        return self.main.folder

    def _holding(self, nodeid: str) -> BaselineStore:
        """The store whose entry is this test's baseline here (the profile's when neither has one)."""
        self._note_own()
        if self.own is not None and self.own.lookup(nodeid) is not None:
            return self.own
        return self.main

    def lookup(self, nodeid: str) -> Record | None:
        """This test's stored baseline, or None; BaselineError when a file it needs is unreadable."""
        return self._holding(nodeid).lookup(nodeid)

    def run_priors(self, nodeid: str) -> dict[str, RunPrior]:
        """The run-to-run spread the test's baseline shares with the tests of its own folder."""
        return self._holding(nodeid).run_priors(nodeid)

    def _has_own(self, nodeid: str) -> bool:
        assert self.own is not None
        # An unreadable file is written to, so that its update reports it and leaves it as it was.
        try:
            return self.own.lookup(nodeid) is not None
        except BaselineError:
            return True

    def _recorded_here(self, stored: Record) -> bool:
        """Whether a profile-folder entry is this CPU's (by the fingerprint rule)."""
        return not fingerprint_diff(stored.fingerprint, self._cpu).cpu

    def update(self, records: Iterable[Record]) -> list[FileUpdate]:
        """Write each test where its baseline is; other entries of each file are kept.

        A test this CPU has an entry of goes to its own folder; any other goes to the profile's
        unless the entry found there, under the file's lock, is another CPU's: then to this
        CPU's own. Deciding under the lock means two CPU models recording a new test at once
        never write one into the other's entry.
        """
        self._note_own()
        records = list(records)
        if self.own is None:
            return self.main.update(records)
        mine = {r.nodeid for r in records if self._has_own(r.nodeid)}
        in_main = self.main.update([r for r in records if r.nodeid not in mine], replaces=self._recorded_here)
        mine |= {nodeid for u in in_main for nodeid in u.declined}
        own = [r for r in records if r.nodeid in mine]
        written = [u for u in in_main if u.error or u.added or u.updated or u.unchanged]
        return written + (self.own.update(own) if own else [])

    def own_folder(self) -> Path | None:
        """This CPU's own folder, where it existed before the run wrote any baseline."""
        self._note_own()
        return self.own.folder if self.own is not None and self._own_existed else None
