"""Making a folder read-only for a test, and undoing it: a harness, not a test double.

Permission bits alone do not bind root, so where the test runs as root the folder is also
made immutable with `chattr +i` (ext4). `make_read_only` says whether it worked; a test
that gets False calls `undo_read_only` and skips.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_read_only(folder: Path) -> bool:
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("")
    except OSError:
        return True
    probe.unlink()
    # root ignores permission bits; the immutable attribute binds root too (ext4).
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def undo_read_only(folder: Path) -> None:
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)
