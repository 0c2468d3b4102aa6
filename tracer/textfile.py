"""Small text inputs (topology, manifest, probe report, SA file), read safely: regular files
only, bounded in size, never blocking on a FIFO or reading a device forever. And small
private outputs, written atomically and owner-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tracer.errors import BadInput

LIMIT = 4 * 1024 * 1024  # far above any real topology, manifest or key file


def irregular(st: os.stat_result) -> str | None:
    """None for a regular file; else what it is, for a message (a FIFO blocks, a device never ends)."""
    if stat.S_ISREG(st.st_mode):
        return None
    return "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"


def read_text(path: str | os.PathLike[str], what: str, limit: int = LIMIT) -> str:
    """The file's text; BadInput (one line) when it is missing, not a regular file, too big or not UTF-8.
    FileNotFoundError is left to the caller, which knows what a missing file means there."""
    p = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise BadInput(f"{p}: cannot read {what} ({e.strerror})") from None
    # fstat before fdopen: fdopen itself refuses a directory with an OSError (not BadInput).
    try:
        st = os.fstat(fd)
        if (kind := irregular(st)) is not None:
            raise BadInput(f"{p}: {what} must be a regular file, this is {kind}")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise BadInput(f"{p}: cannot read {what} ({e.strerror})") from None
    if len(data) > limit:
        raise BadInput(f"{p}: {what} is larger than {limit // (1024 * 1024)} MiB; not a {what}?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{p}: {what} is not UTF-8 text (byte {e.start})") from None


def write_private(path: Path, text: str) -> None:
    """``text`` to ``path``, owner-only (0600), atomically: a reader never sees half a file. The
    temporary file is new and unguessable (O_EXCL, no symlink followed): nothing planted beside
    ``path`` is written through."""
    # os.urandom is what secrets.token_hex reads; importing secrets (hmac, hashlib) costs every replay ~3 ms
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # what read_text reads, whatever the locale
            f.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
