"""The pictures of an HTML gallery (`--html`): thumbnails made from the files themselves.

output.html renders the page and reads no file; it asks a `Thumbnails` (this module's
FileThumbnails) for each tile's picture. A thumbnail is named by a hash of (path, size, mtime,
and for a video frame its time), so re-rendering reuses it and file names never reach an
attribute unescaped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from deepvision.atomic import atomic_write
from deepvision.pipeline.decode import DecodeError, load_rgb
from deepvision.pipeline.discover import looks_like_video
from deepvision.pipeline.video import frame_image

THUMB = 192  # px, long side

TileKey = tuple[str, float | None]  # a file, and for a video the time of the frame shown


class FileThumbnails:
    """output.html.Thumbnails from the files: images decoded (draft mode), videos' frames
    sampled, in parallel."""

    def is_video(self, path: str) -> bool:
        return looks_like_video(path)

    def make(self, keys: Sequence[TileKey], folder: Path) -> dict[TileKey, str | None]:
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            return dict(zip(keys, pool.map(partial(thumbnail, folder=folder), keys),
                            strict=True))


def thumbnail(key: TileKey, folder: Path) -> str | None:
    """Thumbnail file name inside `folder` for a (path, video time) pair, or None if the file
    is missing or cannot be decoded."""
    path, at = key
    try:
        st = os.stat(path)
    except OSError:
        return None
    frame = "" if at is None else f"\0{at:.3f}"
    name_key = os.fsencode(path) + f"\0{st.st_size}\0{st.st_mtime_ns}{frame}".encode()
    name = hashlib.blake2b(name_key, digest_size=10).hexdigest() + ".jpg"
    target = folder / name
    if target.exists():
        return name
    try:
        image = (load_rgb(path, draft_size=THUMB) if at is None
                 else frame_image(path, at, THUMB))
    except DecodeError:
        return None
    image.thumbnail((THUMB, THUMB))
    atomic_write(target, lambda tmp: image.save(tmp, "JPEG", quality=80))
    return name
