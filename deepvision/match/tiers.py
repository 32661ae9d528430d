"""Copy or similar shot: how two pictures that the vectors call near-duplicates are related.

`exact`: the same bytes (the catalog already shares their vectors). `copy`: the same picture —
local features verify one transform that maps one frame (nearly) inside the other, without a
turn (resized, slightly cropped, recoloured, re-saved), and once aligned the two agree
everywhere they have detail. `similar`: anything else the vectors linked — another shot of the
scene (a stereo partner, a burst frame where something moved, a calibration series).

The rule and its constants were picked by a sweep on two pools of real photos with true copy
pairs and series of similar shots (scripts/make_evalset.py --dupes-pool --source a|b;
bench/QUALITY.md, #25): containment 0.98-0.99, a blur of 2-3 px before the comparison,
cell correlation 0.5-0.7 and at most 0-2 disagreeing cells all kept precision >= 0.92 on
both; the middle of that range is used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepvision.match.features import Evidence
from deepvision.match.verify import same_shape, tiny_correlation, verify_evidence
from deepvision.types import Tier, Verification

CONTAINED = 0.985  # one frame maps inside the other to this share of its area, or more
OVERLAP = 0.5  # and covers at least this share of the other (a slight crop, not a detail)
MAX_TURN = 3.0  # degrees: a copy is not turned (a turned one is found by search, not dupes)
SIDE = 256  # the aligned comparison's picture size (pixels a side): 16-px cells; 128
# missed one pair of still-camera frames of the second pool (precision 0.949), 192 and 256
# held on both pools (0.974-1.000 at recall 0.974-0.976), bench/QUALITY.md
CELLS = 16  # ... split into CELLS x CELLS cells
BLUR = 2.0  # Gaussian sigma (pixels at SIDE) before comparing: forgives a pixel of misalignment
DETAIL = 8.0  # a cell with less grey-level spread than this on either side is not compared
AGREE = 0.7  # a compared cell agrees when its zero-mean correlation is at least this
MAX_DISAGREE = 2  # cells that may disagree (JPEG blocks, a resampled edge) in a copy
PIXEL_COPY = 0.9  # whole-picture tiny correlation of a copy verified without keypoints
PIXEL_SAME = 0.995  # ... or of two same-shape pictures whose keypoints placed them loosely
ECC_COPY = 0.99  # pixel alignment's correlation for a copy without a keypoint transform
ECC_DISAGREE = 1  # ... and the cells that may still disagree
ECC_ASPECT = 0.12  # ... tried only for pictures whose shapes differ by less than this
TINY_CELLS = 4  # ... and its tiny pictures (features.TINY a side) compared in 4 x 4 cells

Pixels = Callable[[], np.ndarray | None]  # a picture's grey SIDE x SIDE pixels, lazily


def tier(a: Evidence, b: Evidence, grey_a: Pixels, grey_b: Pixels,
         dense_a: Callable[[], Evidence | None] | None = None) -> tuple[Tier, Verification | None]:
    """The tier of a linked pair that is not byte-identical, and the verification behind it.
    grey_a/grey_b load the pictures for the aligned comparison only when the geometry
    already says copy (most pairs never read their files). dense_a: a's evidence with a
    query's many keypoints, tried when the two stored ones (108 keypoints each, picked
    separately at two sizes) share too few to verify: a copy at half the size kept other
    keypoints than its original (2 of the 38 copies of the second pool)."""
    found = verify_evidence(a, b, mirror=False).verification
    if found is None and dense_a is not None and (dense := dense_a()) is not None:
        found = verify_evidence(dense, b, mirror=False).verification
    if found is None:
        return (Tier.COPY if _aligned_copy(a, b, grey_a, grey_b) else Tier.SIMILAR), None
    if found.method == "pixels":  # too few keypoints: the tiny pictures decide, cell by cell
        ok = tiny_correlation(a.tiny, b.tiny) >= PIXEL_COPY and _disagreeing(
            a.tiny.astype(np.float32), b.tiny.astype(np.float32), np.ones_like(a.tiny),
            cells=TINY_CELLS) <= MAX_DISAGREE
        return (Tier.COPY if ok else Tier.SIMILAR), found
    if _geometry_of_copy(found) and _agree(grey_a(), grey_b(), found):
        return Tier.COPY, found
    # A small picture's few keypoints place the frames loosely; the same shape and tiny
    # pictures that agree almost exactly still make a copy (a thumbnail of the whole).
    same = same_shape(a.features, b.features) and tiny_correlation(a.tiny, b.tiny) >= PIXEL_SAME
    return (Tier.COPY if same or _aligned_copy(a, b, grey_a, grey_b) else Tier.SIMILAR), found


def _aligned_copy(a: Evidence, b: Evidence, grey_a: Pixels, grey_b: Pixels) -> bool:
    """Without a usable keypoint transform (a picture of little texture, a loose fit): the
    two pictures aligned by their pixels alone (OpenCV's ECC, an affine warp from the
    identity, so only for two pictures of about one shape: a slight crop, a resize), a copy
    when the aligned pictures correlate almost perfectly and agree cell by cell. 0.99: the
    sweep's copies without keypoints aligned at 0.997-0.999, the closest burst frame at
    0.98 (bench/QUALITY.md, #25)."""
    import cv2

    ra = a.features.width / max(a.features.height, 1)
    rb = b.features.width / max(b.features.height, 1)
    if abs(ra - rb) > ECC_ASPECT * max(ra, rb):
        return False
    ga, gb = grey_a(), grey_b()
    if ga is None or gb is None:
        return False
    ga = cv2.GaussianBlur(ga.astype(np.float32), (0, 0), BLUR)
    gb = cv2.GaussianBlur(gb.astype(np.float32), (0, 0), BLUR)
    try:
        # The stubs lack the gaussFiltSize argument OpenCV has taken since 4.1.
        score, warp = cv2.findTransformECC(  # type: ignore[call-overload]
            ga, gb, np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE,
            (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), None, 1)
    except cv2.error:  # did not converge: no alignment, no copy
        return False
    if score < ECC_COPY:
        return False
    flags = cv2.WARP_INVERSE_MAP
    valid = cv2.warpAffine(np.ones_like(ga), warp, (SIDE, SIDE), flags=cv2.INTER_NEAREST | flags)
    warped = cv2.warpAffine(gb, warp, (SIDE, SIDE), flags=cv2.INTER_LINEAR | flags)
    return _disagreeing(ga, warped, valid) <= ECC_DISAGREE


def _area(box: object) -> float:
    return max(0.0, box.x1 - box.x0) * max(0.0, box.y1 - box.y0)  # type: ignore[attr-defined]


def _geometry_of_copy(v: Verification) -> bool:
    qa, ma = _area(v.query_box), _area(v.match_box)
    h = np.array(v.transform).reshape(3, 3)
    a = h[:2, :2] / h[2, 2]
    turn = float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    return max(qa, ma) >= CONTAINED and min(qa, ma) >= OVERLAP and abs(turn) <= MAX_TURN


def _agree(a: np.ndarray | None, b: np.ndarray | None, v: Verification) -> bool:
    """b warped onto a by the verified transform, both blurred: every cell with detail on
    both sides correlates (at most MAX_DISAGREE do not). Unreadable pictures: not a copy."""
    import cv2

    if a is None or b is None:
        return False
    scale = np.diag([SIDE, SIDE, 1.0])
    h = scale @ np.array(v.transform).reshape(3, 3) @ np.linalg.inv(scale)  # a px -> b px
    a = cv2.GaussianBlur(a.astype(np.float32), (0, 0), BLUR)
    valid = cv2.warpPerspective(np.ones_like(a), h, (SIDE, SIDE),
                                flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    warped = cv2.warpPerspective(cv2.GaussianBlur(b.astype(np.float32), (0, 0), BLUR), h,
                                 (SIDE, SIDE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return _disagreeing(a, warped, valid) <= MAX_DISAGREE


def _disagreeing(a: np.ndarray, b: np.ndarray, valid: np.ndarray, cells: int = CELLS) -> int:
    side = a.shape[0] // cells
    bad = 0
    for i in range(cells):
        for j in range(cells):
            cell = (slice(i * side, (i + 1) * side), slice(j * side, (j + 1) * side))
            if valid[cell].min() < 1:
                continue
            x, y = a[cell] - a[cell].mean(), b[cell] - b[cell].mean()
            if x.std() < DETAIL or y.std() < DETAIL:
                continue
            corr = float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))
            bad += corr < AGREE
    return bad


def grey_square(rgb: np.ndarray) -> np.ndarray:
    """A picture as SIDE x SIDE grey (its aspect ignored, as the transform's fractions are)."""
    import cv2

    from deepvision.match.features import grey_of

    return cv2.resize(grey_of(rgb), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


class GreySquares:
    """Each picture's grey_square, read once through `loader` (a path -> its RGB pixels);
    None for a picture that cannot be read now: such a pair cannot be shown to be a copy."""

    def __init__(self, loader: Callable[[str], np.ndarray]) -> None:
        self.loader = loader
        self._held: dict[str, np.ndarray | None] = {}

    def __call__(self, path: str) -> np.ndarray | None:
        if path not in self._held:
            try:
                self._held[path] = grey_square(self.loader(path))
            except Exception:  # unreadable (decode, OpenCV): no comparison
                self._held[path] = None
        return self._held[path]
