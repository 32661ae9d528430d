"""Handing out indexed files: re-checked at the moment of serving, streamed, never read whole.

A request names a file only by its catalog id. Between `index` and this request the file may
have been replaced by a link to /etc/passwd, by a FIFO, or by other content; so the file is
opened (without following a final link, without blocking on a FIFO) and the open descriptor
is checked: a regular file, inside a root the index records after every link is resolved,
with the size and modification time the catalog has. The response then streams from that
very descriptor (its /proc/self/fd name), so nothing can be swapped in after the check.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from deepvision.store.catalog import FileRow

THUMB = 256  # px, the long side of a thumbnail
THUMB_CACHE = 2048  # thumbnails kept (~20 KB each: ~40 MB at most)


class RefusedError(Exception):
    """The indexed file cannot be served now: status 404 (gone) or 410 (not what was indexed)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Opened:
    """An indexed file, open and checked; `close` it (the response does, once sent)."""

    fd: int
    path: str  # the indexed path (for the media type)
    real: str  # where it is, links resolved
    st: os.stat_result

    @property
    def name(self) -> str:
        """A name that opens this descriptor's file again: the checked file, whatever has
        happened to its path since."""
        proc = f"/proc/self/fd/{self.fd}"
        return proc if os.path.exists(proc) else self.real

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def open_indexed(row: FileRow, roots: list[str]) -> Opened:
    """Open an indexed file for serving, or raise RefusedError with the reason."""
    real = os.path.realpath(row.path)
    if not _inside(real, roots):
        raise RefusedError(410, "outside-index", "the indexed file now leads outside the indexed "
                      "folders (a link?): it is not served")
    fd = _open(real)
    try:
        st = os.fstat(fd)
        _check(st, row, _fd_path(fd) or real, roots)
    except RefusedError:
        os.close(fd)
        raise
    return Opened(fd, row.path, real, st)


def _open(real: str) -> int:
    # O_NOFOLLOW: a link swapped in after realpath is refused; O_NONBLOCK: a FIFO does not hang.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        return os.open(real, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RefusedError(404, "not-found", "the indexed file is gone; run `deepvision index` to "
                      "update the index") from None
    except OSError as exc:
        raise RefusedError(410, "changed", f"the indexed file cannot be opened now "
                      f"({exc.strerror}); it is not served") from None


def _check(st: os.stat_result, row: FileRow, where: str, roots: list[str]) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise RefusedError(410, "changed", "the indexed file is no longer a regular file")
    if not _inside(where, roots):  # a folder on the way was swapped for a link meanwhile
        raise RefusedError(410, "outside-index", "the indexed file now lies outside the indexed "
                      "folders: it is not served")
    if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
        raise RefusedError(410, "changed", "the file changed since it was indexed (size or "
                      "modification time); run `deepvision index` to update the index")


def _fd_path(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the realpath check before opening stands alone
        return None


def _inside(path: str, roots: list[str]) -> bool:
    for root in roots:
        real_root = os.path.realpath(root)
        with contextlib.suppress(ValueError):
            if os.path.commonpath([path, real_root]) == real_root:
                return True
    return False


def read_opened(opened: Opened, limit: int) -> bytes:
    """At most `limit` bytes of an opened file (a thumbnail's source), from its descriptor."""
    with os.fdopen(os.dup(opened.fd), "rb") as f:
        f.seek(0)
        return f.read(limit)


class ThumbCache:
    """JPEG thumbnails by (path, size, mtime), least recently used out; request threads share it,
    so every change holds the lock."""

    def __init__(self, capacity: int = THUMB_CACHE) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int], make: Callable[[], bytes]) -> bytes:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        data = make()  # outside the lock: one slow decode must not hold up the others
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return data

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def jpeg(image: object, quality: int = 82) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)  # type: ignore[attr-defined]
    return buf.getvalue()
