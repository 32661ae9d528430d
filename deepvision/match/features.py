"""Local features of one picture: SIFT keypoints and descriptors, in a compact stored form.

SIFT (OpenCV) was chosen by measurement over ORB and AKAZE (bench/QUALITY.md, issue #25): it
keeps matching on 80-px thumbnails and photos of screens where the binary descriptors fall
apart, needs no learned weights, and OpenCV's descriptor entries are integers 0..255, so a
uint8 copy is lossless. An indexed picture keeps at most STORED_POINTS of them, chosen
spread over the picture (a crop of a quarter of it still holds a quarter of the points):
128 bytes of descriptor + 4 of position each, ~15 KB per picture at most.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

# Bump when what `extract` computes changes: stored features of another version are recomputed.
FEATURE_VERSION = 1
WORK_SIDE = 640  # the long side pictures are brought to before SIFT (a query's too)
# A query is first tried at this long side (SIFT's time grows with the pixels: 56 -> ~22 ms
# here); only when no candidate verifies there is it extracted again at WORK_SIDE, where the
# small parts (a photo on a page) keep their detail.
QUICK_SIDE = 400
MIN_SIDE = 240  # a smaller picture (a thumbnail) is enlarged to this short side first
# Per indexed picture: FINE_POINTS from the picture at WORK_SIDE and COARSE_POINTS from it at
# COARSE_SIDE (the structures an 80-px thumbnail still shows: verified thumbnails went from
# 13 to 17 of 30 in the first measurement, bench/QUALITY.md #25). 108 x 132 bytes + the tiny
# picture: 15.3 KB (the budget: 16 KB).
FINE_POINTS = 72
COARSE_POINTS = 36
COARSE_SIDE = 200
STORED_POINTS = FINE_POINTS + COARSE_POINTS
QUERY_POINTS = 1500  # per query: only held in memory for one search
GRID = 4  # stored points are spread over GRID x GRID cells of the picture
TINY = 32  # the tiny grey picture kept for whole-picture comparisons (TINY x TINY bytes)


def _mirror_permutation() -> np.ndarray:
    """Bin order of a SIFT descriptor of the mirrored patch: OpenCV lays bins out as
    (row, column, orientation) in the keypoint's frame, whose x axis is the keypoint's own
    orientation; a mirrored patch gets the mirrored orientation, so in that frame the rows
    swap and the orientations turn the other way (checked on a mirrored photo: 268 of 271
    matches land on the mirrored keypoint, tests/test_verify.py)."""
    r, c, o = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return (((3 - r) * 4 + c) * 8 + (8 - o) % 8).ravel()


MIRROR = _mirror_permutation()  # LocalFeatures.mirror


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints as fractions of the picture's width and height, with their descriptors.

    xy: float32 (n, 2); desc: uint8 (n, 128); width, height: the picture's upright size in
    pixels (for aspect-correct geometry)."""

    xy: np.ndarray
    desc: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.xy)

    @cached_property
    def root(self) -> np.ndarray:
        """RootSIFT (Arandjelović & Zisserman): L1-normalised, square-rooted, so a dot product
        is the Hellinger kernel. Computed once per picture (a query meets many candidates)."""
        d = self.desc.astype(np.float32)
        d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
        return np.sqrt(d)

    @cached_property
    def mirror(self) -> LocalFeatures:
        """The features of the mirrored picture, without extracting them again: positions
        mirrored, descriptor bins permuted (MIRROR)."""
        xy = self.xy.copy()
        xy[:, 0] = 1.0 - xy[:, 0]
        return LocalFeatures(xy, self.desc[:, MIRROR], self.width, self.height)

    def pixels(self) -> np.ndarray:
        """Keypoints in a common pixel frame: the picture scaled to a long side of WORK_SIDE."""
        scale = WORK_SIDE / max(self.width, self.height)
        return self.xy * np.array([self.width * scale, self.height * scale], np.float32)

    def to_bytes(self) -> bytes:
        """The stored form: header (n, width, height), uint16 positions (1/65535 of the
        side), uint8 descriptors."""
        head = np.array([len(self.xy), self.width, self.height], np.uint32).tobytes()
        pos = np.clip(np.rint(self.xy * 65535), 0, 65535).astype(np.uint16).tobytes()
        return head + pos + self.desc.astype(np.uint8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> LocalFeatures:
        n, width, height = (int(v) for v in np.frombuffer(data[:12], np.uint32))
        pos = np.frombuffer(data[12:12 + 4 * n], np.uint16).reshape(n, 2)
        desc = np.frombuffer(data[12 + 4 * n:12 + 4 * n + 128 * n], np.uint8).reshape(n, 128)
        return cls(pos.astype(np.float32) / 65535, desc, width, height)


def empty(width: int = 1, height: int = 1) -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8),
                         width, height)


def at_most(rgb: np.ndarray, side: int = 2 * WORK_SIDE) -> np.ndarray:
    """The picture with its long side brought down to `side` (a copy only when it shrinks):
    all verification reads of a picture, so a 100-MP upload is not held whole. Twice the
    features' side: a part of a page (match.regions) keeps the detail its own vector needs."""
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= side:
        return rgb
    scale = side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb


def working_grey(rgb: np.ndarray, side: int = WORK_SIDE, min_side: int = MIN_SIDE) -> np.ndarray:
    """The uint8 grey picture SIFT runs on: long side `side` at most, short side min_side
    at least (a thumbnail's few pixels give keypoints only when enlarged)."""
    import cv2

    grey = grey_of(rgb)
    h, w = grey.shape
    scale = min(side / max(h, w), 1.0)
    scale = max(scale, min(min_side / min(h, w), side / max(h, w)))
    if abs(scale - 1.0) > 1e-3:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1
                          else cv2.INTER_CUBIC)
    return grey


def extract(rgb: np.ndarray, max_points: int = QUERY_POINTS,
            side: int = WORK_SIDE, min_side: int = MIN_SIDE) -> LocalFeatures:
    """SIFT on the picture (H, W, 3 uint8 RGB or H, W grey) brought to a long side of `side`,
    the strongest max_points kept spread over the picture (spread_keep)."""
    import cv2

    h, w = rgb.shape[:2]
    grey = working_grey(rgb, side, min_side)
    opencv: Any = cv2  # its stubs lack SIFT_create, in the main module since OpenCV 4.4
    sift = opencv.SIFT_create(nfeatures=max(max_points * 3, 500))
    keypoints, desc = sift.detectAndCompute(grey, None)
    if desc is None or not keypoints:
        return empty(w, h)
    gh, gw = grey.shape
    xy = np.array([k.pt for k in keypoints], np.float32) / np.array([gw, gh], np.float32)
    response = np.array([k.response for k in keypoints], np.float32)
    keep = spread_keep(xy, response, max_points)
    return LocalFeatures(np.clip(xy[keep], 0, 1), desc[keep].astype(np.uint8), w, h)


def spread_keep(xy: np.ndarray, response: np.ndarray, n: int) -> np.ndarray:
    """Indices of n keypoints, strongest first within each GRID x GRID cell, taken from the
    cells in turn: a picture whose strong corners all sit in one place still keeps points
    everywhere else (a crop of a quarter of it must find its share)."""
    if len(xy) <= n:
        return np.argsort(-response)
    cell = (np.minimum((xy * GRID).astype(int), GRID - 1) * [GRID, 1]).sum(axis=1)
    order = np.lexsort((-response, cell))  # by cell, strongest first in each
    rank_in_cell = np.empty(len(xy), np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(cell[order])) + 1]
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        rank_in_cell[order[a:b]] = np.arange(b - a)
    return np.lexsort((-response, rank_in_cell))[:n]


def tiny(rgb: np.ndarray) -> np.ndarray:
    """The picture as TINY x TINY grey uint8, its aspect ignored (area averaging): enough to
    tell a whole-picture copy (a thumbnail, a recompressed or recoloured copy) from another
    picture, where a thumbnail has too few pixels for keypoints."""
    import cv2

    return cv2.resize(grey_of(rgb), (TINY, TINY), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Evidence:
    """What verification needs of one picture: its keypoints and its tiny picture."""

    features: LocalFeatures
    tiny: np.ndarray  # uint8 (TINY, TINY)

    def to_bytes(self) -> bytes:
        return self.tiny.astype(np.uint8).tobytes() + self.features.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Evidence:
        n = TINY * TINY
        small = np.frombuffer(data[:n], np.uint8).reshape(TINY, TINY)
        return cls(LocalFeatures.from_bytes(data[n:]), small)


def stored_evidence(rgb: np.ndarray) -> Evidence:
    """An indexed picture's evidence: FINE_POINTS at WORK_SIDE and COARSE_POINTS at
    COARSE_SIDE, in one set (positions are fractions, so the scales share one frame)."""
    fine = extract(rgb, FINE_POINTS)
    coarse = extract(rgb, COARSE_POINTS, COARSE_SIDE, 1)
    both = LocalFeatures(np.concatenate([fine.xy, coarse.xy]),
                         np.concatenate([fine.desc, coarse.desc]), fine.width, fine.height)
    return Evidence(both, tiny(rgb))


def query_evidence(rgb: np.ndarray, side: int = WORK_SIDE) -> Evidence:
    """A query's evidence: up to QUERY_POINTS keypoints at a long side of `side`."""
    return Evidence(extract(rgb, QUERY_POINTS, side), tiny(rgb))
