"""How many pixels the service's decodes may hold at once, all requests together.

The per-image limit (--max-megapixels) bounds one decode; it does not bound twenty at once: 20
uploads of 119 megapixels took a service from 0.6 to 7.5 GB (issue #26). Each decode first
reads the image's header (cheap), works out what it will hold (a JPEG decodes at a reduced DCT
scale), and waits for that share of the budget; past a short wait the request is answered 503
with Retry-After instead of queueing without end. After a large decode the C heap is trimmed,
so the memory goes back to the system and does not stay at the peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

WAIT = 3.0  # seconds a decode may wait for its share before the request is answered 503
RETRY_AFTER = 2  # seconds, the 503's Retry-After
TRIM_AT = 8_000_000  # pixels: releasing a hold this large trims the heap (~24+ MB of RGB)


class BusyError(Exception):
    """The decode budget stayed spent for WAIT seconds."""

    def __init__(self, retry_after: int = RETRY_AFTER) -> None:
        super().__init__("the server is decoding other large images; retry shortly")
        self.retry_after = retry_after


class PixelBudget:
    """A counting budget: hold(n) waits until n more pixels fit under `total`. An image larger
    than the whole budget waits for all of it (so it decodes alone)."""

    def __init__(self, total: int, wait: float = WAIT) -> None:
        self.total = max(1, total)
        self.wait = wait
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = max(0, min(pixels, self.total))
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + need <= self.total, self.wait):
                raise BusyError()
            self.used += need
        try:
            yield
        finally:
            with self._cond:
                self.used -= need
                idle = self.used == 0
                self._cond.notify_all()
            if need >= TRIM_AT and idle:
                trim_heap()


def decode_cost(data: bytes, draft_size: int | None) -> int:
    """The pixels decoding `data` will hold: its size from the header, reduced as Pillow's
    draft mode reduces a JPEG (by 2, 4 or 8 while both sides stay >= draft_size). 0 when the
    header cannot be read: the decode then fails at once with its own reason."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height, kind = im.width, im.height, im.format
    except Exception:  # any unreadable header: the decoder reports why
        return 0
    scale = 1
    if kind == "JPEG" and draft_size:
        while scale < 8 and min(width, height) // (scale * 2) >= draft_size:
            scale *= 2
    return -(-width // scale) * -(-height // scale)


def trim_heap() -> None:
    """Give freed heap pages back to the system (glibc keeps them for reuse otherwise)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
