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
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps, features

from deepvision.types import Box

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


# ---- the strong edits of issue #25 ---------------------------------------------------------
# The hard cases of reverse image search: a corner of a picture, the picture as a small part of a
# page or a screen, half of it covered, a thumbnail. Each is as hard as the table says
# (a 25 % crop, the photo at ~420 px in a 1280x900 page, an 80-px thumbnail, 35 % covered), so a
# global vector alone fails on some of them and a verifier has something to prove.
# Where an edit keeps a geometric relation to the original (crop25, in_page, turn90_half), a
# `*_with_box` twin returns the ground truth too, for tests and for scoring a verifier's box.

PAGE_SIZE = (1280, 900)  # a desktop browser's viewport
PAGE_PHOTO_WIDTH = 420  # the photo's width in the page: a typical article image
THUMB_SIDE = 80


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """A JPEG round trip; the result keeps format "JPEG", so a writer that saves with
    quality="keep" (make_samples.save_jpeg, synthetic._copies) stores these very tables."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _crop_box(size: tuple[int, int], area: float, aspect: tuple[float, float],
              rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of `area` of the picture, width/height ratio drawn from `aspect` (relative to the
    picture's own), clipped to fit, at a random offset: pixels (left, top, right, bottom)."""
    w, h = size
    ratio = float(rng.uniform(*aspect))
    fw = min(1.0, float(np.sqrt(area * ratio)))
    fh = min(1.0, area / fw)
    cw, ch = max(1, round(w * fw)), max(1, round(h * fh))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return left, top, left + cw, top + ch


def _fraction_box(px: tuple[int, int, int, int], size: tuple[int, int]) -> Box:
    w, h = size
    return Box(px[0] / w, px[1] / h, px[2] / w, px[3] / h)


def crop25_with_box(img: Image.Image) -> tuple[Image.Image, Box]:
    """crop25, and which part of the original it is (fractions of the original)."""
    px = _crop_box(img.size, 0.25, (0.6, 1.6), _photo_rng(img, 25))
    return img.crop(px), _fraction_box(px, img.size)


def crop25(img: Image.Image) -> Image.Image:
    """A random crop of 25 % of the area (aspect 0.6-1.6 of the photo's, random offset)."""
    return crop25_with_box(img)[0]


def turn90_half_with_box(img: Image.Image) -> tuple[Image.Image, Box]:
    """turn90_half, and which part of the original it is (fractions of the original)."""
    turned = img.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    x0, y0, x1, y1 = _crop_box(turned.size, 0.5, (0.7, 1.4), _photo_rng(img, 90))
    # A pixel (x, y) of the turned picture is (W - 1 - y, x) of the original (W: its width),
    # so the turned box's rows are the original's columns, counted from the right.
    tw, th = turned.size
    return turned.crop((x0, y0, x1, y1)), Box(1 - y1 / th, x0 / tw, 1 - y0 / th, x1 / tw)


def turn90_half(img: Image.Image) -> Image.Image:
    """Turned 90° counter-clockwise, then cropped to half the area at a random offset."""
    return turn90_half_with_box(img)[0]


def _page_canvas(rng: np.random.Generator) -> Image.Image:
    """An empty article page: header bar, nav links, a sidebar, grey text lines, maybe an
    unrelated coloured block (an ad)."""
    w, h = PAGE_SIZE
    page = Image.new("RGB", PAGE_SIZE, (250, 250, 248))
    draw = ImageDraw.Draw(page)
    header = tuple(int(c) for c in rng.integers(20, 120, 3))
    draw.rectangle((0, 0, w, 70), fill=header)
    draw.text((30, 35), "The Daily Picture", font=_font(30), fill="white", anchor="lm")
    for i in range(6):  # nav links
        draw.rectangle((30 + i * 130, 88, 130 + i * 130, 100), fill=(120, 120, 130))
    draw.rectangle((w - 300, 120, w - 20, h - 20), fill=(236, 236, 240))  # sidebar
    for y in range(140, h - 40, 26):
        draw.rectangle((w - 280, y, w - 280 + int(rng.integers(120, 250)), y + 9),
                       fill=(180, 180, 186))
    for y in range(130, h - 20, 22):  # article text
        draw.rectangle((30, y, 30 + int(rng.integers(500, 900)), y + 8), fill=(170, 170, 170))
    if rng.random() < 0.6:
        ad = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.rectangle((w - 280, 600, w - 40, 840), fill=ad)
    return page


def in_page_with_box(img: Image.Image) -> tuple[Image.Image, Box]:
    """in_page, and where the photo sits in it (fractions of the page)."""
    rng = _photo_rng(img, 420)
    page = _page_canvas(rng)
    pw, ph = PAGE_SIZE
    scale = min(PAGE_PHOTO_WIDTH * float(rng.uniform(0.95, 1.05)) / img.width,
                (ph - 150) / img.height)  # a tall photo still fits below the nav
    photo = img.convert("RGB").resize((max(1, round(img.width * scale)),
                                       max(1, round(img.height * scale))),
                                      Image.Resampling.LANCZOS)
    # Anywhere in the article column (left of the sidebar), below the nav.
    left = int(rng.integers(20, max(21, pw - 310 - photo.width)))
    top = int(rng.integers(115, max(116, ph - 10 - photo.height)))
    page.paste(photo, (left, top))
    box = (left, top, left + photo.width, top + photo.height)
    return page, _fraction_box(box, PAGE_SIZE)


def in_page(img: Image.Image) -> Image.Image:
    """The photo at ~420 px wide inside a 1280x900 synthetic web page, at a random place."""
    return in_page_with_box(img)[0]


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE data: the 8 coefficients that map output points `dst` back to
    input points `src` (4 corners each)."""
    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solved = np.linalg.solve(np.array(rows, float), src.reshape(8).astype(float))
    return tuple(float(c) for c in solved)


def screen_photo(img: Image.Image) -> Image.Image:
    """A phone's photo of a screen showing the picture: dark bezel, keystone (each corner moved
    6-10 %), slight blur, sensor noise, a gamma change, JPEG quality 45."""
    rng = _photo_rng(img, 45)
    bezel = max(6, round(max(img.size) * 0.06))
    screen = ImageOps.expand(img.convert("RGB"), bezel, fill=(18, 18, 20))
    w, h = screen.size
    margin = round(max(w, h) * 0.12)
    canvas = Image.new("RGB", (w + 2 * margin, h + 2 * margin), (88, 80, 70))  # a wall
    canvas.paste(screen, (margin, margin))
    corners = np.array([[margin, margin], [margin + w, margin], [margin + w, margin + h],
                        [margin, margin + h]], float)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)  # inwards
    moved = corners + signs * rng.uniform(0.06, 0.10, (4, 2)) * [w, h] \
        * rng.choice([-0.5, 1.0], (4, 2))
    warped = canvas.transform(canvas.size, Image.Transform.PERSPECTIVE,
                              _perspective_coeffs(corners, moved), Image.Resampling.BICUBIC,
                              fillcolor=(88, 80, 70))
    warped = warped.filter(ImageFilter.GaussianBlur(max(0.6, max(w, h) / 900)))
    arr = np.asarray(warped, np.float32) / 255.0
    arr = arr ** float(rng.uniform(0.75, 1.3)) * 255.0 + rng.normal(0, 6, arr.shape)
    return jpeg(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB"), 45)


def _shift_hue(img: Image.Image, degrees: float) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    # Pillow's HSV stores hue as 0..255 for 0..360°; uint8 arithmetic wraps as hue does.
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(degrees / 360 * 256)).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def stacked(img: Image.Image) -> Image.Image:
    """Edits on edits: 75 % of the width and height at a random offset, turned 15°, hue,
    saturation and brightness changed, a caption band, JPEG quality 30."""
    rng = _photo_rng(img, 75)
    w, h = img.size
    cw, ch = round(w * 0.75), round(h * 0.75)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.convert("RGB").crop((left, top, left + cw, top + ch))
    out = out.rotate(float(rng.choice([-15.0, 15.0])), Image.Resampling.BICUBIC, expand=True,
                     fillcolor=(0, 0, 0))
    out = _shift_hue(out, float(rng.uniform(15, 40)))
    out = ImageEnhance.Color(out).enhance(float(rng.uniform(1.3, 1.6)))
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.8, 1.2)))
    return jpeg(caption_band(out), 30)


def thumb80(img: Image.Image) -> Image.Image:
    """An 80-px (long side) thumbnail at JPEG quality 20."""
    scale = THUMB_SIDE / max(img.size)
    small = img.convert("RGB").resize((max(1, round(img.width * scale)),
                                       max(1, round(img.height * scale))),
                                      Image.Resampling.LANCZOS)
    return jpeg(small, 20)


def meme(img: Image.Image) -> Image.Image:
    """White caption bands above and below with black text, mirrored, JPEG quality 60."""
    photo = ImageOps.mirror(img.convert("RGB"))
    w, h = photo.size
    band = max(12, round(h * 0.18))
    out = ImageOps.expand(photo, (0, band, 0, band), fill=(255, 255, 255))
    draw = ImageDraw.Draw(out)
    font = _font(max(8, round(band * 0.5)))
    draw.text((w / 2, band / 2), "NOBODY:", font=font, fill="black", anchor="mm")
    draw.text((w / 2, h + band * 1.5), "ME, FINDING THE SOURCE", font=font, fill="black",
              anchor="mm")
    return jpeg(out, 60)


def _sticker(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], kind: int,
             rng: np.random.Generator) -> None:
    """kind 0: an ellipse, 1: a rectangle, 2: a rectangle with a label (a text sticker)."""
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if kind == 0:
        draw.ellipse(box, fill=colour)
        return
    draw.rectangle(box, fill=colour)
    if kind == 2:  # a text sticker: a label on it
        ink = "black" if sum(colour) > 380 else "white"
        size = max(8, (box[3] - box[1]) // 4)
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "SALE", font=_font(size),
                  fill=ink, anchor="mm")


def _occluders(size: tuple[int, int], rng: np.random.Generator,
               scale: float) -> list[tuple[int, int, int, int]]:
    """Three boxes, each about scale x 35 % / 3 of the picture, random aspect and place."""
    w, h = size
    boxes = []
    for aspect in rng.uniform(0.5, 2.0, 3):
        area = scale * 0.35 / 3 * w * h
        bw = min(w, max(1, round(np.sqrt(area * aspect))))
        bh = min(h, max(1, round(area / bw)))
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        boxes.append((x, y, x + bw, y + bh))
    return boxes


def occlusion_mask(size: tuple[int, int], boxes: list[tuple[int, int, int, int]],
                   shapes: list[int]) -> np.ndarray:
    """The union of the shapes (0 rectangle, 1 ellipse) as a boolean mask."""
    mask = Image.new("1", size, 0)
    draw = ImageDraw.Draw(mask)
    for box, shape in zip(boxes, shapes, strict=True):
        (draw.ellipse if shape == 1 else draw.rectangle)(box, fill=1)
    return np.asarray(mask, bool)


def occlude35(img: Image.Image) -> Image.Image:
    """35 % of the picture's area covered by three opaque shapes (rectangles, ellipses, text
    stickers) of random colours and places; overlaps are made up for, so the union is 35 %."""
    rng = _photo_rng(img, 35)
    out = img.convert("RGB")
    seed = int(rng.integers(0, 2**31))
    scale = 1.0
    for _ in range(12):  # grow the shapes until their union covers 33-37 %
        draw_rng = np.random.default_rng(seed)
        boxes = _occluders(out.size, draw_rng, scale)
        kinds = [int(k) for k in draw_rng.integers(0, 3, 3)]
        cover = occlusion_mask(out.size, boxes, [1 if k == 0 else 0 for k in kinds]).mean()
        if 0.33 <= cover <= 0.37:
            break
        scale *= 0.35 / max(cover, 1e-3)
    draw = ImageDraw.Draw(out)
    sticker_rng = np.random.default_rng(seed + 1)
    for box, kind in zip(boxes, kinds, strict=True):
        _sticker(draw, box, kind, sticker_rng)
    return out


STRONG_EDITS: dict[str, Edit] = {
    "crop25": crop25,
    "in_page": in_page,
    "screen_photo": screen_photo,
    "stacked": stacked,
    "thumb80": thumb80,
    "meme": meme,
    "turn90_half": turn90_half,
    "occlude35": occlude35,
}

# The edits whose result keeps a known region of the original: the edited image and the truth.
# in_page's box is where the photo sits in the query (fractions of the page); crop25's and
# turn90_half's is which part of the original the query shows (fractions of the original).
BoxedEdit = Callable[[Image.Image], tuple[Image.Image, Box]]
STRONG_TRUTH: dict[str, BoxedEdit] = {
    "crop25": crop25_with_box,
    "in_page": in_page_with_box,
    "turn90_half": turn90_half_with_box,
}
TRUTH_OF = {"crop25": "original", "in_page": "query", "turn90_half": "original"}

# `eval --synthetic --edits`: which edits the copies get.
EDIT_SETS: dict[str, dict[str, Edit]] = {
    "robust": ROBUST_EDITS,
    "strong": STRONG_EDITS,
    "all": ROBUST_EDITS | STRONG_EDITS,
}


def near_copy(img: Image.Image) -> Image.Image:
    """A true copy as a duplicate finder meets it: resized to 50-80 %, cropped by at most 8 %
    of each side's length, brightened 5-25 %, re-saved as JPEG quality 60-90 (one draw per
    photo). The whole picture stays; one similarity transform maps it onto the original."""
    rng = _photo_rng(img, 8)
    w, h = img.size
    cut = (rng.uniform(0.0, 0.08, 2) * (w, h)).round().astype(int)  # per axis, both sides
    left, top = (cut * rng.uniform(0, 1, 2)).round().astype(int)
    box = (int(left), int(top), int(w - cut[0] + left), int(h - cut[1] + top))
    out = img.convert("RGB").crop(box)
    scale = float(rng.uniform(0.5, 0.8))
    out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))),
                     Image.Resampling.LANCZOS)
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(1.05, 1.25)))
    return jpeg(out, int(rng.integers(60, 91)))
