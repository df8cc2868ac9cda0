"""BASE and HEAD as worktrees (`ab.revisions`): unknown revisions, dirty work trees, clean-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pytest_efficientllm.ab.revisions import RevisionError, sides


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "mod.py").write_text("N = 1\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "one")
    (root / "mod.py").write_text("N = 2\n")
    git(root, "commit", "-qam", "two")
    return root


def _worktrees(repo: Path) -> int:
    return git(repo, "worktree", "list", "--porcelain").count("worktree ")


def test_each_side_is_a_worktree_of_its_commit_removed_afterwards(repo: Path) -> None:
    with sides("HEAD~1", "HEAD", repo) as (base, head):
        assert (base.path / "mod.py").read_text() == "N = 1\n" and (head.path / "mod.py").read_text() == "N = 2\n"
        assert base.commit == git(repo, "rev-parse", "HEAD~1").strip() and _worktrees(repo) == 3
        made = [base.path, head.path]
    assert _worktrees(repo) == 1 and not any(p.exists() for p in made)


def test_worktrees_are_removed_on_ctrl_c(repo: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with sides("HEAD~1", "HEAD", repo) as (base, _):
            made = base.path
            raise KeyboardInterrupt
    assert _worktrees(repo) == 1 and not made.exists()


def test_an_unknown_revision_is_named(repo: Path) -> None:
    with pytest.raises(RevisionError, match="unknown revision 'no-such-branch'"):
        with sides("no-such-branch", "HEAD", repo):
            pass
    assert _worktrees(repo) == 1


def test_a_dirty_work_tree_is_refused_naming_the_files_unless_asked(repo: Path) -> None:
    (repo / "mod.py").write_text("N = 3\n")
    (repo / "new_file.py").write_text("")
    with pytest.raises(RevisionError, match=r"uncommitted changes.*mod\.py.*new_file\.py.*--allow-dirty"):
        with sides("HEAD~1", "HEAD", repo):
            pass
    with sides("HEAD~1", "HEAD", repo, allow_dirty=True) as (_, head):
        assert (head.path / "mod.py").read_text() == "N = 2\n"  # the commit, not the work tree


def test_the_comparison_s_own_output_folder_does_not_make_the_tree_dirty_but_nothing_else_is_excused(
    repo: Path,
) -> None:
    outputs = repo / "efficiency-ab"
    outputs.mkdir()
    (outputs / "head.json").write_text("{}")  # the last comparison's files
    with sides("HEAD~1", "HEAD", repo, outputs=outputs.resolve()):
        pass
    for i in range(10):  # ten of the user's own files: each named, none as "more"
        (repo / f"notes{i}.txt").write_text("")
    with pytest.raises(RevisionError, match=r"notes0\.txt.*notes9\.txt; commit or stash") as refused:
        with sides("HEAD~1", "HEAD", repo, outputs=outputs.resolve()):
            pass
    assert "efficiency-ab" not in str(refused.value) and "more" not in str(refused.value)
    (repo / "notes10.txt").write_text("")
    with pytest.raises(RevisionError, match=r"and 1 more; commit or stash"):
        with sides("HEAD~1", "HEAD", repo, outputs=outputs.resolve()):
            pass


def test_two_folders_are_used_as_they_are_without_git(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    with sides(str(a), str(b), tmp_path) as (base, head):
        assert base.path == a.resolve() and head.path == b.resolve() and base.commit == ""
    assert a.exists() and b.exists()
