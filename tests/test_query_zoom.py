"""Query-time zoom (issue #17, second and third rounds): the centre of the query's square
enlarged, as one more query view, for queries whose picture fills the model's input; how it is
derived, the order of the views, the size gate, how recorded descriptors read it, and the search
path end to end with the stub backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from search_helpers import first_matches, index_folder

from deepvision.models.descriptor import PRE_17, Descriptor, QueryViews


def test_centre_zoom_enlarges_the_centre_and_cuts_the_rest() -> None:
    import torch

    from deepvision.pipeline.transforms import Preprocess, centre_zoom

    pre = Preprocess(32, 32, (0.5,) * 3, (0.5,) * 3, "bilinear")
    crops = torch.zeros((2, 3, 32, 32), dtype=torch.uint8)
    crops[:, 0, 8:24, 8:24] = 255  # a red centre half, black around it
    out = centre_zoom(crops, 0.5, pre)
    assert out.shape == crops.shape and out.dtype == torch.uint8
    assert out[:, 0].float().mean() > 250 and out[:, 1:].max() == 0  # all red now
    assert crops[:, 0].float().mean() < 70  # the oracle can fail: the input was mostly black
    assert torch.equal(centre_zoom(crops, 1.0, pre), crops)


def test_query_views_are_the_turns_then_the_zoom(tiny_model: str) -> None:
    import torch

    from deepvision.models.registry import resolve
    from deepvision.pipeline.embedder import Embedder, EmbedOptions
    from deepvision.pipeline.transforms import Crop, centre_zoom

    spec, weights, _ = resolve(tiny_model, None)
    emb = Embedder.load(spec, weights, Descriptor(), EmbedOptions(device="cpu", workers=0))
    crops = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    big = [Crop(c, 32) for c in crops]  # pictures as large as the input: zoomed
    got = emb.embed_crops(["a", "b", "c"], big, QueryViews(True, 0.75))
    assert got.query_views is not None and got.query_views.shape == (3, 4, emb.dim)
    net = emb.network
    for k in (1, 2, 3):
        assert np.allclose(got.query_views[:, k - 1], net.embed(torch.rot90(crops, k, (2, 3))),
                           atol=1e-5)
    zoomed = net.embed(centre_zoom(crops, 0.75, emb.model.preprocess))
    assert np.allclose(got.query_views[:, 3], zoomed, atol=1e-5)
    assert not np.allclose(zoomed, got.vectors, atol=1e-2)  # a view of its own
    only = emb.embed_crops(["a"], big[:1], QueryViews(False, 0.75)).query_views
    assert only is not None and only.shape == (1, 1, emb.dim)
    assert emb.embed_crops(["a"], big[:1], QueryViews()).query_views is None


def test_a_picture_smaller_than_the_input_gets_no_zoom(tiny_model: str) -> None:
    # A query enlarged to reach the input is not zoomed into again: its zoom view is its own
    # vector (no score changes), while the picture that fills the input next to it is zoomed.
    import torch

    from deepvision.models.registry import resolve
    from deepvision.pipeline.embedder import Embedder, EmbedOptions
    from deepvision.pipeline.transforms import Crop, centre_zoom

    spec, weights, _ = resolve(tiny_model, None)
    emb = Embedder.load(spec, weights, Descriptor(), EmbedOptions(device="cpu", workers=0))
    assert emb.model.preprocess.crop == 32
    crops = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    got = emb.embed_crops(["small", "large"], [Crop(crops[0], 31), Crop(crops[1], 32)],
                          QueryViews(False, 0.75))
    assert got.query_views is not None
    assert np.array_equal(got.query_views[0, 0], got.vectors[0])
    zoomed = emb.network.embed(centre_zoom(crops[1:], 0.75, emb.model.preprocess))
    assert np.allclose(got.query_views[1, 0], zoomed[0], atol=1e-5)
    assert not np.allclose(got.query_views[1, 0], got.vectors[1], atol=1e-2)
    assert QueryViews(True, 0.75).zooms(224, 224) and not QueryViews(True, 0.75).zooms(223, 224)
    assert not QueryViews(True, 0.0).zooms(1000, 224)


def test_recorded_descriptors_keep_their_query_views() -> None:
    # An index made with #17's first defaults recorded query turns but no zoom (or no field):
    # it keeps searching without one; one made before #17 has neither; new ones zoom.
    first_round = {"pooling": "rmac", "flip": False, "scales": [1.0], "frame": "full",
                   "turns": False, "query_turns": True}
    assert Descriptor.from_dict(first_round).query_views == QueryViews(True, 0.0)
    assert Descriptor.from_dict({"pooling": "avg"}) == PRE_17
    assert PRE_17.query_views.count == 0
    assert Descriptor.from_dict(Descriptor().to_dict()) == Descriptor()
    second_round = {**first_round, "query_zoom": 0.0}
    assert Descriptor.from_dict(second_round).query_views == QueryViews(True, 0.0)
    assert Descriptor().query_views == QueryViews(True, 0.75)  # the third round's default
    assert Descriptor().label == "rmac+full (query turns, query zoom 0.75)"
    assert Descriptor(query_zoom=0.0).stored == Descriptor().stored  # the same vectors


def _framed(src: Path, target: Path) -> None:
    """The picture shrunk to the centre 75 % of a bigger canvas with the same loud pattern
    around every copy (a screenshot's window, in small): the whole frames look alike."""
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[::8] = (255, 0, 255)
    canvas[:, ::8] = (0, 255, 0)
    canvas[:8, :] = (255, 255, 0)
    with Image.open(src) as im:
        photo = im.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR)
    out = Image.fromarray(canvas, "RGB")
    out.paste(photo, (8, 8))
    out.save(target)


def test_search_finds_a_framed_copy_only_with_the_zoom(cli, tiny_model, tmp_path: Path,
                                                      photos: Path) -> None:
    # A new index searches with the zoom; --no-zoom leaves it out, --zoom asks for it.
    idx = tmp_path / "idx"
    index_folder(cli, photos, idx, tiny_model)
    queries = tmp_path / "q"
    queries.mkdir()
    for src in sorted(photos.iterdir()):
        _framed(src, queries / f"{src.stem}.png")

    with_zoom = first_matches(cli, queries, idx, "--zoom")
    assert all(q == m for q, m in with_zoom.items()), with_zoom
    assert first_matches(cli, queries, idx) == with_zoom  # the default
    without = first_matches(cli, queries, idx, "--no-zoom")
    assert any(q != m for q, m in without.items()), "the stub finds framed copies anyway"


def test_search_does_not_zoom_into_a_small_query(cli, tiny_model, tmp_path: Path,
                                                 photos: Path) -> None:
    # Framed copies smaller than the stub's 32 px input: every score is the one --no-zoom
    # gives (the zoom is left out, not merely outvoted); at 64 px the zoom changes scores.
    idx = tmp_path / "idx"
    index_folder(cli, photos, idx, tiny_model)
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir()
    large.mkdir()
    for src in sorted(photos.iterdir()):
        _framed(src, large / f"{src.stem}.png")
        with Image.open(large / f"{src.stem}.png") as im:
            im.resize((28, 28), Image.Resampling.BILINEAR).save(small / f"{src.stem}.png")

    def scores(folder: Path, flag: str) -> list[float]:
        done = cli("search", folder, "--index-dir", idx, "--format", "json", "-k", "5",
                   "--workers", "0", flag)
        assert done.exit_code == 0, done.stderr
        return [m["score"] for q in json.loads(done.stdout)["queries"] for m in q["matches"]]

    assert scores(small, "--zoom") == scores(small, "--no-zoom")
    assert scores(large, "--zoom") != scores(large, "--no-zoom")


def test_an_index_without_the_zoom_keeps_its_query_views_and_needs_no_rebuild(
        cli, tiny_model, tmp_path: Path, photos: Path) -> None:
    # An index of the second round recorded query_zoom 0.0. Descriptor options equal to its
    # stored part (the query fields aside) index into it as they are; a stored part that
    # differs still asks for a rebuild; info says how to search it with the zoom.
    from dataclasses import replace

    from deepvision.errors import ExitCode
    from deepvision.store.indexstore import IndexStore
    from deepvision.store.manifest import write_manifest

    idx = tmp_path / "idx"
    index_folder(cli, photos, idx, tiny_model)
    store = IndexStore(idx)
    m = store.read_manifest()
    assert m.descriptor == Descriptor()
    write_manifest(store.manifest_path, replace(m, descriptor=replace(m.descriptor,
                                                                      query_zoom=0.0)))
    (photos / "img_00.jpg").unlink()
    done = cli("index", photos, "--index-dir", idx, "--pooling", "rmac", "--frame", "full",
               "--workers", "0", "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 1
    assert store.read_manifest().descriptor.query_zoom == 0.0  # kept as recorded
    done = cli("index", photos, "--index-dir", idx, "--pooling", "gem", "--workers", "0")
    assert done.exit_code == ExitCode.INCOMPATIBLE and "rebuild" in done.stderr
    info = json.loads(cli("info", "--index-dir", idx, "--json").stdout)
    assert "`search --zoom`" in info["descriptor_note"]
    assert "no rebuild needed" in info["descriptor_note"]
