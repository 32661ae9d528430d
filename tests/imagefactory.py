"""Generate image files (good, tricky and broken) on the fly for the test-suite.

Everything here is deterministic: the same arguments always produce byte-identical files
(except HEIC/AVIF, whose encoders we do not control), so tests can rely on exact behaviour
without shipping binary fixtures in the repository.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, UnidentifiedImageError, features

# Registering once at import time lets plain ``Image.save(..., "x.heic")`` and
# ``Image.open`` handle HEIC everywhere a test uses this module.
pillow_heif.register_heif_opener()

# Pillow >= 11.3 can write AVIF natively, but only when built against libavif. If the
# installed wheel lacks it, make_good_set silently leaves AVIF out instead of failing.
AVIF_SUPPORTED: bool = bool(features.check("avif"))

# Reason codes the package reports for files it could not index (exact strings).
BAD_REASONS: frozenset[str] = frozenset(
    {
        "empty",
        "truncated",
        "not-an-image",
        "unsupported-format",
        "too-large",
        "broken-symlink",
        "permission-denied",
        "vanished",
        "io-error",
    }
)

# Formats cycled through by make_good_set for the plain images.
_PLAIN_EXTS: tuple[str, ...] = ("jpg", "png", "webp", "bmp", "gif", "tiff")

# Seeds for the tricky images start far away from the plain ones (0..n-1) so that no
# two files of a good set are accidentally near-duplicates of each other.
_TRICKY_SEED_BASE = 10_000

# EXIF tag number of "Orientation"; value 6 means "rotate 90 degrees clockwise to view".
_EXIF_ORIENTATION = 0x0112

# Bomb geometry: 144 megapixels, well over the package's default 100 MP limit.
BOMB_SIZE: tuple[int, int] = (12_000, 12_000)


# --------------------------------------------------------------------------- good images


def photo_like_image(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Return an RGB image (gradient + random shapes + mild noise) fully driven by ``seed``."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(_gradient(rng, size), "RGB")
    _draw_shapes(img, rng)
    return _add_noise(img, rng)


def make_photo_like(
    path: Path,
    seed: int,
    size: tuple[int, int] = (96, 72),
    fmt: str | None = None,
    **save_kwargs: Any,
) -> Path:
    """Write a photo-like image to ``path`` in the format implied by its suffix (or ``fmt``)."""
    return _save(photo_like_image(seed, size), path, fmt, **save_kwargs)


def make_good_set(dest: Path, n: int, size: tuple[int, int] = (96, 72)) -> list[Path]:
    """Create ``n`` plain images plus one of each tricky-but-valid kind; return all paths.

    Plain image ``i`` uses seed ``i`` and format ``_PLAIN_EXTS[i % 6]``; image 0 lives in
    the sub-folder ``nested/``. The tricky images always exist (whatever ``n``), and they
    also carry the awkward file names: an upper-case ``.JPG`` and a name with a space and
    a non-ASCII character.
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = [_plain_image(dest, i, size) for i in range(n)]
    paths += _tricky_images(dest, size)
    return paths


def make_exif_rotated_pair(dest: Path, seed: int = 4242) -> tuple[Path, Path]:
    """Write an upright JPEG and a copy stored rotated 90 degrees with EXIF Orientation 6.

    A viewer honouring EXIF (``ImageOps.exif_transpose``) shows both the same way up.
    """
    dest.mkdir(parents=True, exist_ok=True)
    upright = photo_like_image(seed, (96, 64))
    up_path = _save(upright, dest / "upright.jpg", None, quality=95)
    rot_path = _save_exif_rotated(upright, dest / "rotated_exif.jpg")
    return up_path, rot_path


def _plain_image(dest: Path, i: int, size: tuple[int, int]) -> Path:
    ext = _PLAIN_EXTS[i % len(_PLAIN_EXTS)]
    folder = dest / "nested" if i == 0 else dest
    return make_photo_like(folder / f"photo_{i:03d}.{ext}", seed=i, size=size)


def _tricky_images(dest: Path, size: tuple[int, int]) -> list[Path]:
    base = _TRICKY_SEED_BASE

    def img(k: int) -> Image.Image:
        return photo_like_image(base + k, size)

    paths = [
        _save_exif_rotated(img(0), dest / "exif_rotated.jpg"),
        # Upper-case extension: discovery must match extensions case-insensitively.
        _save(img(1).convert("CMYK"), dest / "cmyk.JPG", None, quality=90),
        _save(_grey16_image(size), dest / "grey16.png", None),
        _save_palette_transparent(img(2), dest / "palette_transparent.png"),
        _save(_with_alpha(img(3)), dest / "rgba.png", None),
        _save(_with_alpha(img(4)).convert("LA"), dest / "grey_alpha_la.png", None),
        # Space + non-ASCII name: paths must survive encoding and shell-quoting issues.
        _save(img(5).convert("L"), dest / "grey é photo.jpg", None, quality=90),
        _save_animated_gif([img(6), img(7), img(8)], dest / "animated.gif"),
        _save(img(9), dest / "photo.heic", "HEIF", quality=80),
    ]
    if AVIF_SUPPORTED:
        paths.append(_save(img(10), dest / "photo.avif", "AVIF", quality=80))
    return paths


def _gradient(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    # Two random end colours along a random direction: already differs a lot between seeds.
    w, h = size
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w]
    t = xs / max(w - 1, 1) * np.cos(theta) + ys / max(h - 1, 1) * np.sin(theta)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return arr.astype(np.uint8)


def _draw_shapes(img: Image.Image, rng: np.random.Generator) -> None:
    # A few saturated shapes give each seed a distinct layout that a CNN picks up on.
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(int(rng.integers(3, 7))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, x1 = sorted(int(v) for v in rng.integers(0, w, 2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, h, 2))
        box = (x0, y0, max(x1, x0 + w // 8), max(y1, y0 + h // 8))
        kind = int(rng.integers(0, 3))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            pts = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=colour)


def _add_noise(img: Image.Image, rng: np.random.Generator, sigma: float = 6.0) -> Image.Image:
    # Mild sensor-like noise so images are not trivially compressible / perfectly flat.
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, sigma, (img.height, img.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _grey16_image(size: tuple[int, int]) -> Image.Image:
    # Ripples over a ramp, rescaled so values hit exactly 0 and 65535: code that wrongly
    # treats 16-bit data as 8-bit clips or wraps visibly.
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    v = xs / w + ys / h + 0.3 * np.sin(xs / 5.0) * np.cos(ys / 7.0)
    v = (v - v.min()) / (v.max() - v.min())
    return Image.fromarray(np.round(v * 65535).astype(np.uint16))  # mode "I;16"


def _with_alpha(img: Image.Image) -> Image.Image:
    # Horizontal alpha ramp from fully transparent to opaque.
    alpha = np.linspace(0, 255, img.width, dtype=np.float64)
    alpha_img = Image.fromarray(np.tile(alpha, (img.height, 1)).astype(np.uint8), "L")
    rgba = img.convert("RGBA")
    rgba.putalpha(alpha_img)
    return rgba


def _save_palette_transparent(img: Image.Image, path: Path) -> Path:
    # Palette index 0 is transparent, written as a PNG tRNS chunk.
    return _save(img.quantize(colors=32), path, None, transparency=0)


def _save_animated_gif(frames: list[Image.Image], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _save_exif_rotated(upright: Image.Image, path: Path) -> Path:
    # Orientation 6 tells viewers to rotate 90 degrees clockwise, so the stored pixels must
    # be the upright image rotated 90 degrees counter-clockwise (Transpose.ROTATE_90).
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    return _save(stored, path, None, quality=95, exif=exif)


def _save(img: Image.Image, path: Path, fmt: str | None, **save_kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **save_kwargs)
    return path


# --------------------------------------------------------------------------- bad files


def make_bad_files(dest: Path) -> dict[str, str]:
    """Create broken files in ``dest``; return {posix path relative to dest: reason code}."""
    dest.mkdir(parents=True, exist_ok=True)
    bad: dict[str, str] = {}
    (dest / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty"
    bad.update(_make_truncated(dest))
    bad.update(_make_not_images(dest))
    bad.update(_make_unsupported(dest))
    write_bomb_png(dest / "bomb.png")
    bad["bomb.png"] = "too-large"
    (dest / "dangling.jpg").unlink(missing_ok=True)  # os.symlink refuses to overwrite
    os.symlink("does-not-exist-anywhere.jpg", dest / "dangling.jpg")
    bad["dangling.jpg"] = "broken-symlink"
    bad.update(_make_locked(dest))
    return bad


def write_bomb_png(path: Path, size: tuple[int, int] = BOMB_SIZE) -> Path:
    """Write a tiny (~20 KB) 1-bit PNG whose header declares ``size`` (144 MP by default).

    Written by hand instead of via Pillow so we never allocate the full canvas (Pillow's
    mode "1" uses one byte per pixel: 144 MB) and it takes well under a second.
    """
    w, h = size
    row = b"\x00" + bytes((w + 7) // 8)  # filter byte "None" + all-black packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
    path.write_bytes(data + _chunk(b"IEND", b""))
    return path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _make_truncated(dest: Path) -> dict[str, str]:
    # Pure noise barely compresses, so cutting the file in half really removes pixel data
    # (a smooth image could fit most of its scan data in the first few hundred bytes).
    noise = np.random.default_rng(7).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    img = Image.fromarray(noise, "RGB")
    out: dict[str, str] = {}
    for name, fmt in (("truncated.jpg", "JPEG"), ("truncated.png", "PNG")):
        path = _save(img, dest / name, fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        out[name] = "truncated"
    return out


def _make_not_images(dest: Path) -> dict[str, str]:
    (dest / "notes.jpg").write_text("Shopping list:\n- milk\n- eggs\n", encoding="utf-8")
    (dest / "random.png").write_bytes(_junk_bytes(4096, seed=1))
    return {"notes.jpg": "not-an-image", "random.png": "not-an-image"}


def _make_unsupported(dest: Path) -> dict[str, str]:
    # SVG is a real image format Pillow cannot decode; RAW files are recognised as images
    # by extension only, so a few junk bytes are a fine stand-in for a .cr2.
    svg = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">\n'
        '  <rect width="64" height="64" fill="#3070c0"/>\n'
        '  <circle cx="32" cy="32" r="20" fill="#f0c030"/>\n'
        "</svg>\n"
    )
    (dest / "vector.svg").write_text(svg, encoding="utf-8")
    (dest / "raw_photo.cr2").write_bytes(_junk_bytes(512, seed=2))
    return {"vector.svg": "unsupported-format", "raw_photo.cr2": "unsupported-format"}


def _make_locked(dest: Path) -> dict[str, str]:
    # root bypasses file permissions, so an unreadable file cannot be simulated there; the
    # entry is left out of the dict rather than producing a file that reads fine.
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        return {}
    path = make_photo_like(dest / "locked.jpg", seed=99)
    path.chmod(0)
    return {"locked.jpg": "permission-denied"}


def _junk_bytes(n: int, seed: int) -> bytes:
    """Random bytes that Pillow is guaranteed not to identify as an image.

    Some Pillow plugins (TGA notably) have no magic number and accept ~1 in a few hundred
    random headers, so we step through seeds until Pillow rejects the data.
    """
    for s in range(seed, seed + 1000):
        data = np.random.default_rng(s).integers(0, 256, n, dtype=np.uint8).tobytes()
        try:
            Image.open(io.BytesIO(data)).close()
        except UnidentifiedImageError:
            return data
    raise RuntimeError("could not generate junk bytes Pillow rejects")


# --------------------------------------------------------------------------- non-images


def non_image_files(dest: Path) -> list[Path]:
    """Create files that must be skipped silently (neither indexed nor reported as bad).

    The hidden ones are *valid* JPEGs on purpose: they must be skipped because they are
    hidden, not because they fail to decode.
    """
    dest.mkdir(parents=True, exist_ok=True)
    readme = dest / "README.txt"
    readme.write_text("Holiday photos, 2023.\n", encoding="utf-8")
    csv = dest / "data.csv"
    csv.write_text("name,width,height\nphoto_000.jpg,96,72\n", encoding="utf-8")
    hidden = make_photo_like(dest / ".hidden.jpg", seed=777)
    thumb = make_photo_like(dest / ".thumbnails" / "x.jpg", seed=778)
    return [readme, csv, hidden, thumb]
