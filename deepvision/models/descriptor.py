"""Descriptors: how a backbone's feature map becomes one L2-normalised vector (pooling, flip,
scales). Recorded in the manifest: queries must be described the same way as the index."""

from __future__ import annotations

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



def extractor(trunk: torch.nn.Module, pre: Preprocess, d: Descriptor) -> torch.nn.Module:
    import torch
    import torch.nn.functional as F  # noqa: N812

    class Extractor(torch.nn.Module):
        """Normalise on the device (workers ship uint8: 4x less to copy), run the trunk at
        each scale (and mirrored), pool each map, sum the L2-normalised descriptors."""

        def __init__(self) -> None:
            super().__init__()
            self.trunk = trunk
            mean, std = pixel_stats(pre)
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def pool(self, fmap: torch.Tensor) -> torch.Tensor:
            if d.pooling == "gem":  # computed in fp32: x^3 overflows fp16 easily
                x = fmap.float().clamp(min=1e-6).pow(GEM_P)
                return x.mean(dim=(2, 3)).pow(1.0 / GEM_P)
            return fmap.float().mean(dim=(2, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.float() - self.mean) / self.std
            total = None
            for s in d.scales:
                xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear",
                                                      antialias=True, align_corners=False)
                for view in (xs, xs.flip(-1)) if d.flip else (xs,):
                    f = F.normalize(self.pool(self.trunk(
                        view.contiguous(memory_format=torch.channels_last))), dim=1)
                    total = f if total is None else total + f
            return total

    return Extractor()
