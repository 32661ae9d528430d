"""Which indexed files a search (or `dupes`) may return: by date, camera, folder, kind, pixel
size and place. `Filter` is the one request record the CLI and the service both build (with
`build_filter`, which checks every value before any heavy work); the catalog turns it into
SQL over the metadata `index` stored (store.catalog), and the FAISS search then only looks at
the vectors of the files that pass (store.faiss_index).

Dates are compared as wall-clock times, the local time the picture was taken (what a person
remembers: a photo taken at 23:30 in Tokyo belongs to that day, wherever the index is
searched). An EXIF time is its own wall clock; an absolute time (a file's mtime, a video's UTC
creation time) is shown in the indexing machine's time zone.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from deepvision.errors import UsageError

KINDS = ("image", "video")
SORTS = ("score", "date")
DEFAULT_RADIUS_KM = 10.0
EARTH_RADIUS_KM = 6371.0088  # the IUGG mean radius
_EPOCH = datetime(1970, 1, 1)
_DATE = re.compile(r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?)?)?)?")


@dataclass(frozen=True)
class Filter:
    """Every field left at its default lets everything through. after/before are wall-clock
    times (naive datetimes), after inclusive, before exclusive (build_filter makes `--before
    2024-05-01` mean "up to the end of that day")."""

    after: datetime | None = None
    before: datetime | None = None
    camera: str | None = None  # a case-insensitive part of "make model"
    folders: tuple[str, ...] = ()  # absolute; a file passes when it is inside any of them
    kind: str | None = None  # image | video
    min_width: int | None = None  # pixels, as shown (after the EXIF orientation)
    min_height: int | None = None
    near: tuple[float, float] | None = None  # (lat, lon) in degrees
    radius_km: float = DEFAULT_RADIUS_KM

    @property
    def active(self) -> bool:
        return self != Filter(radius_km=self.radius_km)

    @property
    def needs_metadata(self) -> bool:
        """Whether it asks for more than folders (those are read off the paths)."""
        return Filter(folders=self.folders, radius_km=self.radius_km) != self

    def describe(self) -> str:
        """The filter in words, for notes ("no indexed file passes ...")."""
        parts = [f"after {self.after.isoformat(' ')}" if self.after else "",
                 f"before {self.before.isoformat(' ')}" if self.before else "",
                 f"camera {self.camera!r}" if self.camera else "",
                 f"kind {self.kind}" if self.kind else "",
                 f"width >= {self.min_width}" if self.min_width else "",
                 f"height >= {self.min_height}" if self.min_height else "",
                 (f"within {self.radius_km:g} km of {self.near[0]:g},{self.near[1]:g}"
                  if self.near else ""),
                 f"in {', '.join(self.folders)}" if self.folders else ""]
        return ", ".join(p for p in parts if p) or "no filter"


def build_filter(*, after: str | None = None, before: str | None = None,
                 camera: str | None = None, folders: Sequence[str] = (),
                 kind: str | None = None, min_width: int | None = None,
                 min_height: int | None = None, near: str | None = None,
                 radius_km: float | None = None) -> Filter:
    """A Filter from option text (the CLI's flags, the API's query parameters), or a
    UsageError that names the flag to fix."""
    start = parse_when(after, "--after") if after else None
    end = parse_when(before, "--before", end=True) if before else None
    if start and end and start >= end:
        raise UsageError(f"--after {after} is not earlier than --before {before}: nothing "
                         "can pass")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: choose image or video")
    for flag, value in (("--min-width", min_width), ("--min-height", min_height)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: give a number of pixels >= 1")
    if camera is not None and not camera.strip():
        raise UsageError("--camera is empty; give part of the make or model, e.g. 'pixel 7'")
    if radius_km is not None and near is None:
        raise UsageError("--radius needs --near LAT,LON")
    if radius_km is not None and not (0 < radius_km <= math.pi * EARTH_RADIUS_KM):
        raise UsageError(f"--radius {radius_km:g}: give kilometres, > 0 and at most 20015")
    return Filter(after=start, before=end, camera=camera.strip() if camera else None,
                  folders=tuple(_folder(f) for f in folders), kind=kind,
                  min_width=min_width, min_height=min_height,
                  near=parse_near(near) if near else None,
                  radius_km=DEFAULT_RADIUS_KM if radius_km is None else radius_km)


def parse_when(text: str, flag: str, end: bool = False) -> datetime:
    """'2024', '2024-05', '2024-05-01', '2024-05-01T13:45[:10]' (or a space for the T) -> the
    start of that period; with end=True the start of the next one, so `--before 2024-05`
    takes in all of May."""
    m = _DATE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{flag} {text!r}: use a date such as 2024, 2024-05, 2024-05-01 or "
                         "2024-05-01T13:45")
    year, month, day, hour, minute, second = (int(g) if g else None for g in m.groups())
    try:
        start = datetime(year or 1, month or 1, day or 1, hour or 0, minute or 0, second or 0)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc}") from None
    if not end:
        return start
    if second is not None:
        return start + timedelta(seconds=1)
    if minute is not None:
        return start + timedelta(minutes=1)
    if day is not None:
        return start + timedelta(days=1)
    if month is not None:
        return start.replace(year=start.year + (month == 12), month=month % 12 + 1)
    return start.replace(year=start.year + 1)


def parse_near(text: str) -> tuple[float, float]:
    """'48.8584,2.2945' -> (lat, lon), checked to be a place on Earth."""
    parts = text.replace(" ", "").split(",")
    try:
        lat, lon = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--near {text!r}: use LAT,LON in degrees, e.g. 48.8584,2.2945") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise UsageError(f"--near {text!r}: latitude must be within ±90 and longitude within "
                         "±180")
    return lat, lon


def _folder(text: str) -> str:
    if not text.strip():
        raise UsageError("--folder is empty; give a folder the index holds files from")
    # Absolute but not symlink-resolved: the catalog keeps paths the way they were indexed.
    return os.path.abspath(os.path.expanduser(text)).rstrip("/") or "/"


def wall_clock_key(when: datetime) -> float:
    """Seconds from 1970-01-01 on the wall clock (the offset, if any, is ignored): the number
    the catalog stores and compares dates by."""
    return (when.replace(tzinfo=None) - _EPOCH).total_seconds()


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) on a sphere of the Earth's mean radius."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
