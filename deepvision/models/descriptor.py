"""Descriptors: how a backbone's feature map becomes one L2-normalised vector (pooling, flip,
scales). Recorded in the manifest: queries must be described the same way as the index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepvision.errors import UsageError
from deepvision.pipeline.transforms import Preprocess, pixel_stats

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Descriptor:
    """How a feature map becomes one vector; recorded in the manifest (queries must match).
    Measured on the evaluation set before any option became a default (bench/QUALITY.md)."""

    pooling: str = "avg"  # avg | gem (generalised mean, p = 3, no learned parameters)
    flip: bool = False  # average with the mirror image's descriptor: flip-invariant
    scales: tuple[float, ...] = (1.0,)  # image scales whose descriptors are summed

    def to_dict(self) -> dict[str, object]:
        return {"pooling": self.pooling, "flip": self.flip, "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict) -> Descriptor:
        return cls(data.get("pooling", "avg"), bool(data.get("flip", False)),
                   tuple(float(s) for s in data.get("scales", (1.0,))))

    @property
    def label(self) -> str:
        scales = "" if self.scales == (1.0,) else "@" + ",".join(f"{s:g}" for s in self.scales)
        return self.pooling + ("+flip" if self.flip else "") + scales


GEM_P = 3.0
POOLINGS = ("avg", "gem")


def parse_descriptor(pooling: str = "avg", flip: bool = False,
                     scales: str | None = None) -> Descriptor:
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    values: tuple[float, ...] = (1.0,)
    if scales:
        try:
            values = tuple(float(s) for s in scales.split(","))
        except ValueError:
            raise UsageError(f"--scales {scales!r}: numbers such as 1,0.707") from None
        if not all(0.25 <= s <= 2.0 for s in values):
            raise UsageError(f"--scales {scales!r}: each scale must be between 0.25 and 2")
    return Descriptor(pooling, flip, values)


def views(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
          d: Descriptor, channels_last: bool = True) -> Iterator[torch.Tensor]:
    """The normalised float views a descriptor sums, from uint8 crops and `pixel_stats` on
    their device: each scale, and its mirror image with `flip`. Shared by the torch extractor
    and the exported backends (the antialiased resize does not export to ONNX, so the views are
    made in torch whatever runs the network). channels_last: the layout torch's convolutions
    prefer; the runtimes take plain NCHW."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    x = (x.float() - mean) / std
    for s in d.scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear",
                                              antialias=True, align_corners=False)
        for view in (xs, xs.flip(-1)) if d.flip else (xs,):
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            yield view.contiguous(memory_format=fmt)


def view_head(trunk: torch.nn.Module, d: Descriptor) -> torch.nn.Module:
    """One view -> its L2-normalised pooled descriptor: the part a backend exports."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    class ViewHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk

        def pool(self, fmap: torch.Tensor) -> torch.Tensor:
            if d.pooling == "gem":  # computed in fp32: x^3 overflows fp16 easily
                x = fmap.float().clamp(min=1e-6).pow(GEM_P)
                return x.mean(dim=(2, 3)).pow(1.0 / GEM_P)
            return fmap.float().mean(dim=(2, 3))

        def forward(self, view: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.pool(self.trunk(view)), dim=1)

    return ViewHead()


def extractor(trunk: torch.nn.Module, pre: Preprocess, d: Descriptor) -> torch.nn.Module:
    import torch

    class Extractor(torch.nn.Module):
        """uint8 crops -> the descriptor: normalise on the device (workers ship uint8: 4x less
        to copy), run the head on each view, sum the L2-normalised view descriptors."""

        def __init__(self) -> None:
            super().__init__()
            self.head = view_head(trunk, d)
            mean, std = pixel_stats(pre)
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            total = None
            for view in views(x, self.mean, self.std, d):
                f = self.head(view)
                total = f if total is None else total + f
            return total

    return Extractor()
