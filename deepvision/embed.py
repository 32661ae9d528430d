"""The batched extraction loop: DataLoader workers decode, the model embeds, vectors come out.

Failures travel through the same batches as images, so paths and vectors can never drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deepvision.decode import DEFAULT_MAX_MEGAPIXELS, DecodeError, load_rgb
from deepvision.discover import Failure
from deepvision.models import LoadedModel, Preprocess

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EmbedOptions:
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    batch_size: int = 0  # 0: 256 on CUDA, 32 on CPU
    workers: int = -1  # -1: one per core, at most 8
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    compile: bool = False  # torch.compile the network (index/rebuild)


@dataclass(frozen=True)
class EmbeddedBatch:
    """Items are positions in the input sequence; vectors[i] belongs to items[i]."""

    items: list[int]
    vectors: np.ndarray  # float32 (len(items), dim), L2-normalised
    failures: list[tuple[int, Failure]]


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


class ImageFiles:
    """torch Dataset over file paths: item -> (position, uint8 CHW tensor | None, failure)."""

    def __init__(self, paths: Sequence[str], pre: Preprocess, max_megapixels: float) -> None:
        self.paths = paths
        self.pre = pre
        self.max_megapixels = max_megapixels
        self._transform: Any = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, Failure | None]:
        path = self.paths[i]
        try:
            image = load_rgb(path, self.max_megapixels, draft_size=self.pre.resize)
        except DecodeError as exc:
            return i, None, Failure(path, exc.reason, exc.message)
        return i, self._tf()(image), None

    def _tf(self) -> Any:
        if self._transform is None:  # built in the worker, after fork
            self._transform = pixel_transform(self.pre)
        return self._transform


def pixel_transform(pre: Preprocess) -> Any:
    """PIL RGB -> uint8 CHW tensor: resize the short side (aspect kept), centre crop."""
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose([
        v2.PILToTensor(),
        v2.Resize(pre.resize, interpolation=InterpolationMode(pre.interpolation), antialias=True),
        v2.CenterCrop(pre.crop),
    ])


def _collate(items: list[tuple[int, Any, Failure | None]]) -> tuple[list[int], Any, list]:
    import torch

    good = [(i, t) for i, t, f in items if f is None]
    bad = [(i, f) for i, _, f in items if f is not None]
    pixels = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], pixels, bad


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def embed_paths(model: LoadedModel, paths: Sequence[str], device: torch.device,
                opts: EmbedOptions) -> Iterator[EmbeddedBatch]:
    """Decode and embed `paths` in batches, in order. Bad files come back as failures."""
    from torch.utils.data import DataLoader

    if not paths:
        return
    batch = opts.batch_size or default_batch_size(device)
    workers = default_workers() if opts.workers < 0 else opts.workers
    workers = min(workers, max(1, len(paths) // 4)) if workers else 0
    loader = DataLoader(
        ImageFiles(paths, model.preprocess, opts.max_megapixels),
        batch_size=batch,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,  # bounded read-ahead
    )
    cap = [batch]  # images per forward pass; halved by each out-of-memory error
    for items, pixels, bad in loader:
        if pixels is None:
            yield EmbeddedBatch([], np.zeros((0, model.spec.dim), np.float32), bad)
            continue
        vectors = _embed_with_backoff(model, pixels, device, cap)
        # A NaN/inf feature (fp16 overflow, a broken weights file) would rank as FAISS id -1:
        # report the image instead of indexing garbage.
        finite = np.isfinite(vectors).all(axis=1)
        bad += [(items[i], Failure(paths[items[i]], "corrupt",
                                   "the model produced non-finite features for this image"))
                for i in np.flatnonzero(~finite)]
        yield EmbeddedBatch([i for i, ok in zip(items, finite, strict=True) if ok],
                            vectors[finite], bad)


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
