"""The cpu profile's baselines per CPU: where a test's baseline is read from and written to."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_efficientllm.storage.cpu_folders import BaselineFolders, cpu_folder_name
from tests.helpers.record_builders import counted, latency, record

AMD = {"cpu_model": "AMD EPYC 7763 64-Core Processor", "cpu_isa": "avx2 fma"}
INTEL = {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_isa": "avx2 fma avx512f amx_bf16 amx_int8"}
ARM = {"cpu_model": "Neoverse-V2", "cpu_isa": ""}
NODE = "suites/test_x.py::test_a"


def _on(cpu: dict[str, str], seconds: float, nodeid: str = NODE):
    return record(nodeid, latency(seconds), counted("flops", 100, "FLOP"), fingerprint=cpu)


def test_a_folder_is_named_by_the_model_and_its_widest_vector_extension() -> None:
    assert cpu_folder_name("cpu", INTEL) == "cpu@intel-xeon-processor-amx"
    assert cpu_folder_name("cpu", AMD) == "cpu@amd-epyc-7763-64-core-processor-avx2"
    avx512 = {"cpu_model": "Intel(R) Xeon(R) Platinum 8370C CPU @ 2.80GHz", "cpu_isa": "avx2 fma avx512f"}
    assert cpu_folder_name("cpu", avx512) == "cpu@intel-xeon-platinum-8370c-cpu-2-80ghz-avx512"
    assert cpu_folder_name("cpu", ARM) == "cpu@neoverse-v2"


def test_a_second_cpu_records_beside_the_first_and_each_reads_its_own(tmp_path: Path) -> None:
    BaselineFolders(tmp_path, "cpu", AMD).update([_on(AMD, 0.010)])
    first = (tmp_path / "cpu/suites/test_x.py.json").read_bytes()

    intel = BaselineFolders(tmp_path, "cpu", INTEL)
    assert intel.lookup(NODE)["AL"].value == pytest.approx(0.010, rel=0.02)  # none of its own yet: the first CPU's
    (upd,) = intel.update([_on(INTEL, 0.020)])
    assert upd.path == tmp_path / "cpu@intel-xeon-processor-amx/suites/test_x.py.json" and upd.added == [NODE]
    assert (tmp_path / "cpu/suites/test_x.py.json").read_bytes() == first, "the first CPU's baseline was rewritten"

    assert BaselineFolders(tmp_path, "cpu", INTEL).lookup(NODE)["AL"].value == pytest.approx(0.020, rel=0.02)
    assert BaselineFolders(tmp_path, "cpu", AMD).lookup(NODE)["AL"].value == pytest.approx(0.010, rel=0.02)
    # A third CPU with no folder of its own is compared with the profile's, as before.
    assert BaselineFolders(tmp_path, "cpu", ARM).lookup(NODE)["AL"].value == pytest.approx(0.010, rel=0.02)

    # Each CPU's update goes on writing where its baseline is.
    (again,) = BaselineFolders(tmp_path, "cpu", AMD).update([_on(AMD, 0.011)])
    assert again.path == tmp_path / "cpu/suites/test_x.py.json" and again.updated == [NODE]
    (again,) = BaselineFolders(tmp_path, "cpu", INTEL).update([_on(INTEL, 0.021)])
    assert again.path.parent.parent.name == "cpu@intel-xeon-processor-amx" and again.updated == [NODE]


def test_a_test_no_cpu_recorded_goes_to_the_profile_folder(tmp_path: Path) -> None:
    BaselineFolders(tmp_path, "cpu", AMD).update([_on(AMD, 0.010)])
    intel = BaselineFolders(tmp_path, "cpu", INTEL)
    other = "suites/test_x.py::test_new"
    paths = {u.path for u in intel.update([_on(INTEL, 0.02), _on(INTEL, 0.03, other)])}
    assert paths == {
        tmp_path / "cpu/suites/test_x.py.json",  # test_new: no CPU had recorded it
        tmp_path / "cpu@intel-xeon-processor-amx/suites/test_x.py.json",
    }
    assert BaselineFolders(tmp_path, "cpu", INTEL).own.lookup(other) is None


def test_a_baseline_recorded_before_fingerprints_listed_extensions_is_kept_and_read_not_overwritten(
    tmp_path: Path,
) -> None:
    # The same model name may be another generation (AVX-512 or not): its entry is not this CPU's
    # to replace. It stays the baseline until this CPU records its own, beside it.
    old = {"cpu_model": AMD["cpu_model"]}
    BaselineFolders(tmp_path, "cpu", AMD).main.update([record(NODE, latency(0.01), fingerprint=old)])
    first = (tmp_path / "cpu/suites/test_x.py.json").read_bytes()
    folders = BaselineFolders(tmp_path, "cpu", AMD)
    assert folders.lookup(NODE)["AL"].value == pytest.approx(0.010, rel=0.02)
    (upd,) = folders.update([_on(AMD, 0.012)])
    assert upd.path == tmp_path / "cpu@amd-epyc-7763-64-core-processor-avx2/suites/test_x.py.json"
    assert upd.added == [NODE] and (tmp_path / "cpu/suites/test_x.py.json").read_bytes() == first
    assert BaselineFolders(tmp_path, "cpu", AMD).lookup(NODE)["AL"].value == pytest.approx(0.012, rel=0.02)


def test_the_same_model_with_other_extensions_records_its_own(tmp_path: Path) -> None:
    without_amx = {**INTEL, "cpu_isa": "avx2 fma avx512f"}
    BaselineFolders(tmp_path, "cpu", without_amx).update([_on(without_amx, 0.010)])
    (upd,) = BaselineFolders(tmp_path, "cpu", INTEL).update([_on(INTEL, 0.02)])
    assert upd.path.parent.parent.name == "cpu@intel-xeon-processor-amx"


def test_gpu_profiles_keep_one_folder_whatever_the_host_cpu(tmp_path: Path) -> None:
    BaselineFolders(tmp_path, "h100", AMD).update([record(NODE, latency(0.01), profile="h100", fingerprint=AMD)])
    folders = BaselineFolders(tmp_path, "h100", INTEL)
    (upd,) = folders.update([record(NODE, latency(0.02), profile="h100", fingerprint=INTEL)])
    assert upd.path == tmp_path / "h100/suites/test_x.py.json" and upd.updated == [NODE]
    assert folders.own is None and folders.own_folder() is None


def test_an_unreadable_own_file_is_reported_and_nothing_goes_to_the_first_cpu_s(tmp_path: Path) -> None:
    BaselineFolders(tmp_path, "cpu", AMD).update([_on(AMD, 0.010)])
    first = (tmp_path / "cpu/suites/test_x.py.json").read_bytes()
    corrupt = tmp_path / "cpu@intel-xeon-processor-amx/suites/test_x.py.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{not json")
    (upd,) = BaselineFolders(tmp_path, "cpu", INTEL).update([_on(INTEL, 0.02)])
    assert upd.path == corrupt and "corrupt baseline file" in upd.error
    assert corrupt.read_text() == "{not json"
    assert (tmp_path / "cpu/suites/test_x.py.json").read_bytes() == first


def test_two_cpu_models_recording_a_new_test_at_once_keep_apart(tmp_path: Path) -> None:
    # The Intel run looked the test up before the AMD run wrote it: where to write is decided
    # under the file's lock, from the entry found there, not from what was read earlier.
    intel = BaselineFolders(tmp_path, "cpu", INTEL)
    assert intel.lookup(NODE) is None
    BaselineFolders(tmp_path, "cpu", AMD).update([_on(AMD, 0.010)])
    first = (tmp_path / "cpu/suites/test_x.py.json").read_bytes()

    (upd,) = intel.update([_on(INTEL, 0.020)])
    assert upd.path.parent.parent.name == "cpu@intel-xeon-processor-amx" and upd.added == [NODE]
    assert (tmp_path / "cpu/suites/test_x.py.json").read_bytes() == first, "the AMD entry was rewritten"
