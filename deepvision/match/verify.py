"""Geometric verification: two pictures' local features -> do they show the same picture, where.

A pure function of two feature sets (`verify`), so it runs anywhere (a thread, a Ray task) and
is tested with planted transforms. Descriptors are matched as RootSIFT (Arandjelović &
Zisserman: the Hellinger kernel separates SIFT matches better than L2), each indexed point
to its nearest query point with Lowe's ratio test, and the matches are checked with OpenCV's
USAC MAGSAC++ homography. A mirrored copy is checked through the mirrored descriptors of the
query (a fixed permutation of SIFT's bins, features.LocalFeatures.mirror), so it costs no
second feature extraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepvision.match.features import WORK_SIDE, Evidence, LocalFeatures
from deepvision.types import Box, Verification

RATIO = 0.8  # Lowe's ratio test on the query's points (the larger set: a stricter test)
MIN_MATCHES = 8  # tentative matches below this: no homography is tried
MIN_INLIERS = 10  # a homography with fewer inliers is chance (bench/QUALITY.md, #25)
REPROJ_PX = 8.0  # MAGSAC's threshold, in the WORK_SIDE frame (1.25 % of the long side)
MAX_POINTS_SHOWN = 60  # inlier pairs kept in a Verification for drawing
MIN_FEATURES = 12  # fewer keypoints on either side: verification cannot decide
# Whole-picture comparison (tiny grey pictures, zero-mean correlation), for pictures of the
# same shape only. 0.8: on the first measurement 80-px JPEG-20 thumbnails scored >= 0.825
# with their original at 32 x 32, other photos <= 0.61 (bench/QUALITY.md, #25).
PIXEL_MATCH = 0.8
ASPECT_TOLERANCE = 0.08  # relative difference of width/height still called the same shape
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
WHOLE = Box(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Outcome:
    """What verification concluded: a Verification when the geometry holds; `decided` False
    when either picture had too few features to tell (a flat sky, a tiny icon)."""

    verification: Verification | None
    decided: bool


def _mirror_permutation() -> np.ndarray:
    """Bin order of a SIFT descriptor of the mirrored patch: OpenCV lays bins out as
    (row, column, orientation) in the keypoint's frame, whose x axis is the keypoint's own
    orientation; a mirrored patch gets the mirrored orientation, so in that frame the rows
    swap and the orientations turn the other way (checked on a mirrored photo: 268 of 271
    matches land on the mirrored keypoint, tests/test_verify.py)."""
    r, c, o = np.meshgrid(np.arange(4), np.arange(4), np.arange(8), indexing="ij")
    return (((3 - r) * 4 + c) * 8 + (8 - o) % 8).ravel()


MIRROR = _mirror_permutation()
_FLIP = np.array([[-1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def tentative(query: np.ndarray, cand: np.ndarray, ratio: float = RATIO) -> np.ndarray:
    """(m, 2) index pairs (query point, candidate point): each candidate point's nearest query
    point when it passes the ratio test, one candidate point per query point (the closest)."""
    if len(query) < 2 or not len(cand):
        return np.zeros((0, 2), np.int64)
    sim = cand @ query.T  # RootSIFT vectors have unit L2 norm
    rows = np.arange(len(cand))
    first = sim.argmax(axis=1)
    best = sim[rows, first]
    sim[rows, first] = -np.inf  # cheaper than argpartition for the runner-up
    second = sim.max(axis=1)
    # squared L2 distances of unit vectors: 2 - 2 sim; the ratio test on distances
    d1, d2 = np.sqrt(np.maximum(2 - 2 * best, 0)), np.sqrt(np.maximum(2 - 2 * second, 0))
    ok = np.flatnonzero(d1 < ratio * d2)
    pairs = np.stack([first[ok], ok], axis=1)
    order = np.argsort(-best[ok])
    _, uniq = np.unique(pairs[order, 0], return_index=True)
    return pairs[order[uniq]]


def verify(query: LocalFeatures, cand: LocalFeatures, *, mirror: bool = True,
           min_inliers: int = MIN_INLIERS) -> Outcome:
    """Whether the indexed picture's features (cand) map onto the query's by one homography,
    trying the mirrored query when the plain one fails (mirror=True)."""
    if len(query) < MIN_FEATURES or len(cand) < MIN_FEATURES:
        return Outcome(None, False)
    found = _fit(query, cand, query.root, cand.root, min_inliers)
    if found is None and mirror:
        found = _fit(query.mirror, cand, query.mirror.root, cand.root, min_inliers, pre=_FLIP)
    return Outcome(found, True)


def _fit(query: LocalFeatures, cand: LocalFeatures, q: np.ndarray, c: np.ndarray,
         min_inliers: int, pre: np.ndarray | None = None) -> Verification | None:
    import cv2

    pairs = tentative(q, c)
    if len(pairs) < max(MIN_MATCHES, min_inliers):
        return None
    src, dst = query.pixels()[pairs[:, 0]], cand.pixels()[pairs[:, 1]]
    h, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, REPROJ_PX, maxIters=2000,
                                 confidence=0.999)
    if h is None or mask is None:
        return None
    inl = mask.ravel().astype(bool)
    if inl.sum() < min_inliers or not _plausible(h, src[inl], dst[inl]):
        return None
    return _result(h, query, cand, pairs[inl], pre)


def _plausible(h: np.ndarray, src: np.ndarray, dst: np.ndarray) -> bool:
    """A homography a copy can have: orientation kept (no reflection: mirrors are tried
    explicitly), a scale within 1/40..40, the inliers spread over an area in both pictures
    (not all on one blob, where any homography fits)."""
    a = h[:2, :2] / h[2, 2]
    det = float(np.linalg.det(a))
    if not (1 / 1600 < det < 1600):
        return False
    side = WORK_SIDE * 0.04
    return bool(np.ptp(src, axis=0).min() > side and np.ptp(dst, axis=0).min() > side)


def _result(h: np.ndarray, query: LocalFeatures, cand: LocalFeatures, pairs: np.ndarray,
            pre: np.ndarray | None) -> Verification:
    """Boxes and the transform in normalised coordinates (fractions of each picture)."""
    sq = _to_norm(query)
    sc = _to_norm(cand)
    hn = np.linalg.inv(sc) @ h @ sq  # query fractions -> candidate fractions
    pts_q = query.xy[pairs[:, 0]]
    if pre is not None:  # the fit was on the mirrored query: compose the mirror back in
        hn = hn @ pre
        pts_q = pts_q * [-1, 1] + [1, 0]
    hn = hn / hn[2, 2]
    pts_c = cand.xy[pairs[:, 1]]
    query_box = _frame_box(np.linalg.inv(hn))  # the indexed picture's frame, in the query
    match_box = _frame_box(hn)  # the query's frame, in the indexed picture
    inliers = len(pairs)
    step = max(1, inliers // MAX_POINTS_SHOWN)
    points = tuple((float(a), float(b), float(c2), float(d)) for (a, b), (c2, d)
                   in zip(pts_q[::step], pts_c[::step], strict=True))
    return Verification(inliers, verified_score(inliers), query_box, match_box,
                        tuple(float(v) for v in hn.ravel()), points)


def _to_norm(f: LocalFeatures) -> np.ndarray:
    """Fractions of the picture -> the WORK_SIDE pixel frame of LocalFeatures.pixels."""
    scale = WORK_SIDE / max(f.width, f.height)
    return np.diag([f.width * scale, f.height * scale, 1.0])


def _frame_box(h: np.ndarray) -> Box:
    """The unit square mapped by h, clipped to the unit square: where one picture's frame
    lands in the other."""
    corners = np.array([[0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], np.float64)
    mapped = corners @ h.T
    w = mapped[:, 2:3]
    if (w <= 1e-9).any():  # a corner maps through infinity: the frame is not a box there
        return Box(0.0, 0.0, 1.0, 1.0)
    xy = np.clip(mapped[:, :2] / w, 0.0, 1.0)
    return Box(float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()),
               float(xy[:, 1].max()))


def verified_score(inliers: int) -> float:
    """0..1, rising with the inliers: 10 -> 0.4, 30 -> 0.67, 100 -> 0.87."""
    return inliers / (inliers + 15.0)


def tiny_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Zero-mean normalised correlation of two tiny pictures (-1..1); 0 for a flat one."""
    x, y = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
    x, y = x - x.mean(), y - y.mean()
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y) / norm if norm > 1e-3 else 0.0


def same_shape(a: LocalFeatures, b: LocalFeatures) -> bool:
    ra, rb = a.width / max(a.height, 1), b.width / max(b.height, 1)
    return abs(ra - rb) <= ASPECT_TOLERANCE * max(ra, rb)


def verify_evidence(query: Evidence, cand: Evidence, *, mirror: bool = True,
                    min_inliers: int = MIN_INLIERS, pixel_match: float = PIXEL_MATCH) -> Outcome:
    """Keypoints first (any part of either picture, any transform); for two pictures of the
    same shape, the whole pictures compared at a tiny size when keypoints do not confirm."""
    found = verify(query.features, cand.features, mirror=mirror, min_inliers=min_inliers)
    if found.verification is not None or not same_shape(query.features, cand.features):
        return found
    ncc = tiny_correlation(query.tiny, cand.tiny)
    if ncc >= pixel_match:
        return Outcome(Verification(0, ncc, WHOLE, WHOLE, IDENTITY, (), "pixels"), True)
    return Outcome(None, found.decided or bool(query.tiny.std() > 4 and cand.tiny.std() > 4))
