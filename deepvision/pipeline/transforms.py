"""Preprocessing, in one place for both decode roads: what a model wants, and how pixels get
there (upright, short side resized, centre crop; normalisation happens on the device).

Bump PREPROCESS_VERSION (deepvision/preprocess.py) whenever a change here moves embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

# The record lives below models/ and pipeline/ (deepvision/preprocess.py, so that models/ need
# not import pipeline/); re-exported because the pipeline's modules and work in flight on other
# branches import it from here.
from deepvision.preprocess import (  # noqa: F401
    DRAFT_HEADROOM,
    PREPROCESS_VERSION,
    Preprocess,
    pixel_stats,
    resized_size,
)

if TYPE_CHECKING:
    import torch

# float32 working memory of one batched device resize call: torchvision resizes uint8 in float.
RESIZE_BYTES = 1 << 30


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
