"""Bytes on disk -> an upright RGB PIL image, or a DecodeError with a reason code.

Every failure a photo folder can throw at us ends here as one exception type with a short reason
code, so the caller can keep the good images and summarise the bad ones.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

REASONS: dict[str, str] = {
    "empty": "zero-byte file",
    "truncated": "truncated image data",
    "corrupt": "corrupt image data",
    "not-an-image": "not an image Pillow recognises",
    "unsupported-format": "image format not supported",
    "too-large": "over the pixel limit (decompression bomb guard)",
    "permission-denied": "permission denied",
    "broken-symlink": "broken symlink",
    "vanished": "file disappeared before it was read",
    "io-error": "read error",
    "bad-filename": "file name is not valid UTF-8",
}

DEFAULT_MAX_MEGAPIXELS = 120.0  # above Pillow's 89 MP default so 100 MP camera files still pass

_heif_registered = False


class DecodeError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _register_plugins() -> None:
    """HEIC/HEIF come from the maintained pillow-heif plugin (AVIF is built into Pillow)."""
    global _heif_registered
    if not _heif_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _heif_registered = True


def load_rgb(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
             draft_size: int | None = None, data: bytes | None = None) -> Image.Image:
    """Decode `path` into an upright RGB image.

    draft_size lets JPEG decode at a reduced DCT scale as long as both sides stay >= draft_size,
    which is several times faster for camera-sized files and loses nothing after the resize.
    data: the file's bytes when the caller has already read them (no second read).
    """
    _register_plugins()
    configure_pillow()
    with decode_errors():
        source = io.BytesIO(data if data is not None else read_file(path))
        with Image.open(source) as im:
            check_pixels(im, max_megapixels)
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return to_rgb(_upright(im))


def configure_pillow() -> None:
    """Pillow's global settings every opening of an image relies on."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a half-written file must fail, not index grey pixels
    # Our own, configurable limit (check_pixels) replaces Pillow's, whose DecompressionBombError
    # is no OSError and would escape the per-file error handling.
    Image.MAX_IMAGE_PIXELS = None


def read_file(path: str) -> bytes:
    """The whole file; an empty one is a DecodeError like any other unreadable image."""
    with decode_errors(), open(path, "rb") as f:
        data = f.read()
    if not data:
        raise DecodeError("empty", "zero-byte file")
    return data


@contextmanager
def decode_errors() -> Iterator[None]:
    """Every exception reading or decoding a file can raise, as a DecodeError with its reason."""
    try:
        yield
    except DecodeError:
        raise
    except FileNotFoundError as exc:
        raise DecodeError("vanished", "file disappeared before it was read") from exc
    except PermissionError as exc:
        raise DecodeError("permission-denied", "permission denied: make the file readable") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not-an-image", "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        text = str(exc)
        reason = "truncated" if "truncat" in text.lower() else "corrupt"
        raise DecodeError(reason, f"cannot decode: {text}") from exc


def check_pixels(im: Image.Image, max_megapixels: float) -> None:
    mp = im.width * im.height / 1e6
    if mp > max_megapixels:
        raise DecodeError(
            "too-large",
            f"{im.width}x{im.height} is {mp:.0f} megapixels, over the {max_megapixels:g} MP limit; "
            "raise it with --max-megapixels",
        )


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. A broken EXIF block must not cost us an otherwise good photo."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ImageOps.exif_transpose(im) or im
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag (1-8; 1 = upright), read the way ImageOps.exif_transpose reads
    it, for decoders that turn the pixels themselves. A broken EXIF block counts as upright."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a viewer would show it."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _high_depth_to_rgb(im)
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # Transparent pixels often hold garbage colour; show them on white like a browser does.
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK (Adobe inversion handled by the JPEG decoder), ...


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    # Pillow's own convert() clips 16-bit values at 255, which turns most 16-bit photos white.
    arr = np.asarray(im)
    if arr.ndim == 3:  # e.g. I;16 with extra channels is rare; keep the first
        arr = arr[..., 0]
    if im.mode == "F":
        peak = 1.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 255.0
        arr8 = np.clip(np.nan_to_num(arr) * (255.0 / peak), 0, 255)
    elif im.mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
        arr8 = np.clip(arr.astype(np.float64) / 257.0, 0, 255)
    else:
        arr8 = np.clip(arr, 0, 255)
    return Image.fromarray(arr8.round().astype(np.uint8)).convert("RGB")
