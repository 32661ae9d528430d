"""Copy or similar shot (match.tiers), and `dupes` grouping by tier through the real CLI.

Oracles: a resized, slightly cropped, brightened, re-saved copy is `copy`; two shots of one
scene (the same background, a subject that moved; or the camera turned a little and moved)
are `similar`; other photos never link.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from deepvision.match import features as feats
from deepvision.match import tiers
from deepvision.types import Tier

BULK = Path(__file__).resolve().parent.parent / "bulk_images"


def photo(name: str, side: int = 640) -> Image.Image:
    with Image.open(BULK / f"{name}.jpg") as im:
        out = im.convert("RGB")
    out.thumbnail((side, side))
    return out


def resaved(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def near_copy(img: Image.Image) -> Image.Image:
    """Resized to 70 %, 5 % cropped off two sides, brighter, JPEG 70."""
    w, h = img.size
    out = img.crop((round(w * 0.05), round(h * 0.05), w, h))
    out = out.resize((round(out.width * 0.7), round(out.height * 0.7)), Image.Resampling.LANCZOS)
    return resaved(ImageEnhance.Brightness(out).enhance(1.15), 70)


def shot(background: Image.Image, subject: Image.Image, at: tuple[float, float]) -> Image.Image:
    """The scene with the subject (an oval cut from another photo) standing at `at`."""
    out = background.copy()
    sub = subject.resize((background.width // 3, background.height // 2))
    mask = Image.new("L", sub.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, *sub.size), fill=255)
    out.paste(sub, (round(at[0] * background.width), round(at[1] * background.height)), mask)
    return resaved(out, 90)


def tier_of(a: Image.Image, b: Image.Image) -> Tier:
    ea, eb = feats.stored_evidence(np.asarray(a)), feats.stored_evidence(np.asarray(b))
    ga, gb = tiers.grey_square(np.asarray(a)), tiers.grey_square(np.asarray(b))
    return tiers.tier(ea, eb, lambda: ga, lambda: gb)[0]


def test_resized_copy_is_copy() -> None:
    for name in ("summer_palace_pagoda", "chelsea_cat", "rocket_launch"):
        original = photo(name)
        assert tier_of(original, near_copy(original)) == Tier.COPY, name
        assert tier_of(near_copy(original), original) == Tier.COPY, name


def test_subject_that_moved_is_similar() -> None:
    scene, subject = photo("summer_palace_lakeside"), photo("chelsea_cat")
    first, second = shot(scene, subject, (0.1, 0.3)), shot(scene, subject, (0.5, 0.35))
    assert tier_of(first, second) == Tier.SIMILAR
    assert tier_of(first, near_copy(first)) == Tier.COPY  # the same shot, copied: a copy


def test_camera_turned_is_similar() -> None:
    scene = photo("campus_skyline")
    turned = scene.rotate(8, Image.Resampling.BICUBIC, expand=False).crop(
        (40, 30, scene.width - 40, scene.height - 30))
    assert tier_of(scene, resaved(turned, 90)) == Tier.SIMILAR


def test_unrelated_photos_are_similar_at_most() -> None:
    assert tier_of(photo("grass"), photo("coffee_cup")) == Tier.SIMILAR


def test_dupes_groups_copies_and_keeps_similar_shots_apart(tmp_path: Path, cli, tiny_model) -> None:
    """Real CLI (stub network, --threshold -1 so that every pair is linked by the vectors):
    tiers alone decide the groups."""
    folder = tmp_path / "pics"
    folder.mkdir()
    scene, subject = photo("summer_palace_lakeside"), photo("chelsea_cat")
    shot(scene, subject, (0.1, 0.3)).save(folder / "burst_1.jpg", quality=92)
    shot(scene, subject, (0.5, 0.35)).save(folder / "burst_2.jpg", quality=92)
    pagoda = photo("summer_palace_pagoda")
    pagoda.save(folder / "pagoda.jpg", quality=92)
    near_copy(pagoda).save(folder / "pagoda_copy.jpg", quality=92)
    (folder / "pagoda_same_bytes.jpg").write_bytes((folder / "pagoda.jpg").read_bytes())
    photo("coffee_cup").save(folder / "coffee.jpg", quality=92)
    idx = tmp_path / "idx"
    done = cli("index", folder, "--index-dir", idx, "--model", tiny_model, "--quiet",
               "--workers", "0")
    assert done.exit_code == 0, done.stderr
    out = cli("dupes", "--index-dir", idx, "--threshold", "-1", "--format", "json")
    assert out.exit_code == 0, out.stderr
    groups = [{Path(f["path"]).name: f["kind"] for f in g["files"]}
              for g in json.loads(out.stdout)["groups"]]
    assert groups == [{"pagoda.jpg": "exact", "pagoda_copy.jpg": "copy",
                       "pagoda_same_bytes.jpg": "exact"}]
    out = cli("dupes", "--index-dir", idx, "--threshold", "-1", "--format", "json", "--similar")
    doc = json.loads(out.stdout)
    assert doc["similar"] is True
    kinds = {Path(f["path"]).name: f["kind"] for g in doc["groups"] for f in g["files"]}
    assert kinds["pagoda_copy.jpg"] == "copy"
    # every similar member is directly similar to its group's copy cluster: no chains
    assert all(g["tier"] in ("exact", "copy", "similar") for g in doc["groups"])
