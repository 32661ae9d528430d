"""Issue #25's measuring tools: the strong edits (each does what its name says, the same way
every run, with the truth box where the photo went), the sets and pools make_evalset writes,
the harness's scoring (bench/verify_quality.py) and `eval --synthetic --edits strong`."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from imagefactory import make_photo_like, photo_like_image
from PIL import Image
from test_eval import load_make_evalset

from deepvision.services import edits

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return photo_like_image(2501, (300, 200))


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32)


def box_px(box: edits.Box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    w, h = size
    return round(box.x0 * w), round(box.y0 * h), round(box.x1 * w), round(box.y1 * h)


def test_the_strong_edits_are_the_issues_eight() -> None:
    assert list(edits.STRONG_EDITS) == ["crop25", "in_page", "screen_photo", "stacked",
                                        "thumb80", "meme", "turn90_half", "occlude35"]
    assert set(edits.EDIT_SETS["all"]) == set(edits.ROBUST_EDITS) | set(edits.STRONG_EDITS)


@pytest.mark.parametrize("name", list(edits.STRONG_EDITS))
def test_each_strong_edit_is_deterministic_and_per_photo(name: str, photo: Image.Image) -> None:
    fn = edits.STRONG_EDITS[name]
    first, again = fn(photo), fn(photo)
    assert np.array_equal(pixels(first), pixels(again))
    assert first.size != photo.size or not np.array_equal(pixels(first), pixels(photo))
    if name in edits.STRONG_TRUTH:  # the plain edit and its twin with the box agree
        assert np.array_equal(pixels(edits.STRONG_TRUTH[name](photo)[0]), pixels(first))


def test_a_random_draw_differs_from_photo_to_photo(photo: Image.Image) -> None:
    other = photo_like_image(2502, (300, 200))
    assert edits.crop25_with_box(photo)[1] != edits.crop25_with_box(other)[1]
    assert edits.in_page_with_box(photo)[1] != edits.in_page_with_box(other)[1]


def test_crop25_is_a_quarter_of_the_picture_where_its_box_says(photo: Image.Image) -> None:
    out, box = edits.crop25_with_box(photo)
    assert out.width * out.height / (photo.width * photo.height) == pytest.approx(0.25, abs=0.01)
    assert np.array_equal(pixels(photo.crop(box_px(box, photo.size))), pixels(out))


def test_turn90_half_is_half_of_the_picture_turned(photo: Image.Image) -> None:
    out, box = edits.turn90_half_with_box(photo)
    assert out.width * out.height / (photo.width * photo.height) == pytest.approx(0.5, abs=0.01)
    part = photo.crop(box_px(box, photo.size)).transpose(Image.Transpose.ROTATE_90)
    assert np.array_equal(pixels(part), pixels(out))


def test_in_page_puts_the_photo_at_420_px_where_the_box_says(photo: Image.Image) -> None:
    page, box = edits.in_page_with_box(photo)
    assert page.size == edits.PAGE_SIZE
    x0, y0, x1, y1 = box_px(box, page.size)
    assert 395 <= x1 - x0 <= 445
    inside = pixels(page.crop((x0, y0, x1, y1)))
    expected = pixels(photo.resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS))
    assert np.abs(inside - expected).mean() < 3  # the photo, only resampled
    ring = pixels(page.crop((x0 - 6, y0 - 6, x1 + 6, y1 + 6)))
    assert np.abs(ring[:3] - expected[:3].mean()).mean() > 5 or x0 < 6  # the page around it


def test_thumb80_is_80_px_jpeg(photo: Image.Image) -> None:
    out = edits.thumb80(photo)
    assert max(out.size) == 80 and out.format == "JPEG"


def test_occlude35_covers_about_35_percent(photo: Image.Image) -> None:
    changed = np.abs(pixels(edits.occlude35(photo)) - pixels(photo)).max(axis=2) > 0
    assert 0.30 <= changed.mean() <= 0.40


def test_meme_adds_two_bands_and_mirrors(photo: Image.Image) -> None:
    out = edits.meme(photo)
    band = (out.height - photo.height) // 2
    assert out.width == photo.width and band > 0 and out.format == "JPEG"
    middle = pixels(out.crop((0, band, out.width, band + photo.height)))
    mirrored = pixels(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert np.abs(middle - mirrored).mean() < np.abs(middle - pixels(photo)).mean()
    assert pixels(out.crop((0, 0, 4, band))).mean() > 240  # white band


def test_screen_photo_and_stacked_are_low_quality_jpegs(photo: Image.Image) -> None:
    for fn in (edits.screen_photo, edits.stacked):
        out = fn(photo)
        assert out.format == "JPEG" and out.size != photo.size


def test_near_copy_is_the_whole_picture_smaller(photo: Image.Image) -> None:
    out = edits.near_copy(photo)
    assert 0.5 * 0.92 <= out.width / photo.width <= 0.8 and out.format == "JPEG"
    assert np.array_equal(pixels(out), pixels(edits.near_copy(photo)))


# ---- the sets and pools of make_evalset --------------------------------------------------------


def _needs(*folders: Path) -> None:
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        pytest.skip(f"package data not unpacked: {', '.join(missing)}")


def test_missing_package_data_names_the_apt_command(tmp_path: Path) -> None:
    make_evalset = load_make_evalset()
    dirs = make_evalset.DataDirs(opencv=tmp_path / "no-ocv", mate=tmp_path / "no-mate")
    with pytest.raises(FileNotFoundError, match="apt-get download opencv-doc"):
        make_evalset.build_strong(tmp_path / "b", "b", dirs, 1, groups=1)
    assert make_evalset.main(["--strong", "--source", "a", "--dest", str(tmp_path / "a"),
                              "--mate-data", str(tmp_path / "no-mate")]) == 2


def test_build_strong_writes_the_eval_layout_with_truth(tmp_path: Path) -> None:
    make_evalset = load_make_evalset()
    _needs(make_evalset.MATE_DATA)
    written = make_evalset.build_strong(tmp_path / "s", "a", distractors=2, max_side=160,
                                        groups=2)
    groups = [g for g in written if g != "distractors"]
    assert len(groups) == 2
    for g in groups:
        names = [p.name for p in written[g]]
        assert names == [f"{g}__{e}.jpg" for e in ["original", *edits.STRONG_EDITS]]
    info = json.loads((tmp_path / "s" / "evalset.json").read_text())
    assert len(info["truth"]) == 2 * len(edits.STRONG_TRUTH)
    page_key = f"{groups[0]}/{groups[0]}__in_page.jpg"
    with Image.open(tmp_path / "s" / page_key) as page:
        assert page.size == edits.PAGE_SIZE  # never shrunk: the box stays true
    assert info["truth"][page_key]["of"] == "query"
    assert all(s["licence"] for s in info["sources"].values()) and info["licences"]
    assert len(written["distractors"]) == 2 + len(make_evalset.STRONG_REAL_DISTRACTORS["a"])


def test_build_strong_b_is_opencvs_photos_only(tmp_path: Path) -> None:
    make_evalset = load_make_evalset()
    _needs(make_evalset.OPENCV_DATA)
    make_evalset.build_strong(tmp_path / "b", "b", distractors=1, max_side=128, groups=1)
    info = json.loads((tmp_path / "b" / "evalset.json").read_text())
    assert info["groups"] == ["happy_fish"]
    assert {s["file"].split(":")[0] for s in info["sources"].values()} == {"opencv"}
    assert not set(make_evalset.STRONG_PHOTOS["b"]) & set(make_evalset.strong_photos("a"))


def test_build_dupes_pool_writes_pairs_and_series(tmp_path: Path) -> None:
    make_evalset = load_make_evalset()
    _needs(make_evalset.MATE_DATA)
    info = make_evalset.build_dupes_pool(tmp_path / "p", "a", max_side=128, copies=4)
    pool = tmp_path / "p" / "pool"
    names = {p.name for p in pool.iterdir()}
    assert all(a in names and b in names for a, b in info["copies"] + info["similar"])
    assert len(info["exact"]) == make_evalset.EXACT_COPIES
    for a, b in info["exact"]:
        assert (pool / a).read_bytes() == (pool / b).read_bytes()
    bursts = info["series"]["burst_garden"]
    assert len(bursts) == 6 and len(info["similar"]) >= 6 * 5 // 2
    copies = {frozenset(p) for p in info["copies"]}
    assert not copies & {frozenset(p) for p in info["similar"]}
    by_bytes: dict[bytes, list[str]] = {}
    for p in pool.iterdir():
        by_bytes.setdefault(p.read_bytes(), []).append(p.name)
    twins = {frozenset(v) for v in by_bytes.values() if len(v) > 1}
    assert twins == {frozenset(p) for p in info["exact"]}  # no byte copy the truth misses


# ---- the harness's scoring ---------------------------------------------------------------------


def load_harness() -> ModuleType:
    sys.path.insert(0, str(REPO_ROOT / "bench"))  # its `from _common import ...`
    spec = importlib.util.spec_from_file_location("verify_quality",
                                                  REPO_ROOT / "bench" / "verify_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_harness_scores_a_ranked_list_like_eval() -> None:
    vq = load_harness()
    groups = {"/db/a.jpg": "a", "/db/b.jpg": "b", "/db/x.jpg": None}
    matches = [{"path": "/db/x.jpg", "score": 0.9}, {"path": "/db/a.jpg", "score": 0.8}]
    s = vq.score_query("/q/a__crop25.jpg", "a", matches, groups, 1)
    assert s.edit == "crop25" and s.first_hit == 2 and s.recall[1] == 0.0
    assert s.recall[5] == 1.0 and s.ap == pytest.approx(0.5)
    assert vq.score_query("/q/b__meme.jpg", "b", matches, groups, 1).ap == 0.0
    assert vq.iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)


def test_harness_counts_pairs_by_group_and_kind() -> None:
    vq = load_harness()
    doc = {"groups": [{"files": [{"path": "/p/a.jpg"}, {"path": "/p/a__copy.jpg"},
                                 {"path": "/p/s1.jpg", "kind": "similar"}]}]}
    linked, largest = vq.linked_pairs(doc, count_similar=False)
    assert linked == {frozenset({"a.jpg", "a__copy.jpg"})} and largest == 3
    assert len(vq.linked_pairs(doc, count_similar=True)[0]) == 3


# ---- eval --synthetic --edits ------------------------------------------------------------------


def test_eval_synthetic_with_the_strong_edits(cli, tiny_model, tmp_path: Path) -> None:
    from test_eval_schema import _schema

    jsonschema = pytest.importorskip("jsonschema")
    lib = tmp_path / "library"
    for i in range(6):
        make_photo_like(lib / f"p{i}.jpg", seed=300 + i, size=(160, 120))
    done = cli("eval", "--synthetic", lib, "--model", tiny_model, "--sample", "2",
               "--distractors", "4", "--edits", "strong", "--format", "json", "--workers", "0",
               "--quiet")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    jsonschema.validate(report, _schema())
    assert set(report["by_edit"]) == set(edits.STRONG_EDITS)
    assert cli("eval", lib, "--edits", "strong").exit_code == 2  # only with --synthetic
    assert cli("eval", "--synthetic", lib, "--edits", "nope").exit_code == 2
