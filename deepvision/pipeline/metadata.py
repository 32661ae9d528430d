"""A file -> its FileMeta: when it was taken, with what camera, where, its size and kind.

Only headers are read: Pillow's `Image.open` parses an image's header and EXIF block without
decoding pixels (pillow-heif likewise for HEIC), PyAV's `av.open` a video's container header.
Metadata is a bonus, never a reason to fail: a broken EXIF block, a field of the wrong type or
an unreadable file only leave fields unknown, and the capture time falls back to the mtime.
"""

from __future__ import annotations

import re
import struct
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import ExifTags, Image

from deepvision.pipeline.discover import looks_like_video
from deepvision.types import FileMeta

# What a damaged or hostile EXIF block (or header) makes Pillow, pillow-heif and PyAV raise
# (libheif's errors arrive as RuntimeError).
BROKEN = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, SyntaxError,
          ZeroDivisionError, OverflowError, EOFError, RuntimeError, struct.error)
_EXIF_TIME = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")
_ISO6709 = re.compile(r"([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)")
# Orientations 5-8 turn the picture by 90°: what people see is the stored size swapped.
_TURNED = frozenset({5, 6, 7, 8})


def read_metadata(path: str, size: int, mtime_ns: int) -> FileMeta:
    """Everything the header of `path` tells; never raises for a bad file."""
    video = looks_like_video(path)
    try:
        found = _video_fields(path) if video else _image_fields(path)
    except BROKEN:
        found = {}
    if "taken" not in found:
        found["taken"], found["taken_source"] = _local_iso(mtime_ns / 1e9), "mtime"
    return FileMeta(kind="video" if video else "image", file_size=size, **found)


# ---- images ----------------------------------------------------------------------------------


def _image_fields(path: str) -> dict[str, Any]:
    from deepvision.pipeline.decode import _register_plugins, configure_pillow

    _register_plugins()  # HEIC through pillow-heif, as decoding does
    configure_pillow()  # no DecompressionBombError: only the header is read here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF; it is only missing data
        with Image.open(path) as im:  # inside: a TIFF's IFDs are read from the open file
            width, height = im.size
            exif = _safe(im.getexif)
            out: dict[str, Any] = (_safe(lambda: _exif_fields(exif)) or {}) if exif else {}
    turned = exif is not None and _safe(lambda: exif.get(ExifTags.Base.Orientation)) in _TURNED
    out["width"], out["height"] = (height, width) if turned else (width, height)
    return out


def _exif_fields(exif: Image.Exif) -> dict[str, Any]:
    """Each field on its own: one broken tag costs only that tag."""
    base = exif
    sub = _safe(lambda: exif.get_ifd(ExifTags.IFD.Exif)) or {}
    gps = _safe(lambda: exif.get_ifd(ExifTags.IFD.GPSInfo)) or {}
    out: dict[str, Any] = {
        "make": _text(base.get(ExifTags.Base.Make)),
        "model": _text(base.get(ExifTags.Base.Model)),
        "lens": _text(sub.get(ExifTags.Base.LensModel)),
    }
    taken = _exif_time(sub.get(ExifTags.Base.DateTimeOriginal),
                       sub.get(ExifTags.Base.OffsetTimeOriginal))
    if taken:
        out["taken"], out["taken_source"] = taken, "exif"
    place = _safe(lambda: _gps(gps))
    if place:
        out["lat"], out["lon"] = place
    return {k: v for k, v in out.items() if v is not None}


def _exif_time(value: Any, offset: Any) -> str | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS' (+ OffsetTimeOriginal '+02:00') -> ISO 8601, or None for
    the blank and zero dates cameras write when their clock was never set."""
    m = _EXIF_TIME.match(_text(value) or "")
    if not m:
        return None
    try:
        y, mo, d, h, mi, s = (int(g) for g in m.groups())
        when = datetime(y, mo, d, h, mi, s)
    except ValueError:  # 0000:00:00 00:00:00, month 13, ...
        return None
    o = _OFFSET.fullmatch(_text(offset) or "")
    if o:
        minutes = (int(o[2]) * 60 + int(o[3])) * (-1 if o[1] == "-" else 1)
        if abs(minutes) < 24 * 60:
            when = when.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    return when.isoformat()


def _gps(gps: dict[int, Any]) -> tuple[float, float] | None:
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), gps.get(ExifTags.GPS.GPSLatitudeRef), "S")
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), gps.get(ExifTags.GPS.GPSLongitudeRef),
                   "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    # 0,0 is in the Gulf of Guinea: what receivers without a fix write, not a place.
    return None if lat == 0 and lon == 0 else (round(lat, 7), round(lon, 7))


def _degrees(dms: Any, ref: Any, negative: str) -> float | None:
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    d, m, s = (float(v) for v in dms)
    if any(v != v for v in (d, m, s)):  # a 0/0 rational is NaN
        return None
    value = d + m / 60 + s / 3600
    return -value if (_text(ref) or "").upper().startswith(negative) else value


# ---- videos ----------------------------------------------------------------------------------


def _video_fields(path: str) -> dict[str, Any]:
    import av

    try:
        with av.open(path, "r", timeout=10) as box:
            tags = {k.lower(): v for k, v in box.metadata.items()}
            stream = box.streams.video[0] if box.streams.video else None
            out: dict[str, Any] = {}
            if box.duration:
                out["duration"] = round(box.duration / av.time_base, 3)
            if stream is not None and stream.codec_context.width:
                out["width"] = stream.codec_context.width
                out["height"] = stream.codec_context.height
    except av.error.FFmpegError:
        return {}
    out.update(_video_tags(tags))
    return out


def _video_tags(tags: dict[str, str]) -> dict[str, Any]:
    """QuickTime/MP4 tags: Apple's local creation date (with its offset) before the UTC
    creation_time every muxer writes; Apple's and Android's ISO 6709 location."""
    out: dict[str, Any] = {
        "make": _text(tags.get("com.apple.quicktime.make") or tags.get("make")),
        "model": _text(tags.get("com.apple.quicktime.model") or tags.get("model")),
    }
    taken = _iso(tags.get("com.apple.quicktime.creationdate"), local=False) or _iso(
        tags.get("creation_time"), local=True)
    if taken:
        out["taken"], out["taken_source"] = taken, "video"
    where = _ISO6709.match(tags.get("com.apple.quicktime.location.iso6709")
                           or tags.get("location") or "")
    if where:
        lat, lon = float(where[1]), float(where[2])
        if -90 <= lat <= 90 and -180 <= lon <= 180 and (lat, lon) != (0, 0):
            out["lat"], out["lon"] = lat, lon
    return {k: v for k, v in out.items() if v is not None}


def _iso(text: str | None, local: bool) -> str | None:
    """An ISO 8601 tag -> ISO 8601 text; local: an absolute (UTC) time, shown on this machine's
    wall clock like an mtime. Muxers write 1970-01-01 or 1904-01-01 for "unknown"."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.year <= 1970:
        return None
    if when.tzinfo is None:
        return when.isoformat()
    return when.astimezone().isoformat() if local else when.isoformat()


# ---- shared ----------------------------------------------------------------------------------


def _local_iso(seconds: float) -> str:
    """An absolute time on this machine's wall clock, with its offset."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _text(value: Any) -> str | None:
    """An EXIF/tag string, cleaned: cameras pad with NULs and spaces; bytes may be anything."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:200] or None  # a hostile tag must not fill the catalog


def _safe(get: Any) -> Any:
    try:
        return get()
    except BROKEN:
        return None
