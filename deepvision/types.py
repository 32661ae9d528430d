"""The records every stage shares. Plain frozen dataclasses and string enums: no torch, no PIL.

The enums are `str` subclasses whose values are what the JSON outputs and the catalog carry, so
`json.dumps` and sqlite see exactly the strings they always did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class _Text(str, Enum):
    def __str__(self) -> str:  # f-strings and str() give the value, as in JSON
        return str(self.value)


class Reason(_Text):
    """Why a file could not be indexed or queried (README, "Failure reasons")."""

    EMPTY = "empty"
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"
    NOT_AN_IMAGE = "not-an-image"
    UNSUPPORTED_FORMAT = "unsupported-format"
    TOO_LARGE = "too-large"
    PERMISSION_DENIED = "permission-denied"
    BROKEN_SYMLINK = "broken-symlink"
    SPECIAL_FILE = "special-file"  # a FIFO, device or socket (or a link to one): never read
    VANISHED = "vanished"
    IO_ERROR = "io-error"
    BAD_FILENAME = "bad-filename"
    MISSING = "missing"  # listed in an eval CSV but not on disk
    NO_VIDEO_STREAM = "no-video-stream"  # a video container with only audio (or nothing)
    TIMEOUT = "timeout"  # a video that took longer than --video-timeout to sample


class Change(_Text):
    """What one `index` run did to one file."""

    ADDED = "added"
    UPDATED = "updated"
    RENAMED = "renamed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"


class Status(_Text):
    """A file's state in the catalog."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One image file as seen on disk at discovery time."""

    path: str  # absolute, not symlink-resolved: the name the user knows it by
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that could not be indexed (or queried), and why. A result, not an exception."""

    path: str
    reason: Reason
    message: str


class Tier(_Text):
    """How two images are related (`dupes` pairs; a verified search match is a copy)."""

    EXACT = "exact"  # the same bytes
    COPY = "copy"  # the same picture: one geometric transform maps most of one onto the other
    SIMILAR = "similar"  # the same scene or object, another shot (or an unverified neighbour)


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned region of an image as fractions of its upright width and height
    (0..1), so it can be drawn on any thumbnail of it."""

    x0: float
    y0: float
    x1: float
    y1: float

    def as_list(self) -> list[float]:
        return [round(v, 4) for v in (self.x0, self.y0, self.x1, self.y1)]


@dataclass(frozen=True, slots=True)
class Verification:
    """Why two images match: local features of both, matched and checked with RANSAC.

    transform: the 3x3 homography (row-major) that maps the query's normalised coordinates
    (fractions of its width and height) onto the indexed image's. points: a sample of the
    inlier pairs (qx, qy, mx, my), also normalised, for drawing."""

    inliers: int
    score: float  # 0..1: how strongly the geometry confirms the match (verify.verified_score)
    query_box: Box  # the matched region in the query
    match_box: Box  # the matched region in the indexed image
    transform: tuple[float, ...]
    points: tuple[tuple[float, float, float, float], ...] = ()
    # "features": keypoints + a homography; "pixels": the whole pictures agree pixel for pixel
    # at a tiny size (a thumbnail too small for keypoints; inliers 0, identity transform)
    method: str = "features"


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What is known about an indexed file besides its pixels (pipeline.metadata reads it at
    index time; the catalog keeps it; filters select by it). None: not known."""

    kind: str  # image | video
    file_size: int
    taken: str | None = None  # ISO 8601; with its UTC offset when one is known
    taken_source: str | None = None  # exif | video (the container's creation time) | mtime
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    lat: float | None = None  # WGS 84 degrees, north positive
    lon: float | None = None  # east positive
    width: int | None = None  # as shown: after the EXIF orientation
    height: int | None = None
    duration: float | None = None  # a video's, in seconds

    @property
    def camera(self) -> str | None:
        """'Make Model', without the make twice when the model already names it."""
        make, model = (self.make or "").strip(), (self.model or "").strip()
        if make and model.lower().startswith(make.lower()):
            make = ""
        return " ".join(p for p in (make, model) if p) or None


@dataclass(frozen=True, slots=True)
class Match:
    rank: int
    path: str
    score: float  # cosine similarity, higher is more similar
    file_id: int | None = None  # the catalog's id of the file (what `serve` addresses images by)
    timestamp: float | None = None  # seconds into the matched video (its best frame); None: image
    query_timestamp: float | None = None  # seconds into the query video of that best pair
    # Local-feature verification (match/): None when it did not run for this candidate
    # (--no-verify, beyond --verify-top, a video frame); else whether the geometry held.
    verified: bool | None = None
    verification: Verification | None = None  # the evidence, when verified is True
    # A match (a copy of the query, or a part of one), as opposed to another similar image:
    # verified, or (unverified) a score above the calibrated copy threshold.
    match: bool = False
    meta: FileMeta | None = None  # the indexed file's metadata (date, camera, place, size)


@dataclass(frozen=True)
class FileVectors:
    """What one input file became: one vector for an image, one per sampled frame for a
    video (times[i] in seconds belongs to vectors[i]), or a failure."""

    pos: int
    vectors: np.ndarray  # float32 (n, dim); n == 0 exactly when failure is set
    times: tuple[float | None, ...]  # (None,) for an image
    failure: Failure | None = None


@dataclass(frozen=True)
class EmbeddedBatch:
    """Items are positions in the input sequence; vectors[i] belongs to items[i]. A video's
    sampled frames share its position (items repeat, times[i] tells them apart) and always
    arrive together in one batch; times is None when the batch holds no frames."""

    items: list[int]
    vectors: np.ndarray  # float32 (len(items), dim), L2-normalised
    failures: list[tuple[int, Failure]]
    times: list[float | None] | None = None
    # float32 (len(items), V, dim): the images' query views (turned by 90, 180 and 270°, then
    # zoomed: descriptor.QueryViews, asked for with views=...); None when not asked for.
    query_views: np.ndarray | None = None

    def files(self) -> list[FileVectors]:
        """Per input file, in order of first appearance. A video with any failed frame fails
        as a whole (its other frames are dropped): a file is indexed completely or not."""
        failed = dict(self.failures)
        rows: dict[int, list[int]] = {}
        for row, pos in enumerate(self.items):
            if pos not in failed:
                rows.setdefault(pos, []).append(row)
        times = self.times or [None] * len(self.items)
        out = [FileVectors(pos, self.vectors[r], tuple(times[i] for i in r))
               for pos, r in rows.items()]
        empty = self.vectors[:0]
        return out + [FileVectors(pos, empty, (), f) for pos, f in failed.items()]
