"""Issue #17's machinery without real weights: query-time turns (merge_views against a brute
force oracle, the search path end to end with the stub backbone), the descriptor's frame and
turn options and how old manifests read them, the robustness edits, and `eval --synthetic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_helpers import first_matches, index_folder

from deepvision.models.descriptor import Descriptor, parse_descriptor
from deepvision.services import edits
from deepvision.services.ranking import merge_views


def test_merge_views_matches_brute_force_max_over_views() -> None:
    rng = np.random.default_rng(0)
    db = rng.normal(size=(200, 16)).astype(np.float32)
    views = rng.normal(size=(7, 4, 16)).astype(np.float32)
    full = np.einsum("qvd,nd->qvn", views, db)  # every view against every vector
    k = 10
    ids = np.argsort(-full, axis=2)[:, :, :k]
    scores = np.take_along_axis(full, ids, 2)
    got_s, got_i = merge_views(scores, ids, k)
    best = full.max(axis=1)
    want_i = np.argsort(-best, axis=1)[:, :k]
    assert np.array_equal(got_i, want_i)
    assert np.allclose(got_s, np.take_along_axis(best, want_i, 1))


def test_merge_views_pads_when_fewer_ids_than_k() -> None:
    scores = np.array([[[0.9, -np.inf], [0.5, -np.inf]]], np.float32)
    ids = np.array([[[3, -1], [3, -1]]])
    s, i = merge_views(scores, ids, 3)
    assert i.tolist() == [[3, -1, -1]] and s[0, 0] == pytest.approx(0.9)


def test_old_manifests_read_the_descriptor_they_were_built_with() -> None:
    # An index written before frame/turns existed was built with the centre crop, no turns:
    # it must keep describing queries that way, whatever today's default is.
    old = Descriptor.from_dict({"pooling": "avg", "flip": False, "scales": [1.0]})
    assert old.frame == "crop" and old.turns is False
    assert Descriptor.from_dict(Descriptor().to_dict()) == Descriptor()
    assert parse_descriptor(pooling="gem").frame == Descriptor().frame  # others: the default


def test_turned_descriptor_is_invariant_to_quarter_turns() -> None:
    import torch

    from deepvision.models.descriptor import extractor
    from deepvision.pipeline.transforms import Preprocess

    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    pre = Preprocess(32, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    plain = extractor(trunk, pre, Descriptor(pooling="gem")).eval()
    turned = extractor(trunk, pre, Descriptor(pooling="gem", turns=True)).eval()
    with torch.no_grad():
        t0, t1 = turned(x), turned(torch.rot90(x, 1, (2, 3)))
        p0 = plain(x)
        p1 = plain(torch.rot90(x, 1, (2, 3)))
    assert torch.allclose(t0, t1, atol=1e-5)
    assert not torch.allclose(p0, p1, atol=1e-3)  # the oracle can fail: the plain one is not


def test_full_frame_keeps_what_the_centre_crop_cuts_away() -> None:
    import torch

    from deepvision.pipeline.transforms import Preprocess, resize_crop

    img = torch.zeros((3, 40, 120), dtype=torch.uint8)
    img[0, :, :20] = 255  # a red stripe at the left edge of a wide picture
    crop = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, "bilinear")
    full = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, "bilinear", resize_mode="squash")
    assert resize_crop(img, crop)[0].max() == 0  # the centre square never sees it
    out = resize_crop(img, full)
    assert out.shape == (3, 32, 32) and out[0, :, :4].float().mean() > 200


def test_robust_edits_are_deterministic_and_do_what_they_say() -> None:
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), "RGB")
    for name, edit in edits.ROBUST_EDITS.items():
        a, b = edit(img), edit(img)
        assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB"))), name
    assert edits.ROBUST_EDITS["turn90"](img).size == (60, 90)
    crop = edits.ROBUST_EDITS["crop50_random"](img)
    assert 0.5 * 90 - 1 <= crop.width <= 0.6 * 90 + 1 and 0.5 * 60 - 1 <= crop.height <= 36 + 1
    bordered = edits.ROBUST_EDITS["border_white"](img)
    assert bordered.size == (90 + 18, 60 + 18) and bordered.getpixel((0, 0)) == (255, 255, 255)
    other = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8), "RGB")
    assert edits.ROBUST_EDITS["crop50_random"](other).size != crop.size or \
        edits.ROBUST_EDITS["border_colour"](other).getpixel((0, 0)) != \
        edits.ROBUST_EDITS["border_colour"](img).getpixel((0, 0))  # drawn per photo


def test_search_finds_a_turned_copy_only_with_query_turns(cli, tiny_model, tmp_path: Path,
                                                          photos: Path) -> None:
    idx = tmp_path / "idx"
    index_folder(cli, photos, idx, tiny_model)
    queries = tmp_path / "q"
    queries.mkdir()
    for src in sorted(photos.iterdir())[:6]:
        with Image.open(src) as im:
            im.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(queries / f"{src.stem}.png")

    with_turns = first_matches(cli, queries, idx, "--no-verify")
    assert all(q == m for q, m in with_turns.items()), with_turns
    without = first_matches(cli, queries, idx, "--no-turns", "--no-verify")
    assert any(q != m for q, m in without.items()), "the stub finds turned copies anyway"
    # Verification alone finds them too: SIFT does not care which way up a picture is.
    verified = first_matches(cli, queries, idx, "--no-turns")
    assert all(q == m for q, m in verified.items()), verified


def test_eval_synthetic_reports_every_edit_and_a_threshold(cli, tiny_model, tmp_path: Path
                                                           ) -> None:
    from imagefactory import make_photo_like
    from test_eval_schema import _schema

    jsonschema = pytest.importorskip("jsonschema")
    lib = tmp_path / "library"
    for i in range(14):
        make_photo_like(lib / "sub" / f"holiday__{i:02d}.jpg", seed=100 + i)  # '__' in names
    keep = tmp_path / "copies"
    done = cli("eval", "--synthetic", lib, "--model", tiny_model, "--sample", "4",
               "--distractors", "10", "--format", "json", "--workers", "0", "--keep-copies", keep,
               "--quiet")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    jsonschema.validate(report, _schema())
    assert report["protocol"] == "originals" and report["groups"] == 4
    assert report["distractors"] == 10 and report["images"] == 4 * 14 + 10  # all 14 used
    assert all(g.startswith("sub/holiday__") for g in report["by_group"])  # named by photo
    assert set(report["by_edit"]) == set(edits.ROBUST_EDITS)
    assert all(s["queries"] == 4 for s in report["by_edit"].values())
    cal = report["calibration"]
    assert cal["target_precision"] == 0.99 and cal["true_pairs"] == 4 * 14 * 13 // 2
    assert cal["threshold"] is None or (-1 <= cal["threshold"] <= 1 and cal["precision"] >= 0.99)
    assert len(list(keep.rglob("*__*"))) == 4 * 14  # the originals linked, the copies written
    assert sorted(p.name for p in lib.rglob("*")) == sorted(
        ["sub", *(f"holiday__{i:02d}.jpg" for i in range(14))])  # the library is untouched


def test_eval_synthetic_needs_a_folder_and_not_both(cli, tmp_path: Path) -> None:
    assert cli("eval", "--synthetic", tmp_path / "missing").exit_code == 2
    assert cli("eval", tmp_path, "--synthetic", tmp_path).exit_code == 2
