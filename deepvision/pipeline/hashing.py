"""Content hashes (xxh3-128) of changed files: what links renames and duplicates to a vector
without the model. Reads are bounded like every other read: regular files only."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from deepvision.types import Failure, FileRecord, Reason


@dataclass(frozen=True, slots=True)
class Hashed:
    record: FileRecord
    digest: str  # "" when the file could not be read
    failure: Failure | None = None


Hasher = Callable[[Sequence[FileRecord]], list[Hashed]]  # injectable (tests count calls)


def hash_files(files: Sequence[FileRecord]) -> list[Hashed]:
    """All of `files`, in order, in a thread pool: file reads and xxhash release the GIL."""
    if not files:
        return []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(hash_one, files))


def hash_one(rec: FileRecord) -> Hashed:
    import xxhash

    h = xxhash.xxh3_128()
    try:
        fd = os.open(rec.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped in since discovery
                return Hashed(rec, "", Failure(rec.path, Reason.SPECIAL_FILE,
                                               "not a regular file (a FIFO, device or socket)"))
            while block := f.read(1 << 20):
                h.update(block)
    except (FileNotFoundError, PermissionError) as exc:
        from deepvision.pipeline.decode import file_error  # the decoders' own wording

        err = file_error(exc)
        return Hashed(rec, "", Failure(rec.path, err.reason, err.message))
    except OSError as exc:
        return Hashed(rec, "", Failure(rec.path, Reason.IO_ERROR,
                                       f"read error: {exc.strerror}"))
    return Hashed(rec, h.hexdigest())
