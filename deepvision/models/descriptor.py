"""Descriptors: how a backbone's feature map becomes one L2-normalised vector (pooling, flip,
scales). Recorded in the manifest: queries must be described the same way as the index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepvision.errors import UsageError
from deepvision.preprocess import Preprocess, pixel_stats

if TYPE_CHECKING:
    import torch

# The query zoom's fraction: the default's, and what `--zoom` asks for on an index that records
# none (one made before it was a default); measured best on both sets (0.75 over 0.875).
QUERY_ZOOM = 0.75


@dataclass(frozen=True)
class Descriptor:
    """How a feature map becomes one vector; recorded in the manifest (queries must match).
    Measured on the evaluation set before any option became a default (bench/QUALITY.md)."""

    # The defaults are issue #17's measured choice (bench/QUALITY.md): R-MAC of the whole
    # picture, queries also turned and zoomed. from_dict reads what an older index lacks as
    # it was then.
    pooling: str = "rmac"  # avg | gem (p = 3) | rmac (regional max, 3 levels); none learned
    flip: bool = False  # average with the mirror image's descriptor: flip-invariant
    scales: tuple[float, ...] = (1.0,)  # image scales whose descriptors are summed
    # crop: short side resized, centre square cut (the models' ImageNet eval recipe);
    # full: the whole picture resized to the square, aspect not kept (nothing cut away).
    frame: str = "full"
    turns: bool = False  # sum over the picture turned by 0/90/180/270°: invariant to turns
    # Search also with the query turned by 90/180/270° (each image scores its best turn): only
    # queries change, not the stored vectors, but it is recorded so that an index keeps the
    # query behaviour (and score scale) it was built with.
    query_turns: bool = True
    # Search also with the centre `query_zoom` of the query's square (both sides) enlarged to
    # the square, 0: not; only for a query with the pixels for it (QueryViews.zooms). The whole
    # picture keeps what surrounds a photo (a screenshot's browser window, a rotation's black
    # corners); the zoomed view cuts most of it away (bench/QUALITY.md, "Issue #17, third
    # round"). Query side only, recorded like query_turns.
    query_zoom: float = QUERY_ZOOM

    def to_dict(self) -> dict[str, object]:
        return {"pooling": self.pooling, "flip": self.flip, "scales": list(self.scales),
                "frame": self.frame, "turns": self.turns, "query_turns": self.query_turns,
                "query_zoom": self.query_zoom}

    @classmethod
    def from_dict(cls, data: dict) -> Descriptor:
        """A recorded descriptor; a field it lacks gets the value every index made before the
        field existed was built with (not today's default): old indexes keep searching."""
        return cls(data.get("pooling", "avg"), bool(data.get("flip", False)),
                   tuple(float(s) for s in data.get("scales", (1.0,))),
                   str(data.get("frame", "crop")), bool(data.get("turns", False)),
                   bool(data.get("query_turns", False)), float(data.get("query_zoom", 0.0)))

    @property
    def label(self) -> str:
        scales = "" if self.scales == (1.0,) else "@" + ",".join(f"{s:g}" for s in self.scales)
        return (self.pooling + ("+flip" if self.flip else "") + ("+turns" if self.turns else "")
                + ("+full" if self.frame == "full" else "") + scales + self.query_views.label)

    @property
    def stored(self) -> tuple[object, ...]:
        """What decides the stored vectors: two descriptors equal here can share an index (the
        query fields only change how it is searched)."""
        return (self.pooling, self.flip, self.scales, self.frame, self.turns)

    @property
    def views(self) -> int:
        """Network passes per image (the cost of this descriptor relative to a plain one)."""
        return len(self.scales) * (2 if self.flip else 1) * (4 if self.turns else 1)

    @property
    def query_views(self) -> QueryViews:
        return QueryViews(self.query_turns, self.query_zoom)


@dataclass(frozen=True)
class QueryViews:
    """The views a query image is searched with besides itself; each indexed image scores its
    best view. They cost network passes per query only: the stored vectors stay as they are."""

    turns: bool = False  # the query turned by 90, 180 and 270°
    zoom: float = 0.0  # the centre `zoom` of the query's square enlarged to it; 0: none

    @property
    def count(self) -> int:
        """Extra vectors per query image (one network pass each, the zoom's only if it zooms)."""
        return (3 if self.turns else 0) + (1 if self.zoom else 0)

    def zooms(self, side: int, size: int) -> bool:
        """Whether a query whose picture has short side `side` (transforms.Crop.side) gets the
        zoom view at model input `size`: only if the picture already fills the input. A smaller
        one was enlarged to reach it, and zooming enlarges its blocks and noise again (a ⅓-size
        JPEG-25 gravel then matched grass; bench/QUALITY.md, "Issue #17, third round")."""
        return bool(self.zoom) and side >= size

    @property
    def label(self) -> str:
        parts = (["query turns"] if self.turns else []) + (
            [f"query zoom {self.zoom:g}"] if self.zoom else [])
        return f" ({', '.join(parts)})" if parts else ""



# What every index made before issue #17 was built with, and what a field missing from a
# recorded descriptor means; also the default of models that give one finished embedding (CLIP).
PRE_17 = Descriptor("avg", False, (1.0,), "crop", False, False, 0.0)

GEM_P = 3.0
POOLINGS = ("avg", "gem", "rmac")
RMAC_LEVELS = 3
FRAMES = ("crop", "full")


def parse_descriptor(pooling: str | None = None, flip: bool | None = None,
                     scales: str | None = None, frame: str | None = None,
                     turns: bool | None = None, base: Descriptor | None = None) -> Descriptor:
    """The options given on the command line; `base`'s value (default: Descriptor()) for each
    one left out."""
    default = base or Descriptor()
    pooling = pooling or default.pooling
    frame = frame or default.frame
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
    if frame not in FRAMES:
        raise UsageError(f"--frame {frame!r}: choose one of {', '.join(FRAMES)}")
    values = default.scales
    if scales:
        try:
            values = tuple(float(s) for s in scales.split(","))
        except ValueError:
            raise UsageError(f"--scales {scales!r}: numbers such as 1,0.707") from None
        if not all(0.25 <= s <= 2.0 for s in values):
            raise UsageError(f"--scales {scales!r}: each scale must be between 0.25 and 2")
    return Descriptor(pooling, default.flip if flip is None else flip, values, frame,
                      default.turns if turns is None else turns, default.query_turns,
                      default.query_zoom)


def views(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
          d: Descriptor, channels_last: bool = True) -> Iterator[torch.Tensor]:
    """The normalised float views a descriptor sums, from uint8 crops and `pixel_stats` on
    their device: each scale, its mirror image with `flip`, each turned with `turns`. Shared by
    the torch extractor and the exported backends (the antialiased resize does not export to
    ONNX, so the views are made in torch whatever runs the network). channels_last: the
    layout torch's convolutions prefer; the runtimes take plain NCHW."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    x = (x.float() - mean) / std
    for s in d.scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear",
                                              antialias=True, align_corners=False)
        for mirrored in (xs, xs.flip(-1)) if d.flip else (xs,):
            # turns: the (square) crop turned by 0/90/180/270°, summed: invariant to turns
            for view in ([torch.rot90(mirrored, k, (2, 3)) for k in range(4)] if d.turns
                         else [mirrored]):
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
            if d.pooling == "rmac":
                return rmac(fmap.float())
            return fmap.float().mean(dim=(2, 3))

        def forward(self, view: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.pool(self.trunk(view)), dim=1)

    return ViewHead()


def extractor(trunk: torch.nn.Module, pre: Preprocess, d: Descriptor) -> torch.nn.Module:
    import torch

    class Extractor(torch.nn.Module):
        """uint8 crops -> the descriptor: normalise on the device (workers ship uint8: 4x less
        to copy), run the head on each view, sum the L2-normalised view descriptors."""

        mean: torch.Tensor  # buffers: tensors, not the Tensor | Module of nn.Module attributes
        std: torch.Tensor

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
            assert total is not None  # views() yields at least the picture itself
            return total

    return Extractor()


def rmac(fmap: torch.Tensor, levels: int = RMAC_LEVELS) -> torch.Tensor:
    """R-MAC (Tolias, Sicre, Jégou 2016) without its learned whitening: max-pooled square
    regions at `levels` scales with ~40 % overlap, plus the whole map, each L2-normalised,
    summed. A region that survives a crop, a border or a caption keeps its vote."""
    import torch.nn.functional as F  # noqa: N812

    # Plain ints: the region grid is fixed by the model's input size (and an ONNX export then
    # records constant slices, not shape arithmetic).
    h, w = int(fmap.shape[2]), int(fmap.shape[3])
    total = F.normalize(fmap.amax(dim=(2, 3)), dim=1)
    for level in range(1, levels + 1):
        side = max(1, int(2 * min(h, w) / (level + 1)))
        for y in _region_starts(h, side, level):
            for x in _region_starts(w, side, level):
                region = fmap[:, :, y:y + side, x:x + side].amax(dim=(2, 3))
                total = total + F.normalize(region, dim=1)
    return total


def _region_starts(length: int, side: int, level: int) -> list[int]:
    """Where the regions of one level start along one side: evenly spread, ends included."""
    n = level + (1 if length > side * (level + 0.5) else 0)
    if n <= 1 or length <= side:
        return [max(0, (length - side) // 2)]
    return sorted({round(i * (length - side) / (n - 1)) for i in range(n)})
