"""The baseline store: layout, stable diffable files, merging, and every bad-input fault."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_efficientllm.storage.baselines import (
    BaselineError,
    BaselineStore,
    baseline_relpath,
)
from tests.helpers import REPO_ROOT
from tests.helpers.read_only_folders import make_read_only, undo_read_only
from tests.helpers.record_builders import counted, latency, record

ODD_ID = "tests/sub/test_odd.py::test_case[a/b c-ü-日本]"


def test_the_baseline_file_is_derived_from_the_test_file_path() -> None:
    assert str(baseline_relpath("suites/test_quant.py::test_decode[int4]")) == "suites/test_quant.py.json"
    assert str(baseline_relpath(ODD_ID)) == "tests/sub/test_odd.py.json"  # '/' in the parameter stays in the key
    assert str(baseline_relpath("../elsewhere/test_x.py::t")) == "_up_/elsewhere/test_x.py.json"


def test_node_ids_with_slashes_spaces_and_unicode_round_trip(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    rec = record(ODD_ID, latency(0.01), counted("peak_memory", 123456789))
    (upd,) = store.update([rec])
    assert upd.added == [ODD_ID] and upd.path == tmp_path / "cpu/tests/sub/test_odd.py.json"
    back = BaselineStore(tmp_path, "cpu").lookup(ODD_ID)
    assert back is not None and back.nodeid == ODD_ID
    assert back["peak_memory"].value == 123456789  # counted: exact
    assert back["AL"].samples == pytest.approx(rec["AL"].samples, rel=1e-5)  # measured: 6 significant digits
    assert "日本" in upd.path.read_text(encoding="utf-8")  # readable, not \\u-escaped


def test_files_are_sorted_versioned_and_carry_summary_statistics(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    store.update([record("t.py::b", latency(0.01)), record("t.py::a", counted("flops", 7, "FLOP"))])
    text = (tmp_path / "cpu/t.py.json").read_text()
    doc = json.loads(text)
    assert doc["schema"] == 1 and doc["format"] == "pytest-efficientllm-baselines" and doc["profile"] == "cpu"
    assert list(doc["tests"]) == ["t.py::a", "t.py::b"]
    stats = doc["tests"]["t.py::b"]["metrics"]["AL"]["stats"]
    assert set(stats) == {"n", "median", "mad", "iqr", "min", "max"} and stats["n"] == 7
    assert doc["tests"]["t.py::b"]["fingerprint"]["cpu_model"] == "Test CPU"
    assert json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n" == text


def test_update_keeps_tests_that_did_not_run_and_says_what_changed(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    store.update(
        [
            record("t.py::a", counted("flops", 1, "FLOP")),
            record("t.py::b", counted("flops", 2, "FLOP")),
            record("t.py::c", counted("flops", 3, "FLOP")),
        ]
    )
    before = (tmp_path / "cpu/t.py.json").read_text()
    (upd,) = store.update(
        [
            record("t.py::a", counted("flops", 1, "FLOP")),
            record("t.py::b", counted("flops", 5, "FLOP")),
            record("t.py::d", counted("flops", 4, "FLOP")),
        ]
    )
    assert (upd.added, upd.updated, upd.unchanged, upd.kept) == (["t.py::d"], ["t.py::b"], ["t.py::a"], 1)
    doc = json.loads((tmp_path / "cpu/t.py.json").read_text())
    assert sorted(doc["tests"]) == ["t.py::a", "t.py::b", "t.py::c", "t.py::d"]
    assert json.loads(before)["tests"]["t.py::a"] == doc["tests"]["t.py::a"]


def test_a_re_record_under_other_software_updates_the_entry_and_a_new_calibration_alone_does_not(
    tmp_path: Path,
) -> None:
    # The calibration workload's time moves on every run although nothing measured did: a re-record
    # of the same counts leaves the file byte for byte. Another torch counted those facts under
    # other software: the entry takes its fingerprint, or the baseline would name the old torch.
    store = BaselineStore(tmp_path, "cpu")
    store.update([record("t.py::a", counted("flops", 1, "FLOP"))])
    path = tmp_path / "cpu/t.py.json"
    before = path.read_text()
    (same,) = store.update(
        [record("t.py::a", counted("flops", 1, "FLOP"), fingerprint={"calibration": {"index_s": 0.003}})]
    )
    assert same.unchanged == ["t.py::a"] and path.read_text() == before
    (newer,) = store.update(
        [record("t.py::a", counted("flops", 1, "FLOP"), fingerprint={"packages": {"torch": "2.14.0"}})]
    )
    assert newer.updated == ["t.py::a"]
    assert json.loads(path.read_text())["tests"]["t.py::a"]["fingerprint"]["packages"] == {"torch": "2.14.0"}


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda text: text[: len(text) // 2], "line"),  # truncated
        (lambda text: text.replace('"tests"', '"tests" "', 1), "line 5 column"),  # corrupt
    ],
)
def test_a_corrupt_or_truncated_file_is_an_error_naming_file_and_position_and_is_not_overwritten(
    tmp_path: Path, damage, expected: str
) -> None:
    store = BaselineStore(tmp_path, "cpu")
    store.update([record("t.py::a", counted("flops", 1, "FLOP"))])
    path = tmp_path / "cpu/t.py.json"
    path.write_text(damage(path.read_text()))
    broken = path.read_text()
    with pytest.raises(
        BaselineError, match=r"t\.py\.json: corrupt baseline file: not valid JSON at line \d+ column \d+"
    ) as exc:
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")
    assert expected in str(exc.value)
    (upd,) = BaselineStore(tmp_path, "cpu").update([record("t.py::b", counted("flops", 2, "FLOP"))])
    assert "corrupt" in upd.error and "nothing was overwritten" in upd.error
    assert path.read_text() == broken


def test_a_file_from_a_newer_schema_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "cpu/t.py.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"format": "pytest-efficientllm-baselines", "schema": 99, "profile": "cpu", "tests": {}})
    )
    with pytest.raises(BaselineError, match="newer pytest-efficientllm.*schema 99.*upgrade the plugin"):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")
    (upd,) = BaselineStore(tmp_path, "cpu").update([record("t.py::a", counted("flops", 1, "FLOP"))])
    assert "schema 99" in upd.error and json.loads(path.read_text())["schema"] == 99


def _write_doc(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "cpu/t.py.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


FORMAT = "pytest-efficientllm-baselines"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param([1, 2], 'not a pytest-efficientllm baseline file (no "format"', id="a JSON list"),
        pytest.param(
            {"schema": 1, "tests": {}}, 'not a pytest-efficientllm baseline file (no "format"', id="no format"
        ),
        pytest.param({"format": FORMAT, "schema": "1", "tests": {}}, 'no integer "schema" field', id="schema a string"),
        pytest.param({"format": FORMAT, "schema": True, "tests": {}}, 'no integer "schema" field', id="schema true"),
        pytest.param({"format": FORMAT, "tests": {}}, 'no integer "schema" field', id="no schema"),
        pytest.param({"format": FORMAT, "schema": 1, "tests": []}, '"tests" must be a JSON object', id="tests a list"),
    ],
)
def test_a_json_file_that_is_not_a_baseline_file_is_refused_naming_what_is_wrong_and_kept(
    tmp_path: Path, doc: object, expected: str
) -> None:
    # Another tool's JSON in the baselines folder, or a hand edit gone wrong: never a TypeError.
    path = _write_doc(tmp_path, doc)
    with pytest.raises(BaselineError) as exc:
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")
    assert str(exc.value).startswith(str(path)) and expected in str(exc.value)
    (upd,) = BaselineStore(tmp_path, "cpu").update([record("t.py::a", counted("flops", 1, "FLOP"))])
    assert expected in upd.error and json.loads(path.read_text()) == doc


def test_a_file_without_a_profile_label_is_held_to_its_folders_profile(tmp_path: Path) -> None:
    # A file written or trimmed by hand without "profile": its entries must still be the folder's,
    # or an H100's entry in baselines/cpu/ would be compared as this CPU's.
    BaselineStore(tmp_path / "made", "h100").update([record("t.py::a", counted("flops", 1, "FLOP"), profile="h100")])
    doc = json.loads((tmp_path / "made/h100/t.py.json").read_text())
    del doc["profile"]
    _write_doc(tmp_path, doc)
    with pytest.raises(BaselineError, match=r"cpu/t\.py\.json: entry 't\.py::a' has profile 'h100' in a 'cpu' file"):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")


def test_a_malformed_entry_names_the_file_and_the_test(tmp_path: Path) -> None:
    path = tmp_path / "cpu/t.py.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "format": "pytest-efficientllm-baselines",
                "schema": 1,
                "profile": "cpu",
                "tests": {"t.py::a": {"metrics": {"AL": {"value": 1}}}},
            }
        )
    )
    with pytest.raises(BaselineError, match=r"t\.py\.json: entry 't\.py::a'"):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")


def test_a_read_only_baselines_folder_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu")
    store.update([record("t.py::a", counted("flops", 1, "FLOP"))])
    folder = tmp_path / "cpu"
    before = (folder / "t.py.json").read_text()
    if not make_read_only(folder):
        undo_read_only(folder)
        pytest.skip("cannot make a folder read-only here (root without chattr)")
    try:
        (upd,) = store.update([record("t.py::a", counted("flops", 2, "FLOP"))])
    finally:
        undo_read_only(folder)
    assert "cannot write baseline file" in upd.error and "read-only" in upd.error
    assert (folder / "t.py.json").read_text() == before
    assert sorted(p.name for p in folder.iterdir()) == ["t.py.json"]  # no temporary file left behind


def _hammer(root: str, prefix: str, count: int) -> None:
    store = BaselineStore(root, "cpu")
    for i in range(count):
        (upd,) = store.update([record(f"t.py::{prefix}{i}", counted("flops", i, "FLOP"))])
        assert not upd.error, upd.error


def test_two_processes_updating_one_file_at_once_lose_no_entries(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), p, 25)) for p in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    doc = json.loads((tmp_path / "cpu/t.py.json").read_text())
    assert len(doc["tests"]) == 50


def test_tests_of_other_files_are_in_other_files(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "h200")
    store.update(
        [
            record("a/test_1.py::t", counted("flops", 1, "FLOP"), profile="h200"),
            record("b/test_2.py::t", counted("flops", 1, "FLOP"), profile="h200"),
        ]
    )
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")) == [
        os.path.join("h200", "a", "test_1.py.json"),
        os.path.join("h200", "b", "test_2.py.json"),
    ]


# A process that waits for the go file, then adds `count` entries to one baseline file, one update each.
_HAMMER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo_root!r})
from tests.helpers.record_builders import counted, record
from pytest_efficientllm.storage.baselines import BaselineStore
store = BaselineStore({root!r}, "cpu")
print("ready", flush=True)
while not Path({go!r}).exists():
    time.sleep(0.005)
for i in range({count}):
    (upd,) = store.update([record(f"t.py::{prefix}{{i}}", counted("flops", i, "FLOP"))])
    assert not upd.error, upd.error
"""


def test_writers_with_different_temp_dirs_share_the_lock_and_lose_no_entries(tmp_path: Path) -> None:
    # tox gives every environment its own TMPDIR, and so do containers and other users:
    # a lock kept in the temp directory would not be shared between them.
    root, go = tmp_path / "baselines", tmp_path / "go"
    procs = []
    for prefix in ("x", "y"):
        temp = tmp_path / f"tmp-{prefix}"
        temp.mkdir()
        script = _HAMMER.format(repo_root=str(REPO_ROOT), root=str(root), go=str(go), prefix=prefix, count=40)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "TMPDIR": str(temp)},
            )
        )
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    doc = json.loads((root / "cpu/t.py.json").read_text())
    assert len(doc["tests"]) == 80


def test_the_lock_lives_in_the_baselines_folder_and_leaves_only_baselines_to_commit(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    BaselineStore(repo / "baselines", "cpu").update([record("suites/t.py::a", counted("flops", 1, "FLOP"))])
    locks = repo / "baselines" / ".locks"
    assert locks.is_dir() and (locks / ".gitignore").read_text().splitlines()[-1] == "*"
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the .gitignore was checked, not what git makes of it")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert status.splitlines() == ["?? baselines/cpu/suites/t.py.json"]


def _stored(tmp_path: Path) -> Path:
    BaselineStore(tmp_path, "cpu").update([record("t.py::a", counted("peak_memory", 1000), latency(0.01))])
    return tmp_path / "cpu/t.py.json"


@pytest.mark.parametrize(
    ("metric", "field", "bad", "said"),
    [
        ("peak_memory", "value", "1 kB", "a number or null"),
        ("AL", "samples", [0.01, None], "a list of numbers"),
        ("AL", "value", True, "a number or null"),
        ("peak_memory", "unit", 5, "a string"),
        ("AL", "direction", "down", "one of"),
        ("AL", "source", None, "one of"),
        ("AL", "history", "0.01", "a list of numbers"),
    ],
)
def test_a_wrongly_typed_field_names_file_entry_metric_and_field_and_blocks_the_update(
    tmp_path: Path, metric: str, field: str, bad, said: str
) -> None:
    path = _stored(tmp_path)
    doc = json.loads(path.read_text())
    doc["tests"]["t.py::a"]["metrics"][metric][field] = bad
    path.write_text(json.dumps(doc))
    broken = path.read_text()
    pattern = rf"t\.py\.json: entry 't\.py::a': metric {metric!r}: \"{field}\" must be {said}"
    with pytest.raises(BaselineError, match=pattern):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")
    (upd,) = BaselineStore(tmp_path, "cpu").update([record("t.py::a", counted("peak_memory", 1000))])
    assert re.search(pattern, upd.error) and "nothing was overwritten" in upd.error
    assert path.read_text() == broken


def test_a_metric_that_is_not_an_object_names_file_entry_and_metric(tmp_path: Path) -> None:
    path = _stored(tmp_path)
    doc = json.loads(path.read_text())
    doc["tests"]["t.py::a"]["metrics"]["peak_memory"] = 1000
    path.write_text(json.dumps(doc))
    pattern = r"t\.py\.json: entry 't\.py::a': metric 'peak_memory' must be a JSON object, got 1000"
    with pytest.raises(BaselineError, match=pattern):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")


def test_a_file_of_another_profile_is_refused_by_name_and_not_relabelled(tmp_path: Path) -> None:
    # A baseline file copied from baselines/h100/ into baselines/cpu/.
    BaselineStore(tmp_path, "h100").update([record("t.py::a", counted("flops", 1, "FLOP"), profile="h100")])
    path = tmp_path / "cpu/t.py.json"
    path.parent.mkdir()
    path.write_bytes((tmp_path / "h100/t.py.json").read_bytes())
    copied = path.read_text()
    pattern = r"cpu/t\.py\.json: a baseline file of profile 'h100' in the folder of profile 'cpu'"
    with pytest.raises(BaselineError, match=pattern):
        BaselineStore(tmp_path, "cpu").lookup("t.py::a")
    (upd,) = BaselineStore(tmp_path, "cpu").update([record("t.py::b", counted("flops", 1, "FLOP"))])
    assert re.search(pattern, upd.error)
    assert path.read_text() == copied
