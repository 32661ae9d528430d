"""The device decode stage: Chunks from the workers -> Pieces of uint8 crops on the device.

A feeder thread in the embedding process decodes the workers' JPEG bytes in batches on the
device, on a CUDA stream of its own, and moves the Pillow crops to the device; the network runs
on the default stream, so decoding the next batch overlaps the network on this one.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from deepvision.pipeline.gpudecode import DeviceDecoder, JpegHeader
from deepvision.pipeline.loader import Chunk, PillowRun
from deepvision.pipeline.transforms import Preprocess, orient, resize_crop_grouped
from deepvision.types import Failure

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Piece:
    """What the feeder hands to the network loop: crops on the device, and failures."""

    items: list[int]
    pixels: Any  # torch uint8 (len(items), 3, crop, crop) on the device, None if no items
    failures: list[tuple[int, Failure]]
    ready: Any = None  # torch.cuda.Event recorded after the pixels were written
    times: list[float | None] | None = None  # per item: a video frame's time; None: no frames
    sides: list[int] = field(default_factory=list)  # per item: transforms.Crop.side


Pending = tuple[int, "torch.Tensor", JpegHeader]  # position, file bytes, header


class Feeder:
    """Chunks from the workers -> Pieces of uint8 crops on the device.

    JPEG bytes are gathered across chunks and decoded in batches of up to `decode_batch` images
    and `decode_bytes` of decoded pixels; a CUDA out-of-memory error halves the decode batch;
    an image the device decoder rejects is decoded by Pillow here instead."""

    def __init__(self, decoder: DeviceDecoder | None, paths: Sequence[str], pre: Preprocess,
                 device: torch.device, max_megapixels: float, decode_batch: int,
                 decode_bytes: int) -> None:
        self.decoder = decoder
        self.paths = paths
        self.pre = pre
        self.device = device
        self.max_megapixels = max_megapixels
        self.decode_batch = decode_batch
        self.decode_bytes = decode_bytes
        self.stream: Any = None  # created on the thread that runs `pieces`

    def pieces(self, chunks: Iterable[Chunk]) -> Iterator[Piece]:
        import torch

        if self.device.type == "cuda":
            self.stream = torch.cuda.Stream(self.device)
        pending: list[Pending] = []
        size = 0
        for chunk in chunks:
            if chunk.failures or chunk.decoded:
                yield self._cpu_piece(chunk)
            for pos, header, lo, hi in zip(chunk.encoded, chunk.headers, chunk.offsets[:-1],
                                           chunk.offsets[1:], strict=True):
                pending.append((pos, chunk.blob[lo:hi], header))
                size += 3 * header.height * header.width
                if len(pending) >= self.decode_batch or size >= self.decode_bytes:
                    yield from self._decode(pending)
                    pending, size = [], 0
        if pending:
            yield from self._decode(pending)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        import torch

        if self.stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self.stream)

    def _done(self) -> Any:
        """An event after everything queued on the feeder's stream so far."""
        if self.stream is None:
            return None
        import torch

        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def _cpu_piece(self, chunk: Chunk) -> Piece:
        if not chunk.decoded:
            return Piece([], None, chunk.failures)
        with self._on_stream():
            pixels = chunk.pixels.to(self.device, non_blocking=True)
        return Piece(chunk.decoded, pixels, chunk.failures, self._done(), chunk.times,
                     chunk.sides)

    def _decode(self, pending: list[Pending]) -> Iterator[Piece]:
        import torch

        for start in range(0, len(pending), self.decode_batch):
            part = pending[start:start + self.decode_batch]
            try:
                decoded, pixels, rejected, ready = self._decode_part(part)
            except torch.cuda.OutOfMemoryError:
                yield from self._after_oom(pending[start:])
                return
            if decoded:
                sides = {pos: min(header.height, header.width) for pos, _, header in part}
                yield Piece(decoded, pixels, [], ready, sides=[sides[pos] for pos in decoded])
            if rejected:
                yield self._pillow(rejected)

    def _decode_part(self, part: list[Pending]
                     ) -> tuple[list[int], torch.Tensor | None, list[Pending], Any]:
        assert self.decoder is not None
        with self._on_stream():
            images = self.decoder.decode([data for _, data, _ in part])
            upright = [(pos, orient(image, header.orientation))
                       for (pos, _, header), image in zip(part, images, strict=True)
                       if image is not None]
            pixels = resize_crop_grouped([im for _, im in upright], self.pre) \
                if upright else None
            ready = self._done()
        if self.stream is not None:
            # The decoded images are released when this returns: the resize must have read
            # them first (nvImageCodec frees its buffers outside torch's stream-aware cache).
            self.stream.synchronize()
        rejected = [item for item, image in zip(part, images, strict=True) if image is None]
        return [pos for pos, _ in upright], pixels, rejected, ready

    def _after_oom(self, rest: list[Pending]) -> Iterator[Piece]:
        import torch

        torch.cuda.empty_cache()
        if self.decode_batch > 1:
            self.decode_batch //= 2
            yield from self._decode(rest)
        else:  # not even one image fits beside the network: Pillow decodes the rest
            yield self._pillow(rest)

    def _pillow(self, items: list[Pending]) -> Piece:
        """Images the device decoder rejected: Pillow decides (a decoded image, or the reason
        the file is broken, reported as on any other road), from the bytes already read."""
        pillow = PillowRun(self.pre, self.max_megapixels)
        for pos, data, _ in items:
            pillow.add(pos, self.paths[pos], data.numpy().tobytes())
        return self._cpu_piece(pillow.chunk())


class _Raised:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def background(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate `items` on a thread of its own, up to `depth` items ahead of the caller, so that
    decoding overlaps the network. Its exceptions are raised here; when the caller stops early
    (an error, Ctrl-C, a closed generator) the thread stops and closes `items`."""
    handoff: queue.Queue = queue.Queue(depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the caller, raised there
            put(_Raised(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # on this thread, which is the one running the generator

    thread = threading.Thread(target=run, name="deepvision-feeder", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=60)


def default_decode_bytes(device: torch.device) -> int:
    """Decoded pixels per device decode call: a tenth of free GPU memory, 256 MiB to 2 GiB
    (36 MB per 12-megapixel photo: 2 GiB is ~58 of them, plenty to fill the decoder)."""
    if device.type != "cuda":
        return 256 << 20
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return max(256 << 20, min(2 << 30, free // 10))


