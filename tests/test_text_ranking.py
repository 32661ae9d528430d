"""Text ranking against a numpy brute-force oracle, on a planted stub CLIP-like model.

Each of 12 images is a flat colour whose red level names its planted vector; the stub image
tower returns that vector at a different length per image, the stub text tower maps the text
"photo k" to image k's vector (plus a little of image k+1's, so the ranking below the top is
planted too) at yet another length. The real pipeline runs around them: the Extractor, both
normalisations, the index, FAISS, the catalog's id -> path map, the ranking. So a wrong sort,
a lost normalisation (of either side) or a mixed-up id changes the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepvision.models import registry as models
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.pipeline.transforms import Preprocess
from deepvision.progress import Silent
from deepvision.services.search import RankOptions, SearchRequest, run_search
from deepvision.services.sync import IndexRequest, IndexRun
from deepvision.store.indexstore import IndexStore

N, DIM = 12, 24
RNG = np.random.default_rng(7)
PLANTED = RNG.normal(size=(N, DIM)).astype(np.float32)
IMAGE_LENGTHS = np.linspace(0.2, 9.0, N).astype(np.float32)  # inner product != cosine
TEXT_LENGTH = 4.5
PRE = Preprocess(16, 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "bilinear")


def red(k: int) -> int:
    return 8 + 20 * k


def text_vector(k: int) -> np.ndarray:
    return TEXT_LENGTH * (PLANTED[k] + 0.6 * PLANTED[(k + 1) % N])


def _weights(weights_file, allow):
    from deepvision.models.weights import Weights

    return Weights(Path("/planted"), "sha256:planted", "planted stub")


def _build(weights):
    import torch

    class PlantedImages(torch.nn.Module):
        """Normalised pixels -> the planted vector of the image's red level, as a 1x1 map."""

        def __init__(self) -> None:
            super().__init__()
            self.vectors = torch.from_numpy(PLANTED * IMAGE_LENGTHS[:, None])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            level = (x[:, 0].mean(dim=(1, 2)) * 0.25 + 0.5) * 255
            k = torch.round((level - 8) / 20).long()
            return self.vectors[k][:, :, None, None]

    return PlantedImages()


def _text(trunk):
    import torch

    def encode(texts, device):
        return torch.from_numpy(np.stack([text_vector(int(t.split()[1])) for t in texts]))

    return encode


@pytest.fixture
def planted(monkeypatch, tmp_path) -> tuple[IndexStore, list[str]]:
    spec = models.ModelSpec("planted", DIM, "planted stub", lambda: PRE, _weights, _build,
                            text=_text, pooled=True)
    monkeypatch.setitem(models.REGISTRY, "planted", spec)
    folder = tmp_path / "photos"
    folder.mkdir()
    # Names in an order unrelated to k, so that an id mixed up with a position shows.
    paths = []
    for k in range(N):
        path = folder / f"{(k * 5) % N:02d}_{k}.png"
        Image.new("RGB", (40, 30), (red(k), 128, 128)).save(path)
        paths.append(str(path))
    store = IndexStore(tmp_path / "idx")
    req = IndexRequest(roots=(folder,), store=store, model="planted",
                       embed=EmbedOptions(workers=0, batch_size=5))
    summary = IndexRun(req, Silent()).run()
    assert summary.added == N and not summary.failures
    return store, paths


def oracle(k: int, paths: list[str], top: int) -> list[tuple[str, float]]:
    images = PLANTED / np.linalg.norm(PLANTED, axis=1, keepdims=True)
    query = text_vector(k) / np.linalg.norm(text_vector(k))
    scores = images @ query
    order = np.argsort(-scores, kind="stable")[:top]
    return [(paths[i], float(scores[i])) for i in order]


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_each_text_ranks_like_brute_force(planted, index_type):
    store, paths = planted
    from deepvision.services.sync import restructure

    restructure(store, index_type, None, False)
    texts = tuple(f"photo {k}" for k in range(N))
    result = run_search(SearchRequest(queries=(), texts=texts, store=store,
                                      rank=RankOptions(top_k=6),
                                      embed=EmbedOptions(workers=0)), Silent())
    assert [q.query for q in result.queries] == list(texts)
    for k, q in enumerate(result.queries):
        assert q.kind == "text" and q.error is None
        want = oracle(k, paths, 6)
        assert [m.path for m in q.matches] == [p for p, _ in want], k
        # Vectors are stored as float16 (the catalog): scores agree to about 1e-4.
        assert np.allclose([m.score for m in q.matches], [s for _, s in want], atol=1e-3), k
        assert q.matches[0].path == paths[k]  # the planted pair comes first
        assert [m.rank for m in q.matches] == list(range(1, 7))


def test_min_score_and_mixed_queries_keep_their_places(planted):
    store, paths = planted
    query_image = paths[4]
    result = run_search(SearchRequest(queries=(Path(query_image),), texts=("photo 9", "photo 2"),
                                      store=store, rank=RankOptions(top_k=N, min_score=0.3),
                                      embed=EmbedOptions(workers=0)), Silent())
    image, nine, two = result.queries
    assert (image.kind, image.query) == ("image", query_image)
    assert image.matches[0].path == query_image and image.matches[0].score == pytest.approx(1.0)
    for k, q in ((9, nine), (2, two)):
        want = [(p, s) for p, s in oracle(k, paths, N) if s >= 0.3]
        assert [m.path for m in q.matches] == [p for p, _ in want]
        assert all(m.score >= 0.3 for m in q.matches)


def test_the_document_carries_kind_and_text(planted):
    from deepvision.output.render import search_json

    store, _ = planted
    result = run_search(SearchRequest(queries=(), texts=("photo 0",), store=store,
                                      rank=RankOptions(top_k=2),
                                      embed=EmbedOptions(workers=0)), Silent())
    doc = json.loads(search_json(result))
    assert doc["queries"][0]["kind"] == "text" and doc["queries"][0]["query"] == "photo 0"
