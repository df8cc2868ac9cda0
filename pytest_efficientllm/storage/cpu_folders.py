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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_efficientllm.core.record import Record
from pytest_efficientllm.judging.run_noise import RunPrior
from pytest_efficientllm.storage.baselines import BaselineError, BaselineStore, FileUpdate

# The profiles whose device is the host CPU.
CPU_PROFILES = ("cpu",)
# Vector extensions from the widest down: a folder is named by the first the CPU has, as a
# VM's generic model name ("Intel(R) Xeon(R) Processor") covers generations with and without them.
_WIDEST = (("amx", ("amx_bf16", "amx_int8")), ("avx512", ("avx512f",)), ("avx2", ("avx2",)))


@dataclass(frozen=True)
class CpuIdentity:
    """A CPU as fingerprints name it: its model name and kernel-relevant extensions
    (`isa` None where a fingerprint was recorded before it listed them)."""

    model: str
    isa: str | None

    @classmethod
    def of(cls, fingerprint: Mapping[str, Any]) -> CpuIdentity | None:
        model = fingerprint.get("cpu_model")
        if not isinstance(model, str) or not model:
            return None
        isa = fingerprint.get("cpu_isa")
        return cls(model, isa if isinstance(isa, str) else None)

    def recorded(self, record: Record) -> bool:
        """Whether a baseline was recorded on this CPU (one recorded before fingerprints
        listed extensions: on this model)."""
        theirs = CpuIdentity.of(record.fingerprint)
        return theirs is not None and theirs.model == self.model and theirs.isa in (None, self.isa)


def cpu_folder_name(profile: str, cpu: CpuIdentity) -> str:
    """`cpu@intel-xeon-processor-amx`: the profile, the model name in lower-case words, and
    the widest vector extension the CPU has."""
    words = re.sub(r"\((r|tm)\)", " ", cpu.model.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-") or "unknown-cpu"
    flags = set((cpu.isa or "").split())
    widest = next((name for name, marks in _WIDEST if flags & set(marks)), "")
    return f"{profile}@{slug}-{widest}" if widest else f"{profile}@{slug}"


class BaselineFolders:
    """A profile's baselines: its folder and, on a CPU profile, this CPU's own beside it."""

    def __init__(self, root: str | Path, profile: str, fingerprint: Mapping[str, Any]) -> None:
        self.main = BaselineStore(root, profile)
        cpu = CpuIdentity.of(fingerprint) if profile in CPU_PROFILES else None
        self.cpu = cpu
        self.own = BaselineStore(root, profile, cpu_folder_name(profile, cpu)) if cpu is not None else None
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

    def _writes_to(self, record: Record) -> BaselineStore:
        if self.own is None or self.cpu is None:
            return self.main
        # An unreadable file is written to, so that its update reports it and leaves it as it was.
        try:
            if self.own.lookup(record.nodeid) is not None:
                return self.own
        except BaselineError:
            return self.own
        try:
            first = self.main.lookup(record.nodeid)
        except BaselineError:
            return self.main
        return self.main if first is None or self.cpu.recorded(first) else self.own

    def update(self, records: Iterable[Record]) -> list[FileUpdate]:
        """Write each record where `_writes_to` says; other entries of each file are kept."""
        self._note_own()
        by_store: dict[str, tuple[BaselineStore, list[Record]]] = {}
        for record in records:
            store = self._writes_to(record)
            by_store.setdefault(store.folder_name, (store, []))[1].append(record)
        results = []
        for name in sorted(by_store):
            store, written = by_store[name]
            results += store.update(written)
        return results

    def own_folder(self) -> Path | None:
        """This CPU's own folder, where it existed before the run wrote any baseline."""
        self._note_own()
        return self.own.folder if self.own is not None and self._own_existed else None
