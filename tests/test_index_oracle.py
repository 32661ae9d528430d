"""The FAISS layer checked against numpy brute force on random vectors."""

from __future__ import annotations

import numpy as np
import pytest

from deepvision.store.faiss_index import VectorIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(db: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ db.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.mark.parametrize("n,d,k", [(1000, 64, 10), (300, 1280, 5), (7, 32, 10)])
def test_search_matches_brute_force(n, d, k):
    rng = np.random.default_rng(n + d)
    db, q = _unit(rng, n, d), _unit(rng, 25, d)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # sparse, unordered ids
    index = VectorIndex.new(d)
    index.add(ids, db)
    scores, got = index.search(q, k)
    want_scores, want_ids = _brute(db, ids, q, k)
    assert got.shape == (25, min(k, n))  # k capped: no -1 padding rows
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got, want_ids)
    assert np.all(scores <= 1.0 + 1e-5) and np.all(scores >= -1.0 - 1e-5)


def test_remove_and_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    db = _unit(rng, 500, 48)
    ids = np.arange(500, dtype=np.int64) * 3
    index = VectorIndex.new(48)
    index.add(ids, db)
    gone = ids[::2]
    index.remove(gone.tolist())
    keep = np.ones(500, bool)
    keep[::2] = False
    path = tmp_path / "x.faiss"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert len(loaded) == 250 and loaded.dim == 48
    q = _unit(rng, 10, 48)
    scores, got = loaded.search(q, 8)
    want_scores, want_ids = _brute(db[keep], ids[keep], q, 8)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert not set(got.ravel()) & set(gone.tolist())
    assert [p.name for p in tmp_path.iterdir()] == ["x.faiss"]  # no temp file left behind


def test_empty_index_returns_no_rows():
    scores, ids = VectorIndex.new(16).search(np.ones((2, 16), np.float32), 5)
    assert scores.shape == (2, 0) and ids.shape == (2, 0)
