"""The network step: uint8 crops on the device -> L2-normalised descriptors, in batches.

One inference function (eval, inference_mode, autocast on CUDA, channels-last, normalise), a
CUDA out-of-memory back-off that embeds every image exactly once, and the loop that gathers the
feeder's pieces into network batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepvision.models.registry import LoadedModel
from deepvision.types import EmbeddedBatch, Failure, Reason

if TYPE_CHECKING:
    import torch

    from deepvision.models.descriptor import QueryViews
    from deepvision.pipeline.feeder import Piece

# What embeds one batch of uint8 crops: `embed_pixels`, or a stand-in a test injects.
NetworkStep = Callable[[LoadedModel, "torch.Tensor", "torch.device"], np.ndarray]
# What embeds a batch of texts (CLIP family): `embed_text`, or a test's stand-in.
TextStep = Callable[[LoadedModel, Sequence[str], "torch.device"], np.ndarray]


def device_available(kind: str) -> bool:
    """Whether torch can run on `kind` ("cuda" or "mps") here."""
    import torch

    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return kind == "cpu"


def pick_device(requested: str,
                available: Callable[[str], bool] = device_available) -> torch.device:
    """auto: CUDA first, then Apple's MPS, then the CPU. An explicit device must be there.
    available: which device kinds exist (tests pass their own)."""
    import torch

    from deepvision.errors import UsageError

    if requested == "auto":
        return torch.device(next(k for k in ("cuda", "mps", "cpu") if available(k)))
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"unknown device {requested!r}; use auto, cpu, cuda or mps") from None
    if device.type in ("cuda", "mps") and not available(device.type):
        name = "CUDA" if device.type == "cuda" else "Apple MPS"
        raise UsageError(f"--device {requested} was asked for but {name} is not available; "
                         "use --device cpu")
    return device


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


class Network:
    """A loaded model on its device, embedding uint8 crops in batches of up to `batch` images.
    A CUDA out-of-memory error halves the batch for the rest of the run and redoes that slice,
    so every image is embedded exactly once, in order. `step` is the inference function."""

    def __init__(self, model: LoadedModel, device: torch.device, batch: int,
                 step: NetworkStep | None = None) -> None:
        self.model = model
        self.device = device
        self.batch = batch
        self.cap = batch  # images per forward pass; halved by each out-of-memory error
        self.step = step or embed_pixels

    @property
    def dim(self) -> int:
        return self.model.spec.dim

    def embed(self, pixels: torch.Tensor) -> np.ndarray:

        out, start = [], 0
        while start < len(pixels):
            n = min(self.cap, len(pixels) - start)
            try:
                out.append(self.step(self.model, pixels[start:start + n], self.device))
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
                if n == 1 or not out_of_memory(exc):
                    raise
                self.cap = n // 2
                _release_cached(self.device)
                continue
            start += n
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def batches(self, paths: Sequence[str], pieces: Iterator[Piece],
                views: QueryViews | None = None) -> Iterator[EmbeddedBatch]:
        """Pieces -> network batches of `batch` images (the last one smaller); failures at once.
        A video's frames (one piece) are never split: a batch grows to hold all of them, and
        `embed` still runs at most `cap` crops per forward pass. views: also embed each crop's
        query views (EmbeddedBatch.query_views)."""
        held: list[Held] = []
        for piece in pieces:
            if piece.failures:
                yield EmbeddedBatch([], np.zeros((0, self.dim), np.float32), piece.failures)
            if piece.items:
                held.append(Held(piece.items, _arrived(piece, self.device),
                                 piece.times or [None] * len(piece.items), piece.sides))
            while sum(len(h.items) for h in held) >= self.batch:
                batch, held = _take(held, self.batch)
                yield self.checked(paths, batch.items, batch.pixels, batch.times, views,
                                   batch.sides)
        if held:
            batch, _ = _take(held, None)
            yield self.checked(paths, batch.items, batch.pixels, batch.times, views, batch.sides)

    def checked(self, paths: Sequence[str], items: list[int], pixels: torch.Tensor,
                times: list[float | None] | None = None, views: QueryViews | None = None,
                sides: Sequence[int] = ()) -> EmbeddedBatch:
        """Embed one batch (views: also its query views; sides: each crop's Crop.side, which
        the zoom view needs). A NaN/inf feature (fp16 overflow, a broken weights file) would
        rank as FAISS id -1: report the image instead of indexing garbage."""
        vectors = self.embed(pixels)
        extra = (self.embed_views(pixels, views, sides, vectors)
                 if views is not None and views.count else None)
        finite = np.isfinite(vectors).all(axis=1)
        if extra is not None:
            finite &= np.isfinite(extra).all(axis=(1, 2))
        bad = [(items[i], Failure(paths[items[i]], Reason.CORRUPT,
                                  "the model produced non-finite features for this image"))
               for i in np.flatnonzero(~finite)]
        kept = [i for i, ok in zip(items, finite, strict=True) if ok]
        frames = None
        if times is not None and any(t is not None for t in times):
            frames = [t for t, ok in zip(times, finite, strict=True) if ok]
        return EmbeddedBatch(kept, vectors[finite], bad, frames,
                             None if extra is None else extra[finite])

    def embed_views(self, pixels: torch.Tensor, views: QueryViews, sides: Sequence[int],
                    plain: np.ndarray) -> np.ndarray:
        """(N, views.count, dim): the crops turned by 90, 180 and 270° (a crop is square, so a
        turned batch has the batch's shape), then their zoomed centres, as `views` asks. A crop
        whose picture is too small to zoom into (QueryViews.zooms) gets its own `plain` vector
        in the zoom's place: a view that changes no score, and no network pass."""
        import torch

        from deepvision.pipeline.transforms import centre_zoom

        made = [self.embed(torch.rot90(pixels, k, (2, 3))) for k in (1, 2, 3)] \
            if views.turns else []
        if views.zoom:
            if len(sides) != len(pixels):
                raise ValueError("the zoom view needs each crop's Crop.side")
            size = self.model.preprocess.crop
            rows = [i for i, side in enumerate(sides) if views.zooms(side, size)]
            zoomed = plain.copy()
            if rows:
                zoomed[rows] = self.embed(centre_zoom(pixels[rows], views.zoom,
                                                      self.model.preprocess))
            made.append(zoomed)
        return np.stack(made, axis=1)


def out_of_memory(exc: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; MPS a RuntimeError that says so."""
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _release_cached(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def embed_pixels(model: LoadedModel, pixels: torch.Tensor, device: torch.device) -> np.ndarray:
    """The one inference function: eval, inference_mode, autocast on CUDA (bf16 where the GPU
    has it) and MPS (fp16), L2-normalise in fp32."""
    import torch

    x = pixels.to(device, non_blocking=True)
    amp = device.type in ("cuda", "mps")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float16
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
        feats = model.network(x)
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats.cpu().numpy().astype(np.float32, copy=False)


def embed_text(model: LoadedModel, texts: Sequence[str], device: torch.device) -> np.ndarray:
    """The text side of the one inference function: the model's text tower, L2-normalised."""
    import torch

    if model.text is None:
        from deepvision.errors import UsageError

        raise UsageError(f"model {model.spec.name} has no text encoder")
    amp = device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
        feats = model.text(texts, device)
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats.cpu().numpy().astype(np.float32, copy=False)


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


@dataclass(frozen=True)
class Held:
    """Crops on the device waiting for a network batch, and what belongs to each of them."""

    items: list[int]
    pixels: torch.Tensor
    times: list[float | None]  # a video frame's time, None for a picture
    sides: list[int]  # transforms.Crop.side


def _take(held: list[Held], n: int | None) -> tuple[Held, list[Held]]:
    """The first n held images (all if n is None) as one batch, and what is left; n grows to
    the end of a video's frames (consecutive items of one position)."""
    import torch

    items = [i for h in held for i in h.items]
    times = [t for h in held for t in h.times]
    sides = [side for h in held for side in h.sides]
    pixels = held[0].pixels if len(held) == 1 else torch.cat([h.pixels for h in held])
    while n is not None and 0 < n < len(items) and items[n] == items[n - 1]:
        n += 1
    if n is None or n >= len(items):
        return Held(items, pixels, times, sides), []
    return (Held(items[:n], pixels[:n], times[:n], sides[:n]),
            [Held(items[n:], pixels[n:], times[n:], sides[n:])])
