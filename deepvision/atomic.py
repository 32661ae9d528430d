"""Atomic file replacement, the one way deepvision writes a file others may be reading.

Write to a temp file in the target's folder, fsync, `os.replace`: a reader sees the old file or
the new one, never half of one. The temp file gets the mode any other new file would get under
the process umask (mkstemp's 0600 would hide an index written by cron from a service running as
another user).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

TMP_SUFFIX = ".tmp"


@cache
def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    return 0o666 & ~_umask()


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp_name)` fills a temp file beside `path`, which then replaces `path`.
    OSError (ENOSPC, EROFS, ...) propagates; the temp file is removed either way."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
