"""Where the host-wide store lives, and the checks that keep it the user's own.

The default is ``$XDG_RUNTIME_DIR/avatario`` (a per-user tmpfs on systemd machines), else
``<temp dir>/avatario-<uid>``; the folder is made 0700 and must be the user's own and closed
to others, and the file is made 0600 and must be the same. Another user who could write there
could spend or block this user's budget; so an unsafe place is refused (the caller falls back).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

FILE_NAME = "budget.sqlite3"


def default_path() -> Path:
    """The per-user file every process of this user on this machine shares."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "avatario" / FILE_NAME
    return Path(tempfile.gettempdir()) / f"avatario-{os.geteuid()}" / FILE_NAME


def _not_private(path: Path, info: os.stat_result, kind: str) -> str | None:
    """Why `info` (of `path`) is not this user's own private `kind`, or None."""
    if info.st_uid != os.geteuid():
        return f"the {kind} {path} belongs to uid {info.st_uid}, not to this user"
    if info.st_mode & 0o077:
        return (
            f"the {kind} {path} has permissions {stat.S_IMODE(info.st_mode):04o}; "
            f"only its owner may use it ({'0700' if kind == 'folder' else '0600'})"
        )
    return None


def private_folder(folder: Path) -> str | None:
    """Make `folder` (0700) if missing; why it is unsafe to use, or None."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder (a symbolic link or a file)"
    return _not_private(folder, info, "folder")


def private_file(path: Path) -> str | None:
    """Why the existing file at `path` is unsafe to use, or None."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file (a symbolic link or another kind)"
    return _not_private(path, info, "file")
