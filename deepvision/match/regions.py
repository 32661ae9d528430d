"""Query-side regions: where a query may hold a picture as a part (a web page, a screenshot, a
collage), so that the picture's own vector can find its source when the whole query's cannot.

A picture on a page is an area textured in both directions among flat ones and edges that
run one way (backgrounds, bars, panels, rules): that map, opened to drop thin structures and
closed to fill a photo's own flat patches, splits into components whose boxes are the
proposals.
"""

from __future__ import annotations

import numpy as np

from deepvision.types import Box

WORK = 256  # long side of the map
WINDOW = 7  # local contrast window (pixels of the map)
TEXTURE = 12.0  # mean absolute Sobel response (both directions) that counts as texture
BACKGROUND = 28.0  # colour difference from the page's own colour that is not page
CLOSE = 5  # gaps narrower than this inside a picture are filled
OPEN = 11  # structures thinner than this (text bars, rules) are dropped
MIN_AREA, MAX_AREA = 0.03, 0.85  # a proposal's share of the query
MIN_FILL = 0.45  # of its box the component must cover (a blob, not a scatter)
MAX_PROPOSALS = 3
FLAT = 6.0  # mean Sobel magnitude below which a place is flat (a sticker, a painted shape)
PATCH = 0.02  # a flat patch this share of the query or larger is painted over
REPAIR_MIN, REPAIR_MAX = 0.08, 0.6  # ... when all of them together cover this much
GRID = 32  # cells a side of the map the clear rectangle is found on
CLEAR_MIN = 0.2  # the clear rectangle's least share of the query


def proposals(rgb: np.ndarray) -> list[Box]:
    """Up to MAX_PROPOSALS boxes (fractions) of picture-like areas that are a part of the
    query, largest first; [] for a query that is one picture throughout."""
    import cv2

    h, w = rgb.shape[:2]
    scale = WORK / max(h, w)
    small = cv2.resize(rgb[..., :3] if rgb.ndim == 3 else np.dstack([rgb] * 3),
                       (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = (_textured(small) | _off_background(small)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((OPEN, OPEN), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((CLOSE, CLOSE), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    sh, sw = mask.shape
    boxes = []
    for x, y, bw, bh, area in stats[1:count]:
        share = bw * bh / (sw * sh)
        if MIN_AREA <= share <= MAX_AREA and area >= MIN_FILL * bw * bh:
            boxes.append((bw * bh, Box(x / sw, y / sh, (x + bw) / sw, (y + bh) / sh)))
    boxes.sort(key=lambda b: -b[0])
    out = [b for _, b in boxes[:MAX_PROPOSALS]]
    clear = _clear_rectangle(_textured(small))
    return [*out, clear] if clear is not None else out


def _clear_rectangle(textured: np.ndarray) -> Box | None:
    """The largest axis-aligned rectangle with detail throughout (on a GRID x GRID map), when
    flat areas cut into the picture: what is left of a photo that stickers or shapes cover.
    None when the whole query has detail, or when what is left is too small to search."""
    import cv2

    grid = cv2.resize(textured.astype(np.float32), (GRID, GRID),
                      interpolation=cv2.INTER_AREA) >= 0.5
    if grid.mean() > MAX_AREA or grid.mean() < CLEAR_MIN:
        return None
    best, box = 0, None
    heights = np.zeros(GRID, np.int64)
    for row in range(GRID):
        heights = np.where(grid[row], heights + 1, 0)
        for left in range(GRID):  # widest run of columns at least h tall, for each h
            h = heights[left]
            right = left
            while h and right < GRID:
                h = min(h, heights[right])
                if h * (right - left + 1) > best:
                    best = int(h * (right - left + 1))
                    box = Box(left / GRID, (row - h + 1) / GRID, (right + 1) / GRID,
                              (row + 1) / GRID)
                right += 1
    return box if best >= CLEAR_MIN * GRID * GRID else None


def _textured(small: np.ndarray) -> np.ndarray:
    """Detail in both directions: the edges of bars, rules and panels change only across
    them, a photo's detail changes both ways."""
    import cv2

    grey = small.mean(axis=2)
    gx = cv2.blur(np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)), (WINDOW, WINDOW))
    gy = cv2.blur(np.abs(cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)), (WINDOW, WINDOW))
    return np.minimum(gx, gy) > TEXTURE


def _off_background(small: np.ndarray) -> np.ndarray:
    """Away from the page's own colour (its most common one): a photo's flat sky or wall is
    still not the page."""
    quant = (small // 16).astype(np.int32)
    codes = (quant[..., 0] * 256 + quant[..., 1] * 16 + quant[..., 2]).ravel()
    mode = np.bincount(codes).argmax()
    background = (np.array([mode // 256, mode // 16 % 16, mode % 16]) * 16 + 8).astype(np.float32)
    return np.abs(small - background).max(axis=2) > BACKGROUND


def cut(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The box's pixels (a copy, contiguous)."""
    h, w = rgb.shape[:2]
    x0, y0 = int(box.x0 * w), int(box.y0 * h)
    x1, y1 = max(x0 + 1, round(box.x1 * w)), max(y0 + 1, round(box.y1 * h))
    return np.ascontiguousarray(rgb[y0:y1, x0:x1])


def repaired(rgb: np.ndarray) -> np.ndarray | None:
    """The query with its large flat patches painted over from their surroundings (OpenCV's
    Telea inpainting, at WORK pixels): stickers and shapes pasted over a photo weigh on its
    vector; without them it looks more like the photo. None when no flat patch is large
    enough to matter."""
    import cv2

    h, w = rgb.shape[:2]
    scale = WORK / max(h, w)
    small = cv2.resize(rgb[..., :3] if rgb.ndim == 3 else np.dstack([rgb] * 3),
                       (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    grey = small.mean(axis=2).astype(np.float32)
    edges = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    flat = (cv2.blur(edges, (WINDOW, WINDOW)) < FLAT).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=8)
    big = [k for k in range(1, count) if stats[k, 4] >= PATCH * flat.size]
    mask = np.isin(labels, big).astype(np.uint8)
    if not (REPAIR_MIN <= mask.mean() <= REPAIR_MAX):
        return None
    # out to the patches' own edges (the flat map is WINDOW-blurred) and their seam
    grown = cv2.dilate(mask, np.ones((WINDOW + 4, WINDOW + 4), np.uint8))
    return cv2.inpaint(small, grown, 5, cv2.INPAINT_TELEA)
