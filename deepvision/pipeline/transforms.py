"""Preprocessing, in one place for both decode roads: what a model wants, and how pixels get
there (upright, short side resized, centre crop; normalisation happens on the device).

Bump PREPROCESS_VERSION whenever a change here moves embeddings: the manifest records it, so an
index built by another version is named as such instead of silently differing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch

# 1: JPEG draft mode straight to the resize target (up to commit 03641f5);
# 2: draft mode to twice the target (cosine >= 0.998 to a full decode; see DRAFT_HEADROOM).
PREPROCESS_VERSION = 2

# JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale by dropping DCT coefficients, a different
# low-pass filter than the antialiased resize after a full decode. Drafting to twice the resize
# target leaves the filtering to the resize: on the shipped photos at 1x, 2x and 4x size, the
# embedding's cosine to a full decode is >= 0.998 (>= 0.966 when drafting to 1x, on grass
# texture), and a 4032x3024 photo still decodes in 11 ms instead of 99 ms (9 ms at 1x).
DRAFT_HEADROOM = 2

# float32 working memory of one batched device resize call: torchvision resizes uint8 in float.
RESIZE_BYTES = 1 << 30


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels: resize the short side, centre-crop, normalise."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"
    # "shortest": short side to `resize`, aspect kept, then the centre crop (torchvision, CLIP);
    # "squash": straight to crop x crop, aspect not kept (open_clip's SigLIP recipe).
    resize_mode: str = "shortest"

    @property
    def draft_size(self) -> int:
        """The smallest side JPEG draft mode may decode to (see DRAFT_HEADROOM)."""
        return DRAFT_HEADROOM * self.resize


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to `short_side`, aspect kept: what the
    resize will allocate. A 1x100000 strip becomes 256 x 25,600,000 pixels."""
    short = max(1, min(width, height))
    scale = short_side / short
    return max(1, round(width * scale)), max(1, round(height * scale))


def pixel_stats(pre: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as (1, 3, 1, 1) tensors on the 0..255 scale the decoders deliver."""
    import torch

    return (torch.tensor(pre.mean).view(1, 3, 1, 1) * 255.0,
            torch.tensor(pre.std).view(1, 3, 1, 1) * 255.0)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Make a stored (..., H, W) image upright from its EXIF orientation, exactly as
    PIL.ImageOps.exif_transpose does (test_device_decode checks all eight against it)."""
    import torch

    h, w = image.dim() - 2, image.dim() - 1
    if orientation == 2:
        return image.flip(w)
    if orientation == 3:
        return torch.rot90(image, 2, (h, w))
    if orientation == 4:
        return image.flip(h)
    if orientation == 5:
        return image.transpose(h, w)
    if orientation == 6:
        return torch.rot90(image, -1, (h, w))
    if orientation == 7:
        return torch.rot90(image, 2, (h, w)).transpose(h, w)
    if orientation == 8:
        return torch.rot90(image, 1, (h, w))
    return image


def resize_crop(images: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, 3, H, W) or (3, H, W) -> uint8 crops: the short side to pre.resize (aspect kept,
    antialiased), then the centre pre.crop square; or, for resize_mode "squash", the whole image
    to pre.crop x pre.crop. The one resize both decode roads use."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    mode = InterpolationMode(pre.interpolation)
    if pre.resize_mode == "squash":
        return F.resize(images, [pre.crop, pre.crop], interpolation=mode, antialias=True)
    resized = F.resize(images, [pre.resize], interpolation=mode, antialias=True)
    return F.center_crop(resized, [pre.crop, pre.crop])


def centre_zoom(crops: torch.Tensor, keep: float, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, 3, S, S) model squares -> the centre `keep` of each (both sides) resized back
    to S x S, antialiased like resize_crop: a query view derived from the one decoded square
    (Descriptor.query_zoom), so that every decode road gets it for free."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    size = int(crops.shape[-1])
    side = max(1, round(size * keep))
    start = (size - side) // 2
    centre = crops[..., start:start + side, start:start + side]
    return F.resize(centre, [size, size], interpolation=InterpolationMode(pre.interpolation),
                    antialias=True)


def resize_crop_grouped(images: Sequence[torch.Tensor], pre: Preprocess,
                        budget: int = RESIZE_BYTES) -> torch.Tensor:
    """Upright uint8 (3, H, W) images of any shapes -> uint8 (N, 3, crop, crop), in input order.

    Images of one shape are resized in one call (per-image calls cost several times more on a
    GPU), in slices that keep the float working memory under `budget` bytes."""
    import torch

    device = images[0].device
    out = torch.empty((len(images), 3, pre.crop, pre.crop), dtype=torch.uint8, device=device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault((image.shape[-2], image.shape[-1]), []).append(i)
    for (h, w), members in groups.items():
        step = max(1, budget // (3 * h * w * 4))
        for s in range(0, len(members), step):
            part = members[s:s + step]
            stacked = torch.stack([images[i] for i in part])
            index = torch.tensor(part, device=device)
            out.index_copy_(0, index, resize_crop(stacked, pre))
    return out


class Crop(NamedTuple):
    """One picture as the model's uint8 (3, crop, crop) square, and the short side of the
    picture it was made from, as stored (a video: its frame): whether the query zoom has
    pixels to zoom into (descriptor.QueryViews.zooms)."""

    pixels: torch.Tensor
    side: int


def pil_crop(path: str, pre: Preprocess, max_megapixels: float,
             data: bytes | None = None) -> Crop:
    """Pillow's road: file -> upright RGB (draft mode) -> uint8 (3, crop, crop).
    Raises DecodeError."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    from deepvision.pipeline.decode import load_rgb_sided

    image, side = load_rgb_sided(path, max_megapixels, pre.draft_size, data, pre.resize)
    return Crop(resize_crop(pil_to_tensor(image), pre), side)
