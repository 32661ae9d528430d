"""Decode workers: files -> Chunks of model-sized uint8 crops (or JPEG bytes for the device).

A worker process reads a few files per task, so that every worker stays busy even when a batch
is a handful of 12-megapixel photos. With a device decoder, a JPEG it can take leaves the worker
as bytes; anything else is decoded there by Pillow (JPEG draft mode) to the model's crop.
A video is a task of its own (pipeline/video.py samples it on the CPU): its kept frames leave
the worker as crops sharing its position, each with its time.
Failures travel with the images: every input position comes back once, as pixels or a failure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from deepvision.pipeline.decode import DecodeError, pil_crop, read_file
from deepvision.pipeline.discover import looks_like_video
from deepvision.pipeline.gpudecode import JpegHeader, device_jpeg_header
from deepvision.pipeline.transforms import Preprocess
from deepvision.pipeline.video import VideoOptions, sample_video
from deepvision.types import Failure

if TYPE_CHECKING:
    import torch

# Files per worker task. Pillow decoding costs milliseconds per file, so small tasks keep every
# worker busy; passing bytes on is cheap per file, so those tasks are larger (fewer transfers).
PILLOW_CHUNK = 8
BYTES_CHUNK = 32


@dataclass(frozen=True)
class Chunk:
    """What a decode worker returns for a few consecutive files (positions in the input)."""

    failures: list[tuple[int, Failure]] = field(default_factory=list)
    decoded: list[int] = field(default_factory=list)  # decoded in the worker (a video: repeated)
    pixels: Any = None  # torch uint8 (len(decoded), 3, crop, crop)
    times: list[float | None] | None = None  # a frame's time per decoded crop; None: no frames
    sides: list[int] = field(default_factory=list)  # per decoded crop: transforms.Crop.side
    encoded: list[int] = field(default_factory=list)  # JPEGs left for the device decoder
    blob: Any = None  # torch uint8: their bytes end to end, one shared-memory transfer
    offsets: list[int] = field(default_factory=list)  # encoded[i] is blob[offsets[i]:[i+1]]
    headers: list[JpegHeader] = field(default_factory=list)

    def pin_memory(self, *_: object) -> Chunk:
        """Called by the DataLoader's pinning thread: only the pixels go to the GPU by copy."""
        return self if self.pixels is None else replace(self, pixels=self.pixels.pin_memory())


def tasks(paths: Sequence[str], size: int, video: VideoOptions | None) -> list[list[int]]:
    """Positions per worker task: `size` consecutive images, or one video alone (its frames
    are many crops; one per task bounds what a worker holds and hands over)."""
    out: list[list[int]] = []
    images: list[int] = []
    for pos, path in enumerate(paths):
        if video is not None and looks_like_video(path):
            out.append([pos])
            continue
        images.append(pos)
        if len(images) == size:
            out.append(images)
            images = []
    return [*out, images] if images else out


class FileChunks:
    """torch Dataset over file paths: item k -> the Chunk of the positions in task k
    (default: paths[k*size:(k+1)*size]).

    jpeg_bytes: pass JPEGs a device decoder can take on as bytes instead of decoding them.
    video: how video files are sampled; None: they are decoded as images (and fail so)."""

    def __init__(self, paths: Sequence[str], pre: Preprocess, max_megapixels: float,
                 size: int, jpeg_bytes: bool = False, video: VideoOptions | None = None,
                 plan: list[list[int]] | None = None) -> None:
        self.paths = paths
        self.pre = pre
        self.max_megapixels = max_megapixels
        self.size = size
        self.jpeg_bytes = jpeg_bytes
        self.video = video
        self.plan = plan if plan is not None else tasks(paths, size, None)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int) -> Chunk:
        import torch

        pillow = PillowRun(self.pre, self.max_megapixels, self.video)
        encoded: list[int] = []
        blobs: list[bytes] = []
        headers: list[JpegHeader] = []
        for pos in self.plan[k]:
            path = self.paths[pos]
            if self.video is not None and looks_like_video(path):
                pillow.add_video(pos, path)
                continue
            try:
                data = read_file(path, self.max_megapixels) if self.jpeg_bytes else None
                header = (device_jpeg_header(data, self.max_megapixels, self.pre) if data
                          else None)
            except DecodeError as exc:
                pillow.fail(pos, path, exc)
                continue
            if header is None:
                pillow.add(pos, path, data)
                continue
            assert data is not None  # a header is only read from bytes
            encoded.append(pos)
            blobs.append(data)
            headers.append(header)
        offsets = np.cumsum([0, *map(len, blobs)]).tolist()
        blob = torch.frombuffer(bytearray().join(blobs), dtype=torch.uint8) if blobs else None
        return pillow.chunk(encoded=encoded, blob=blob, offsets=offsets, headers=headers)


@dataclass
class PillowRun:
    """Pillow's road for a run of files: a crop for each file it decodes, a failure (with the
    reason) for each it cannot. Used by the workers and for JPEGs a device decoder rejected."""

    pre: Preprocess
    max_megapixels: float
    video: VideoOptions | None = None
    decoded: list[int] = field(default_factory=list)
    crops: list[Any] = field(default_factory=list)
    failures: list[tuple[int, Failure]] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)

    def add(self, pos: int, path: str, data: bytes | None = None) -> None:
        try:
            crop = pil_crop(path, self.pre, self.max_megapixels, data)
        except DecodeError as exc:
            self.fail(pos, path, exc)
            return
        self.crops.append(crop.pixels)
        self.sides.append(crop.side)
        self.decoded.append(pos)
        self.times.append(None)

    def add_video(self, pos: int, path: str) -> None:
        assert self.video is not None
        try:
            sampled = sample_video(path, self.pre, self.video, self.max_megapixels)
        except DecodeError as exc:
            self.fail(pos, path, exc)
            return
        self.crops.extend(sampled.crops)
        self.sides.extend(sampled.sides)
        self.decoded.extend([pos] * len(sampled.crops))
        self.times.extend(sampled.times)

    def fail(self, pos: int, path: str, exc: DecodeError) -> None:
        self.failures.append((pos, Failure(path, exc.reason, exc.message)))

    def chunk(self, **device_part: Any) -> Chunk:
        import torch

        pixels = torch.stack(self.crops) if self.crops else None
        times = self.times if any(t is not None for t in self.times) else None
        return Chunk(self.failures, self.decoded, pixels, times, self.sides, **device_part)


def _keep(chunk: Chunk) -> Chunk:
    return chunk  # collate_fn: a Chunk is already a batch


def default_workers(device: torch.device | None = None) -> int:
    """Decode processes: one per core, at most 8 on the CPU (the network needs the cores too);
    on CUDA at most 16, leaving a core to the process that feeds the GPU."""
    cores = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        return max(1, min(16, cores - 1))
    return min(8, cores)


def decode_loader(paths: Sequence[str], pre: Preprocess, device: torch.device,
                  max_megapixels: float, workers: int, jpeg_bytes: bool,
                  chunk_size: int | None = None, start_method: str | None = None,
                  video: VideoOptions | None = None) -> Any:
    """A DataLoader of Chunks over `paths`; workers < 0: default_workers(device); chunk_size:
    files per worker task (default PILLOW_CHUNK, or BYTES_CHUNK for JPEG bytes); start_method:
    how worker processes start (None: the platform's default, fork on Linux); video: how
    video files are sampled (None: not at all)."""
    from torch.utils.data import DataLoader

    size = chunk_size or (BYTES_CHUNK if jpeg_bytes else PILLOW_CHUNK)
    chunks = FileChunks(paths, pre, max_megapixels, size, jpeg_bytes, video,
                        tasks(paths, size, video))
    workers = default_workers(device) if workers < 0 else workers
    workers = min(workers, len(chunks))
    # FileChunks is a map-style dataset by protocol (__len__, __getitem__), and with
    # batch_size=None the collate function gets one Chunk, not a list: the stubs know neither.
    return DataLoader(chunks, batch_size=None,  # type: ignore[arg-type]
                      collate_fn=_keep, num_workers=workers,  # type: ignore[arg-type]
                      pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None,  # bounded read-ahead
                      multiprocessing_context=start_method if workers else None)
