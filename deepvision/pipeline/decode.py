"""Bytes on disk -> an upright RGB PIL image, or a DecodeError with a reason code.

Every failure a photo folder can throw at us ends here as one exception type with a short reason
code, so the caller can keep the good images and summarise the bad ones.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from deepvision.pipeline.transforms import Crop, Preprocess, resize_crop
from deepvision.preprocess import resized_size
from deepvision.types import Reason

DEFAULT_MAX_MEGAPIXELS = 120.0  # above Pillow's 89 MP default so 100 MP camera files still pass

_heif_registered = False


# An image file larger than this many bytes per allowed pixel is refused unread: 8 bytes covers
# an uncompressed 16-bit RGBA TIFF; the headroom is for metadata and embedded previews.
BYTES_PER_PIXEL_LIMIT = 8
FILE_HEADROOM = 64 << 20


class DecodeError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
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
             draft_size: int | None = None, data: bytes | None = None,
             resize_short: int | None = None) -> Image.Image:
    """Decode `path` into an upright RGB image.

    draft_size lets JPEG decode at a reduced DCT scale as long as both sides stay >= draft_size,
    which is several times faster for camera-sized files and loses nothing after the resize.
    data: the file's bytes when the caller has already read them (no second read).
    resize_short: the short side the caller will resize to; the pixel limit then also holds for
    the resized image (a 1x100000 strip is 0.1 MP, but 6,554 MP once its short side is 256).
    """
    return load_rgb_sided(path, max_megapixels, draft_size, data, resize_short)[0]


def load_rgb_sided(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                   draft_size: int | None = None, data: bytes | None = None,
                   resize_short: int | None = None) -> tuple[Image.Image, int]:
    """load_rgb, and the short side of the picture as stored (before draft mode shrank it):
    what the device road reads from a JPEG header, so both roads report the same."""
    _register_plugins()
    configure_pillow()
    with decode_errors():
        source = io.BytesIO(data if data is not None else read_file(path, max_megapixels))
        with Image.open(source) as im:
            check_pixels(im, max_megapixels, resize_short)
            side = min(im.size)
            if draft_size and im.format == "JPEG":
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return to_rgb(_upright(im)), side


def configure_pillow() -> None:
    """Pillow's global settings every opening of an image relies on."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a half-written file must fail, not index grey pixels
    # Our own, configurable limit (check_pixels) replaces Pillow's, whose DecompressionBombError
    # is no OSError and would escape the per-file error handling.
    Image.MAX_IMAGE_PIXELS = None


def max_file_bytes(max_megapixels: float) -> int:
    return int(max_megapixels * 1e6 * BYTES_PER_PIXEL_LIMIT) + FILE_HEADROOM


def read_file(path: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> bytes:
    """The whole file, bounded: only a regular file is read (a FIFO swapped in after discovery
    would block forever, a device never ends), and at most max_file_bytes of it. An empty
    file is a DecodeError like any other unreadable image."""
    limit = max_file_bytes(max_megapixels)
    with decode_errors():
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer before fstat can look.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise DecodeError(Reason.SPECIAL_FILE,
                                  "not a regular file (a FIFO, device or socket): not read")
            data = f.read(limit + 1)
    if len(data) > limit:
        raise DecodeError(Reason.TOO_LARGE,
                          f"file is over {limit >> 20} MiB, more than any image within the "
                          f"{max_megapixels:g} MP limit; raise it with --max-megapixels")
    if not data:
        raise DecodeError(Reason.EMPTY, "zero-byte file")
    return data


def file_error(exc: FileNotFoundError | PermissionError) -> DecodeError:
    """The reason a file that vanished or cannot be read gets, whatever kind of file it is."""
    if isinstance(exc, FileNotFoundError):
        return DecodeError(Reason.VANISHED, "file disappeared before it was read")
    return DecodeError(Reason.PERMISSION_DENIED, "permission denied: make the file readable")


@contextmanager
def decode_errors() -> Iterator[None]:
    """Every exception reading or decoding a file can raise, as a DecodeError with its reason."""
    try:
        yield
    except DecodeError:
        raise
    except (FileNotFoundError, PermissionError) as exc:
        raise file_error(exc) from exc
    except UnidentifiedImageError as exc:
        raise DecodeError(Reason.NOT_AN_IMAGE, "not a recognised image format") from exc
    except MemoryError as exc:  # a decoder's own allocation: this file, not the run, fails
        raise DecodeError(Reason.TOO_LARGE, "out of memory decoding this image; lower "
                          "--max-megapixels or --workers") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        text = str(exc)
        reason = Reason.TRUNCATED if "truncat" in text.lower() else Reason.CORRUPT
        raise DecodeError(reason, f"cannot decode: {text}") from exc


@dataclass(frozen=True)
class Size:
    """Width and height of pixels that are not a PIL image (a video frame, an array)."""

    width: int
    height: int


def check_pixels(im: Image.Image | Size, max_megapixels: float,
                 resize_short: int | None = None) -> None:
    """The pixel limit on the source and, given the short side it will be resized to, on what
    the resize allocates (an extreme aspect ratio upscales to billions of pixels)."""
    mp = im.width * im.height / 1e6
    if mp > max_megapixels:
        raise DecodeError(
            Reason.TOO_LARGE,
            f"{im.width}x{im.height} is {mp:.0f} megapixels, over the {max_megapixels:g} MP limit; "
            "raise it with --max-megapixels",
        )
    if resize_short is None:
        return
    w, h = resized_size(im.width, im.height, resize_short)
    if w * h / 1e6 > max_megapixels:
        raise DecodeError(
            Reason.TOO_LARGE,
            f"{im.width}x{im.height} has an extreme aspect ratio: resizing its short side to "
            f"{resize_short} px makes {w}x{h} ({w * h / 1e6:.0f} megapixels), over the "
            f"{max_megapixels:g} MP limit; raise it with --max-megapixels",
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


def pil_crop(path: str, pre: Preprocess, max_megapixels: float,
             data: bytes | None = None) -> Crop:
    """Pillow's road: file -> upright RGB (draft mode) -> uint8 (3, crop, crop).
    Raises DecodeError."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    image, side = load_rgb_sided(path, max_megapixels, pre.draft_size, data, pre.resize)
    return Crop(resize_crop(pil_to_tensor(image), pre), side)
