"""What a model wants its pixels to be: the Preprocess record and its version.

The record is shared by the models (which define it), the pipeline (which follows it) and the
store (whose manifest records the version), so it lives below all three; the pixel work itself
is in pipeline/transforms.py. Bump PREPROCESS_VERSION whenever a change to either moves
embeddings: the manifest records it, so an index built by another version is named as such
instead of silently differing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

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
