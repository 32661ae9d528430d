"""Local-feature verification (deepvision/match): planted transforms with known truth.

Oracles: the box verification returns against where the edit put the picture (IoU >= 0.8),
the mirrored descriptors against descriptors of the mirrored picture, verification of other
photos (never verified), the stored form's size (<= 16 KB) and its round trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from deepvision.match import features as feats
from deepvision.match import verify as ver
from deepvision.match.store import FeatureStore
from deepvision.services import edits
from deepvision.types import Box

BULK = Path(__file__).resolve().parent.parent / "bulk_images"
PHOTOS = ["chelsea_cat", "coffee_cup", "rocket_launch", "summer_palace_pagoda", "campus_skyline",
          "astronaut_eileen_collins"]


def photo(name: str, side: int = 512) -> Image.Image:
    with Image.open(BULK / f"{name}.jpg") as im:
        out = im.convert("RGB")
    out.thumbnail((side, side))
    return out


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union


def stored(img: Image.Image) -> feats.Evidence:
    return feats.Evidence.from_bytes(feats.stored_evidence(np.asarray(img)).to_bytes())


def query(img: Image.Image) -> feats.Evidence:
    return feats.query_evidence(np.asarray(img.convert("RGB")))


@pytest.mark.parametrize("name", PHOTOS)
def test_crop_is_verified_with_its_box(name: str) -> None:
    original = photo(name)
    crop, truth = edits.crop25_with_box(original)  # truth: where the crop is in the original
    outcome = ver.verify_evidence(query(crop), stored(original))
    assert outcome.verification is not None, name
    assert iou(outcome.verification.match_box, truth) >= 0.8


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_in_a_page_is_verified_with_its_box(name: str) -> None:
    original = photo(name)
    page, truth = edits.in_page_with_box(original)  # truth: where the photo is in the page
    outcome = ver.verify_evidence(query(page), stored(original))
    assert outcome.verification is not None, name
    assert iou(outcome.verification.query_box, truth) >= 0.8
    assert iou(outcome.verification.match_box, Box(0, 0, 1, 1)) >= 0.8  # all of it shown


@pytest.mark.parametrize("name", PHOTOS)
def test_occluded_copy_is_verified(name: str) -> None:
    original = photo(name)
    outcome = ver.verify_evidence(query(edits.occlude35(original)), stored(original))
    assert outcome.verification is not None, name
    assert iou(outcome.verification.match_box, Box(0, 0, 1, 1)) >= 0.8


def test_turned_half_is_verified_with_its_box() -> None:
    original = photo("chelsea_cat")
    part, truth = edits.turn90_half_with_box(original)
    outcome = ver.verify_evidence(query(part), stored(original))
    assert outcome.verification is not None
    assert iou(outcome.verification.match_box, truth) >= 0.8


def test_mirrored_copy_is_verified_through_permuted_descriptors() -> None:
    original = photo("coffee_cup")
    mirrored = ImageOps.mirror(original)
    plain = ver.verify(query(mirrored).features, stored(original).features, mirror=False)
    assert plain.verification is None  # SIFT is not mirror-invariant ...
    outcome = ver.verify_evidence(query(mirrored), stored(original))
    assert outcome.verification is not None  # ... the permutation makes it so
    # the point (x, y) of the query is (1 - x, y) of the original
    for qx, qy, mx, my in outcome.verification.points:
        assert abs((1 - qx) - mx) < 0.03 and abs(qy - my) < 0.03


def test_mirror_permutation_matches_extracted_descriptors() -> None:
    img = photo("chelsea_cat")
    a = feats.extract(np.asarray(img), 300)
    b = feats.extract(np.asarray(ImageOps.mirror(img)))
    pairs = ver.tentative(b.root, a.mirror.root)
    near = np.abs(a.mirror.xy[pairs[:, 1]] - b.xy[pairs[:, 0]]).max(axis=1) < 0.01
    assert len(pairs) >= 50 and near.mean() > 0.9


def test_thumbnail_is_verified() -> None:
    original = photo("rocket_launch")
    outcome = ver.verify_evidence(query(edits.thumb80(original)), stored(original))
    assert outcome.verification is not None


def test_other_photos_are_not_verified() -> None:
    evidence = {n: stored(photo(n)) for n in PHOTOS}
    for q in PHOTOS:
        page = query(edits.in_page(photo(q)))
        crop = query(edits.crop25(photo(q)))
        for other in PHOTOS:
            if other == q:
                continue
            assert ver.verify_evidence(page, evidence[other]).verification is None, (q, other)
            assert ver.verify_evidence(crop, evidence[other]).verification is None, (q, other)


def test_flat_pictures_are_undecided_not_refuted() -> None:
    flat = Image.new("RGB", (300, 200), (120, 160, 200))
    outcome = ver.verify_evidence(query(flat), stored(photo("grass")))
    assert outcome.verification is None and not outcome.decided


def test_stored_evidence_fits_the_budget_and_round_trips(tmp_path: Path) -> None:
    ev = feats.stored_evidence(np.asarray(photo("summer_palace_pagoda", 1024)))
    data = ev.to_bytes()
    assert len(data) <= 16 * 1024
    back = feats.Evidence.from_bytes(data)
    assert np.array_equal(back.features.desc, ev.features.desc)
    assert np.abs(back.features.xy - ev.features.xy).max() < 1e-4
    store = FeatureStore(tmp_path)
    store.put({"abc": ev})
    assert store.missing(["abc", "def"]) == ["def"]
    assert np.array_equal(store.get(["abc"])["abc"].tiny, ev.tiny)
    store.close()


def test_feature_store_in_a_read_only_folder_keeps_results_in_memory(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        store = FeatureStore(folder)
        ev = feats.stored_evidence(np.asarray(photo("grass", 256)))
        store.put({"h": ev})
        assert "h" in store.get(["h"])
    finally:
        folder.chmod(0o755)
