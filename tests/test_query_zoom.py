"""Query-time zoom (issue #17, second round): the centre of the query's square enlarged, as one
more query view; how it is derived, the order of the views, how recorded descriptors read it,
and the search path end to end with the stub backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

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
    from deepvision.pipeline.transforms import centre_zoom

    spec, weights, _ = resolve(tiny_model, None)
    emb = Embedder.load(spec, weights, Descriptor(), EmbedOptions(device="cpu", workers=0))
    crops = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    got = emb.embed_crops(["a", "b", "c"], list(crops), QueryViews(True, 0.75))
    assert got.query_views is not None and got.query_views.shape == (3, 4, emb.dim)
    net = emb.network
    for k in (1, 2, 3):
        assert np.allclose(got.query_views[:, k - 1], net.embed(torch.rot90(crops, k, (2, 3))),
                           atol=1e-5)
    zoomed = net.embed(centre_zoom(crops, 0.75, emb.model.preprocess))
    assert np.allclose(got.query_views[:, 3], zoomed, atol=1e-5)
    assert not np.allclose(zoomed, got.vectors, atol=1e-2)  # a view of its own
    only = emb.embed_crops(["a"], [crops[0]], QueryViews(False, 0.75)).query_views
    assert only is not None and only.shape == (1, 1, emb.dim)
    assert emb.embed_crops(["a"], [crops[0]], QueryViews()).query_views is None


def test_recorded_descriptors_keep_their_query_views() -> None:
    # An index made with #17's first defaults recorded query turns but no zoom: it keeps
    # searching without one; one made before #17 has neither.
    first_round = {"pooling": "rmac", "flip": False, "scales": [1.0], "frame": "full",
                   "turns": False, "query_turns": True}
    assert Descriptor.from_dict(first_round).query_views == QueryViews(True, 0.0)
    assert Descriptor.from_dict({"pooling": "avg"}) == PRE_17
    assert PRE_17.query_views.count == 0
    assert Descriptor.from_dict(Descriptor().to_dict()) == Descriptor()
    assert Descriptor().query_views == QueryViews(True, 0.0)  # measured, not a default
    assert Descriptor(query_zoom=0.75).label == "rmac+full (query turns, query zoom 0.75)"


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
    # The default has no zoom: --zoom adds it to a search on any index.
    idx = tmp_path / "idx"
    assert cli("index", photos, "--index-dir", idx, "--model", tiny_model, "--quiet",
               "--workers", "0").exit_code == 0
    queries = tmp_path / "q"
    queries.mkdir()
    for src in sorted(photos.iterdir()):
        _framed(src, queries / f"{src.stem}.png")

    def firsts(*flags: str) -> dict[str, str]:
        done = cli("search", queries, "--index-dir", idx, "--format", "json", "-k", "1",
                   "--workers", "0", *flags)
        assert done.exit_code == 0, done.stderr
        return {Path(q["query"]).stem: Path(q["matches"][0]["path"]).stem
                for q in json.loads(done.stdout)["queries"]}

    with_zoom = firsts("--zoom")
    assert all(q == m for q, m in with_zoom.items()), with_zoom
    assert firsts("--no-zoom") == firsts()  # the default
    without = firsts()
    assert any(q != m for q, m in without.items()), "the stub finds framed copies anyway"
