"""Edited copies of a photo, each a way a copy drifts from its original in the wild (issue #17):
canvas turns, random-offset crops, small low-quality JPEGs, borders of several colours, greyscale,
mirror + small rotation, brightness/saturation, caption bands.

Used by `deepvision eval --synthetic` (copies of the user's own photos) and by
scripts/make_evalset.py --robust (the evaluation set of bench/QUALITY.md). Every edit is a pure
function of the image: where one is "random" (a crop's size and offset, a border's colour) the
draw is seeded by the image's own pixels, so it differs from photo to photo but not from run to
run. Pillow only; importing this module is cheap.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps, features

Edit = Callable[[Image.Image], Image.Image]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's own default font, scalable when Pillow has FreeType (the wheels do).
    if features.check("freetype2"):
        return ImageFont.load_default(size=size)
    return ImageFont.load_default()


def third_size(img: Image.Image) -> Image.Image:
    """One third of the width and height (a thumbnail)."""
    return img.resize((max(1, round(img.width / 3)), max(1, round(img.height / 3))),
                      Image.Resampling.LANCZOS)


def greyscale(img: Image.Image) -> Image.Image:
    """Colour dropped (luma only)."""
    return ImageOps.grayscale(img).convert("RGB")



def _photo_rng(img: Image.Image, salt: int) -> np.random.Generator:
    small = np.asarray(img.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR))
    return np.random.default_rng([zlib.crc32(small.tobytes()), salt])


def turn(quarters: int) -> Edit:
    """The canvas turned by quarters x 90° counter-clockwise (a phone held sideways, the
    EXIF orientation lost on upload): no pixel changes, only their places."""
    method = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180,
              3: Image.Transpose.ROTATE_270}[quarters]

    def edit(img: Image.Image) -> Image.Image:
        return img.transpose(method)

    edit.__doc__ = f"The canvas turned {90 * quarters}° counter-clockwise."
    return edit


def random_crop(low: float, high: float, salt: int) -> Edit:
    """A crop of low..high of the width and of the height at a random offset."""
    def edit(img: Image.Image) -> Image.Image:
        rng = _photo_rng(img, salt)
        w, h = img.size
        fw, fh = rng.uniform(low, high, 2)
        cw, ch = max(1, round(w * fw)), max(1, round(h * fh))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((left, top, left + cw, top + ch))

    return edit


def third_q25(img: Image.Image) -> Image.Image:
    """One third of the width and height, JPEG quality 25 (a messenger-app thumbnail)."""
    buf = io.BytesIO()
    third_size(img).save(buf, "JPEG", quality=25)
    buf.seek(0)
    out = Image.open(buf)
    out.load()  # stays "JPEG": save_jpeg keeps the quality-25 tables
    return out


def border(colour: tuple[int, int, int] | None) -> Edit:
    """A solid frame 10 % of the long side wide on every side; None: a colour drawn per photo."""
    def edit(img: Image.Image) -> Image.Image:
        fill = colour or tuple(int(c) for c in _photo_rng(img, 3).integers(0, 256, 3))
        return ImageOps.expand(img.convert("RGB"), round(max(img.size) * 0.1), fill=fill)

    return edit


def hflip_rotate12(img: Image.Image) -> Image.Image:
    """Mirrored, then 12° clockwise with the canvas grown (black corners)."""
    return ImageOps.mirror(img).rotate(-12, Image.Resampling.BICUBIC, expand=True,
                                       fillcolor=(0, 0, 0))


def bright_desaturate(img: Image.Image) -> Image.Image:
    """Brightness x 1.3, saturation halved (a faded filter)."""
    return ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(1.3)).enhance(0.5)


def caption_band(img: Image.Image) -> Image.Image:
    """A black band over the bottom eighth with a white caption in it (a news-site still)."""
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    band = max(4, round(h / 8))
    draw.rectangle((0, h - band, w, h), fill=(0, 0, 0))
    draw.text((w * 0.03, h - band / 2), "Breaking: the same picture, again",
              font=_font(max(8, round(band * 0.55))), fill="white", anchor="lm")
    return out


ROBUST_EDITS: dict[str, Edit] = {
    "turn90": turn(1),
    "turn180": turn(2),
    "turn270": turn(3),
    "crop50_random": random_crop(0.5, 0.6, 1),
    "crop70_random": random_crop(0.6, 0.7, 2),
    "third_q25": third_q25,
    "border_white": border((255, 255, 255)),
    "border_black": border((0, 0, 0)),
    "border_colour": border(None),
    "greyscale": greyscale,
    "hflip_rotate12": hflip_rotate12,
    "bright_desaturate": bright_desaturate,
    "caption_band": caption_band,
}

