"""The batched extraction loop: decode workers, a device decode stage, the network.

One image's road: a worker process reads the file, a few files per task so that every worker
stays busy even when a batch is a handful of 12-megapixel photos. With a device decoder (CUDA),
a JPEG it can take leaves the worker as bytes; anything else is decoded there by Pillow (JPEG
draft mode) to the model's uint8 crop. A feeder thread in this process decodes the JPEG bytes in
batches on the device, on a CUDA stream of its own, and moves the Pillow crops to the device;
the network runs on the default stream, so decoding the next batch overlaps the network on this
one. Failures travel with the images, so paths and vectors can never drift apart: every input
position comes back exactly once, as a vector or as a failure, though not in input order.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from deepvision.decode import DEFAULT_MAX_MEGAPIXELS, DecodeError, load_rgb, read_file
from deepvision.devicedecode import (
    DeviceDecoder,
    JpegHeader,
    device_jpeg_header,
    make_decoder,
    orient,
    resize_crop,
    resize_crop_grouped,
)
from deepvision.discover import Failure
from deepvision.models import LoadedModel, Preprocess

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# Files per worker task. Pillow decoding costs milliseconds per file, so small tasks keep every
# worker busy; passing bytes on is cheap per file, so those tasks are larger (fewer transfers).
PILLOW_CHUNK = 8
BYTES_CHUNK = 32


@dataclass(frozen=True)
class EmbedOptions:
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    batch_size: int = 0  # 0: from free memory on CUDA, 32 on CPU
    workers: int = -1  # -1: see default_workers
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    compile: bool = False  # torch.compile the network (index/rebuild)
    decoder: str = "auto"  # auto | pil | torchvision | nvimgcodec (devicedecode.DECODERS)


@dataclass(frozen=True)
class EmbeddedBatch:
    """Items are positions in the input sequence; vectors[i] belongs to items[i]."""

    items: list[int]
    vectors: np.ndarray  # float32 (len(items), dim), L2-normalised
    failures: list[tuple[int, Failure]]


@dataclass(frozen=True)
class Chunk:
    """What a decode worker returns for a few consecutive files (positions in the input)."""

    failures: list[tuple[int, Failure]] = field(default_factory=list)
    decoded: list[int] = field(default_factory=list)  # decoded by Pillow in the worker
    pixels: Any = None  # torch uint8 (len(decoded), 3, crop, crop)
    encoded: list[int] = field(default_factory=list)  # JPEGs left for the device decoder
    blob: Any = None  # torch uint8: their bytes end to end, one shared-memory transfer
    offsets: list[int] = field(default_factory=list)  # encoded[i] is blob[offsets[i]:[i+1]]
    headers: list[JpegHeader] = field(default_factory=list)

    def pin_memory(self, *_: object) -> Chunk:
        """Called by the DataLoader's pinning thread: only the pixels go to the GPU by copy."""
        return self if self.pixels is None else replace(self, pixels=self.pixels.pin_memory())


@dataclass(frozen=True)
class Piece:
    """What the feeder hands to the network loop: crops on the device, and failures."""

    items: list[int]
    pixels: Any  # torch uint8 (len(items), 3, crop, crop) on the device, None if no items
    failures: list[tuple[int, Failure]]
    ready: Any = None  # torch.cuda.Event recorded after the pixels were written


def pick_device(requested: str) -> torch.device:
    import torch

    from deepvision.errors import UsageError

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available; use --device cpu")
    return device


# JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale by dropping DCT coefficients, a different
# low-pass filter than the antialiased resize after a full decode. Drafting to twice the resize
# target leaves the filtering to the resize: on the shipped photos at 1x, 2x and 4x size, the
# embedding's cosine to a full decode is >= 0.998 (>= 0.966 when drafting to 1x, on grass
# texture), and a 4032x3024 photo still decodes in 11 ms instead of 99 ms (9 ms at 1x).
DRAFT_HEADROOM = 2


def pil_pixels(path: str, pre: Preprocess, max_megapixels: float,
               data: bytes | None = None) -> torch.Tensor:
    """Pillow's road: file -> upright RGB (draft mode) -> uint8 (3, crop, crop).
    Raises DecodeError."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    image = load_rgb(path, max_megapixels, DRAFT_HEADROOM * pre.resize, data=data)
    return resize_crop(pil_to_tensor(image), pre)


class FileChunks:
    """torch Dataset over file paths: item k -> the Chunk of paths[k*size:(k+1)*size].

    jpeg_bytes: pass JPEGs a device decoder can take on as bytes instead of decoding them."""

    def __init__(self, paths: Sequence[str], pre: Preprocess, max_megapixels: float,
                 size: int, jpeg_bytes: bool = False) -> None:
        self.paths = paths
        self.pre = pre
        self.max_megapixels = max_megapixels
        self.size = size
        self.jpeg_bytes = jpeg_bytes

    def __len__(self) -> int:
        return -(-len(self.paths) // self.size)

    def __getitem__(self, k: int) -> Chunk:
        import torch

        pillow = _PillowRun(self.pre, self.max_megapixels)
        encoded, blobs, headers = [], [], []
        for pos in range(k * self.size, min(len(self.paths), (k + 1) * self.size)):
            path = self.paths[pos]
            try:
                data = read_file(path) if self.jpeg_bytes else None
                header = device_jpeg_header(data, self.max_megapixels) if data else None
            except DecodeError as exc:
                pillow.fail(pos, path, exc)
                continue
            if header is None:
                pillow.add(pos, path, data)
                continue
            encoded.append(pos)
            blobs.append(data)
            headers.append(header)
        offsets = np.cumsum([0, *map(len, blobs)]).tolist()
        blob = torch.frombuffer(bytearray().join(blobs), dtype=torch.uint8) if blobs else None
        return pillow.chunk(encoded=encoded, blob=blob, offsets=offsets, headers=headers)


@dataclass
class _PillowRun:
    """Pillow's road for a run of files: a crop for each file it decodes, a failure (with the
    reason) for each it cannot. Used by the workers and for JPEGs a device decoder rejected."""

    pre: Preprocess
    max_megapixels: float
    decoded: list[int] = field(default_factory=list)
    crops: list[Any] = field(default_factory=list)
    failures: list[tuple[int, Failure]] = field(default_factory=list)

    def add(self, pos: int, path: str, data: bytes | None = None) -> None:
        try:
            self.crops.append(pil_pixels(path, self.pre, self.max_megapixels, data))
        except DecodeError as exc:
            self.fail(pos, path, exc)
            return
        self.decoded.append(pos)

    def fail(self, pos: int, path: str, exc: DecodeError) -> None:
        self.failures.append((pos, Failure(path, exc.reason, exc.message)))

    def chunk(self, **device_part: Any) -> Chunk:
        import torch

        pixels = torch.stack(self.crops) if self.crops else None
        return Chunk(self.failures, self.decoded, pixels, **device_part)


def _keep(chunk: Chunk) -> Chunk:
    return chunk  # collate_fn: a Chunk is already a batch


def default_workers(device: torch.device | None = None) -> int:
    """Decode processes: one per core, at most 8 on the CPU (the network needs the cores too);
    on CUDA at most 16, leaving a core to the process that feeds the GPU."""
    cores = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        return max(1, min(16, cores - 1))
    return min(8, cores)


def decode_loader(paths: Sequence[str], pre: Preprocess, device: torch.device, opts: EmbedOptions,
            jpeg_bytes: bool) -> Any:
    from torch.utils.data import DataLoader

    size = BYTES_CHUNK if jpeg_bytes else PILLOW_CHUNK
    chunks = FileChunks(paths, pre, opts.max_megapixels, size, jpeg_bytes)
    workers = default_workers(device) if opts.workers < 0 else opts.workers
    workers = min(workers, len(chunks))
    return DataLoader(chunks, batch_size=None, collate_fn=_keep, num_workers=workers,
                      pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None)  # bounded read-ahead


def embed_paths(model: LoadedModel, paths: Sequence[str], device: torch.device,
                opts: EmbedOptions) -> Iterator[EmbeddedBatch]:
    """Decode and embed `paths` in batches, with the decoder opts.decoder picks. Every position
    comes back once, in items or in failures; batches are not in input order."""
    if paths:
        yield from embed_with(model, paths, device, opts, make_decoder(opts.decoder, device))


def embed_with(model: LoadedModel, paths: Sequence[str], device: torch.device,
               opts: EmbedOptions, decoder: DeviceDecoder | None) -> Iterator[EmbeddedBatch]:
    """embed_paths with a given device decoder (None: Pillow in the workers decodes all)."""
    if not paths:
        return
    batch = opts.batch_size or default_batch_size(device)
    loader = decode_loader(paths, model.preprocess, device, opts, jpeg_bytes=decoder is not None)
    feeder = Feeder(decoder, paths, model.preprocess, device, opts.max_megapixels, batch,
                    default_decode_bytes(device))
    # The worker processes are forked here, on the caller's thread, before the feeder thread
    # exists: forking while another thread runs risks copying a lock it holds.
    chunks = iter(loader)
    try:
        yield from _network_loop(model, paths, device, batch,
                                 background(feeder.pieces(chunks), depth=2))
    finally:
        del chunks  # the last reference: shuts the workers down, also when stopped early


def _network_loop(model: LoadedModel, paths: Sequence[str], device: torch.device, batch: int,
                  pieces: Iterator[Piece]) -> Iterator[EmbeddedBatch]:
    """Pieces -> network batches of `batch` images (the last one smaller); failures at once."""
    cap = [batch]  # images per forward pass; halved by each out-of-memory error
    held: list[tuple[list[int], torch.Tensor]] = []
    for piece in pieces:
        if piece.failures:
            yield EmbeddedBatch([], np.zeros((0, model.spec.dim), np.float32), piece.failures)
        if piece.items:
            held.append((piece.items, _arrived(piece, device)))
        while sum(len(items) for items, _ in held) >= batch:
            items, pixels, held = _take(held, batch)
            yield _embed_batch(model, paths, items, pixels, device, cap)
    if held:
        items, pixels, _ = _take(held, None)
        yield _embed_batch(model, paths, items, pixels, device, cap)


def _arrived(piece: Piece, device: torch.device) -> torch.Tensor:
    """The piece's pixels, safe to use on this thread's stream: wait for the feeder's stream,
    and tell the caching allocator they are used here (else it could reuse their memory for the
    feeder's next batch while the network still reads them)."""
    if piece.ready is not None:
        import torch

        stream = torch.cuda.current_stream(device)
        stream.wait_event(piece.ready)
        piece.pixels.record_stream(stream)
    return piece.pixels


def _take(held: list[tuple[list[int], torch.Tensor]], n: int | None
          ) -> tuple[list[int], torch.Tensor, list[tuple[list[int], torch.Tensor]]]:
    """The first n held images (all if n is None) as one batch, and what is left."""
    import torch

    items = [i for part, _ in held for i in part]
    pixels = held[0][1] if len(held) == 1 else torch.cat([p for _, p in held])
    if n is None or n >= len(items):
        return items, pixels, []
    return items[:n], pixels[:n], [(items[n:], pixels[n:])]


def _embed_batch(model: LoadedModel, paths: Sequence[str], items: list[int],
                 pixels: torch.Tensor, device: torch.device, cap: list[int]) -> EmbeddedBatch:
    vectors = _embed_with_backoff(model, pixels, device, cap)
    # A NaN/inf feature (fp16 overflow, a broken weights file) would rank as FAISS id -1:
    # report the image instead of indexing garbage.
    finite = np.isfinite(vectors).all(axis=1)
    bad = [(items[i], Failure(paths[items[i]], "corrupt",
                              "the model produced non-finite features for this image"))
           for i in np.flatnonzero(~finite)]
    return EmbeddedBatch([i for i, ok in zip(items, finite, strict=True) if ok],
                         vectors[finite], bad)


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
        return Piece(chunk.decoded, pixels, chunk.failures, self._done())

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
                yield Piece(decoded, pixels, [], ready)
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
        pillow = _PillowRun(self.pre, self.max_megapixels)
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


def default_batch_size(device: torch.device) -> int:
    """32 on the CPU; on CUDA from free memory (~24 MB per image in flight for a ResNet50-class
    network at 224 px with autocast), a power of two between 16 and 512. The OOM back-off
    below catches a wrong guess."""
    import torch

    if device.type != "cuda":
        return 32
    free, _ = torch.cuda.mem_get_info(device)
    fit = max(16, min(512, int(free * 0.6) // (24 << 20)))
    return 1 << (fit.bit_length() - 1)


def default_decode_bytes(device: torch.device) -> int:
    """Decoded pixels per device decode call: a tenth of free GPU memory, 256 MiB to 2 GiB
    (36 MB per 12-megapixel photo: 2 GiB is ~58 of them, plenty to fill the decoder)."""
    if device.type != "cuda":
        return 256 << 20
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return max(256 << 20, min(2 << 30, free // 10))


def _embed_with_backoff(model: LoadedModel, pixels: torch.Tensor, device: torch.device,
                        cap: list[int]) -> np.ndarray:
    """Embed in slices of at most cap[0] images; on CUDA out-of-memory, halve the cap and redo
    that slice. Every image is embedded exactly once, in order."""
    import torch

    out, start = [], 0
    while start < len(pixels):
        n = min(cap[0], len(pixels) - start)
        try:
            out.append(embed_pixels(model, pixels[start:start + n], device))
        except torch.cuda.OutOfMemoryError:
            if n == 1:
                raise
            cap[0] = n // 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        start += n
    return np.concatenate(out)


def embed_pixels(model: LoadedModel, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """The one inference function: eval, inference_mode, autocast on CUDA, L2-normalise."""
    import torch

    x = pixels.to(device, non_blocking=True)
    amp = device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
        feats = model.network(x)
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats.cpu().numpy().astype(np.float32, copy=False)
