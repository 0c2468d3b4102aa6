"""Directories only the effective user can touch (tracer's runtime and cache directories).

A directory another user could write to, or a symlink planted where tracer keeps its files,
lets that user swap what tracer reads (cached offsets run as root) or where it connects (an
SSH control socket), so such a directory is not used: :func:`ours` says whether one is safe,
:func:`private_dir` makes one or refuses.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tracer.errors import EnvironmentProblem


def owned(st: os.stat_result) -> bool:
    """Ours alone: owned by the effective user, writable by no one else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def ours(d: Path) -> bool:
    """``d`` is a directory of ours alone, not a symlink to one."""
    try:
        st = d.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and owned(st)


def private_dir(d: Path, what: str) -> Path:
    """``d`` made if missing, 0700 and the effective user's; EnvironmentProblem (one line) if it
    is anyone else's, a symlink or not a directory, or cannot be made."""
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = d.lstat()
    except OSError as e:
        raise EnvironmentProblem(f"cannot make {what} {d}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory" if not stat.S_ISDIR(st.st_mode) \
            else f"owned by uid {st.st_uid}"
        raise EnvironmentProblem(f"{what} {d} is {kind}, not a private directory of uid {os.geteuid()}: "
                                 "remove it (or set XDG_RUNTIME_DIR)")
    if st.st_mode & 0o777 != 0o700:
        os.chmod(d, 0o700, follow_symlinks=False)  # one an older tracer made 0755: no one else's business
    return d
