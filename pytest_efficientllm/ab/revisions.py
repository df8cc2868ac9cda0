"""BASE and HEAD as folders: a git worktree of each revision, or a folder given as is.

Nothing is installed: both sides run in the current environment (as `asv continuous` reuses
one), with their own folder first on the import path. The worktrees live in a temporary
folder and are removed when the `sides` context ends, on an error and on Ctrl-C too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class RevisionError(ValueError):
    """A revision or folder that cannot be used; the message names it and what to do."""


@dataclass(frozen=True)
class Side:
    """One version under test: what the user named, the commit it resolved to, and its folder (for a
    revision, the folder of its worktree where the comparison was started in the work tree)."""

    name: str  # "base" or "head"
    spec: str  # what the user gave: a revision or a folder
    commit: str  # the full commit id; "" for a folder given as is
    path: Path


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def repo_root(start: Path) -> Path:
    """The top of the git work tree that holds `start`."""
    done = _git(start, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise RevisionError(f"{start}: not inside a git work tree ({done.stderr.strip()}); give two folders instead")
    return Path(done.stdout.strip())


def resolve(repo: Path, spec: str) -> str:
    """The full commit id of a revision; RevisionError naming it when git does not know it."""
    done = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise RevisionError(f"unknown revision {spec!r}: not a commit of {repo} (and not an existing folder)")
    return done.stdout.strip()


def dirty_files(repo: Path) -> list[str]:
    """Files with changes that a worktree of a commit would not contain (tracked or untracked, not ignored)."""
    done = _git(repo, "status", "--porcelain", "--untracked-files=all")
    if done.returncode != 0:
        raise RevisionError(f"{repo}: git status failed: {done.stderr.strip()}")
    return [line[3:] for line in done.stdout.splitlines() if line.strip()]


def check_clean(repo: Path, allow_dirty: bool, outputs: Path | None = None) -> None:
    """Refuse a work tree with uncommitted changes unless asked: they would be measured on neither side.

    What lies under `outputs` (this comparison's own folder, by default `efficiency-ab/` in the
    work tree, where the last comparison left its files) is not a change of the code."""
    if allow_dirty:
        return
    files = [f for f in dirty_files(repo) if outputs is None or not (repo / f).resolve().is_relative_to(outputs)]
    if files:
        shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
        raise RevisionError(
            f"the work tree has uncommitted changes that neither side would measure: {shown}; "
            "commit or stash them, or pass --allow-dirty"
        )


@contextlib.contextmanager
def sides(
    base: str, head: str, start: Path, allow_dirty: bool = False, outputs: Path | None = None
) -> Iterator[tuple[Side, Side]]:
    """BASE and HEAD as folders for the time of the block; worktrees are removed afterwards.
    `outputs`: the comparison's own output folder, whose files do not make the work tree dirty."""
    specs = {"base": base, "head": head}
    folders = {name: Path(spec) for name, spec in specs.items() if Path(spec).is_dir()}
    repo: Path | None = None
    commits: dict[str, str] = {}
    if len(folders) < 2:
        repo = repo_root(start)
        for name, spec in specs.items():
            if name not in folders:
                commits[name] = resolve(repo, spec)
        check_clean(repo, allow_dirty, outputs)
    within = Path(os.path.relpath(start.resolve(), repo.resolve())) if repo is not None else Path(".")
    scratch = Path(tempfile.mkdtemp(prefix="efficiency-ab-"))
    made: list[Path] = []
    try:
        out: dict[str, Side] = {}
        for name, spec in specs.items():
            if name in folders:
                out[name] = Side(name, spec, "", folders[name].resolve())
                continue
            assert repo is not None
            path = scratch / name
            done = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commits[name])
            if done.returncode != 0:
                raise RevisionError(f"git worktree add for {spec!r} failed: {done.stderr.strip()}")
            made.append(path)
            # Where the user stands in the work tree (a project in a subfolder of a monorepo, with
            # its own ini file and relative test paths), the side's processes stand in its worktree.
            here = path / within
            if not here.is_dir():
                raise RevisionError(f"{spec!r} has no folder {within.as_posix()} (where this comparison was started)")
            out[name] = Side(name, spec, commits[name], here)
        yield out["base"], out["head"]
    finally:
        for path in made:
            assert repo is not None
            _git(repo, "worktree", "remove", "--force", str(path))
        if repo is not None:
            _git(repo, "worktree", "prune")
        shutil.rmtree(scratch, ignore_errors=True)
