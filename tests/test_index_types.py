"""Every FAISS index type against numpy brute force; add/remove/update; auto choices; CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from vectorfactory import DIM, clustered

from deepvision.store.faiss_index import (
    FLAT_MAX,
    RERANK_FACTOR,
    IndexPlan,
    VectorIndex,
    parse_size,
    plan_index,
    rerank,
)


def brute(db: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :k]]


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def build(kind: str, db: np.ndarray, ids: np.ndarray) -> VectorIndex:
    plan = plan_index(kind, len(db), db.shape[1], max_memory=1 << 40)
    index = VectorIndex.from_blocks(db.shape[1], [(ids, db)], plan, sample=db)
    index.configure()
    return index


# ANN floors at k=10 with the default search knobs on 4,000 clustered vectors. Raw PQ codes
# (4-bit at this size) are lossy; search reranks their candidates exactly (next test).
FLOORS = {"flat": 1.0, "ivf": 0.95, "hnsw": 0.95, "ivfpq": 0.15}  # chance: 0.0025


@pytest.mark.parametrize("kind", list(FLOORS))
def test_each_type_against_brute_force(kind):
    db, q = clustered(4000, 1), clustered(50, 2)
    ids = np.arange(4000, dtype=np.int64) * 7 + 3
    index = build(kind, db, ids)
    assert index.plan.kind == kind
    scores, got = index.search(q, 10)
    want = brute(db, ids, q, 10)
    if kind == "flat":
        np.testing.assert_array_equal(got, want)
        np.testing.assert_allclose(scores, np.sort(q @ db.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    else:
        assert recall(got, want) >= FLOORS[kind], kind
    assert np.all(scores[got >= 0] <= 1.0001)


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_remove_and_update_match_a_rebuilt_index(kind, tmp_path):
    """faiss#4656: removal from IVF/PQ with id maps can drift. After removals and updates the
    index must hold exactly what a fresh index with the same trained quantizers holds."""
    db, q = clustered(3000, 3), clustered(40, 4)
    ids = np.arange(3000, dtype=np.int64)
    plan = plan_index(kind, len(db), DIM, max_memory=1 << 40)
    empty = tmp_path / "trained.faiss"
    base = VectorIndex.new(DIM, plan)
    if plan.needs_training:
        base.train(db)
    base.save(empty)

    index = VectorIndex.load(empty, plan)
    index.add(ids, db)
    gone = ids[::3]
    index.remove(gone.tolist())
    keep = np.setdiff1d(ids, gone)
    changed = keep[::7][:100]  # an update is remove + add under the same id
    fresh_vecs = clustered(len(changed), 5)
    index.remove(changed.tolist())
    index.add(changed, fresh_vecs)
    final = db.copy()
    final[changed] = fresh_vecs
    rebuilt = VectorIndex.load(empty, plan)
    rebuilt.add(keep, final[keep])

    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss", plan)
    assert len(loaded) == len(keep) == len(rebuilt)
    # Scan every list and rank everything: both must score every kept id identically.
    for ix in (loaded, rebuilt):
        ix.configure(nprobe=plan.nlist or None)
    s1, g1 = loaded.search(q, len(keep))
    s2, g2 = rebuilt.search(q, len(keep))
    for row in range(len(q)):
        a, b = dict(zip(g1[row], s1[row], strict=True)), dict(zip(g2[row], s2[row], strict=True))
        assert set(a) == set(b) == set(keep.tolist())
        assert all(abs(a[i] - b[i]) < 1e-5 for i in a)


def test_pq_candidates_reranked_with_stored_vectors_recover_recall():
    db, q = clustered(4000, 1), clustered(50, 2)
    ids = np.arange(4000, dtype=np.int64) * 7 + 3
    index = build("ivfpq", db, ids)
    _, cand = index.search(q, 10 * RERANK_FACTOR)

    def stored(u: np.ndarray) -> np.ndarray:
        return db[(u - 3) // 7]

    scores, got = rerank(q, cand, stored, 10)
    assert recall(got, brute(db, ids, q, 10)) >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(q @ db.T, (got - 3) // 7, 1), atol=1e-5)
    # VectorIndex.top is what search uses: for PQ it is exactly this re-ranking.
    top_scores, top_ids = index.top(q, 10, stored)
    np.testing.assert_array_equal(top_ids, got)
    np.testing.assert_allclose(top_scores, scores, atol=1e-6)


def test_hnsw_refuses_in_place_removal():
    db = clustered(200, 6)
    index = build("hnsw", db, np.arange(200, dtype=np.int64))
    with pytest.raises(NotImplementedError):
        index.remove([1])


def test_auto_choices_by_size_and_memory():
    assert plan_index("auto", 1_000, 2048).kind == "flat"
    assert plan_index("auto", FLAT_MAX, 2048, 1 << 40).kind == "flat"
    big = plan_index("auto", 1_000_000, 2048, 32 << 30)
    assert big.kind == "ivf" and big.nlist == 4096 and 1 <= big.nprobe <= big.nlist
    tight = plan_index("auto", 1_000_000, 2048, 1 << 30)  # 1 GB for 1M vectors
    assert tight.kind == "ivfpq" and 2048 % tight.pq_m == 0
    assert tight.bytes_per_vector(2048) <= (1 << 30) // 1_000_000 + 8
    assert plan_index("auto", 10_000_000, 2048, 16 << 30).bytes_per_vector(2048) <= 1024 + 8
    assert plan_index("ivf", 100, 64).nlist * 39 <= 100  # enough points to train every list


def test_parse_size():
    assert parse_size("8G") == 8 << 30 and parse_size("512M") == 512 << 20
    assert parse_size("1.5GB") == int(1.5 * (1 << 30)) and parse_size("1000") == 1000
    with pytest.raises(Exception, match="max-memory"):
        parse_size("lots")


def test_plan_round_trips_through_json():
    plan = plan_index("ivfpq", 100_000, 512, 30 << 20)
    assert IndexPlan(**json.loads(json.dumps(plan.to_dict()))) == plan


def test_cli_index_type_switch_without_the_model(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    run = cli("index", photos, "--index-dir", idx, "--model", "tiny", "--workers", "0",
              "--index-type", "ivf")
    assert run.exit_code == 0, run.stderr
    info = cli("info", "--index-dir", idx, "--json").json()
    assert info["index_type"] == "ivf" and info["index_requested"] == "ivf"
    q = photos / "img_02.webp"
    run = cli("search", q, "--index-dir", idx, "--format", "json", "-k", "1", "--nprobe", "4",
              "--workers", "0")
    assert run.exit_code == 0, run.stderr
    hit = run.json()["queries"][0]["matches"][0]
    assert hit["path"] == str(q)

    run = cli("rebuild", "--from-vectors", "--index-type", "hnsw", "--index-dir", idx, "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["index_type"] == "hnsw" and run.json()["vectors"] == 12
    assert cli("info", "--index-dir", idx, "--json").json()["index_type"] == "hnsw"
    (photos / "img_00.jpg").unlink()  # HNSW cannot delete: the run rebuilds from the store
    summary = cli("index", photos, "--index-dir", idx, "--json").json()
    assert summary["removed"] == 1 and summary["embedded"] == 0
    doc = cli("search", photos, "--index-dir", idx, "--format", "json", "-k", "11",
              "--ef-search", "64", "--workers", "0").json()
    assert all(m["path"] != str(photos / "img_00.jpg")
               for qr in doc["queries"] for m in qr["matches"])
    assert all(qr["matches"][0]["path"] == qr["query"] for qr in doc["queries"])

    bad = cli("index", photos, "--index-dir", idx, "--index-type", "lsh")
    assert bad.exit_code == 2 and "index type" in bad.stderr


def test_cli_ivfpq_grows_from_flat_and_reranks(cli, tiny_model, tmp_path):
    """Too few vectors to train PQ: exact flat, said so; past the minimum: IVF-PQ, whose
    candidates search re-ranks with the stored vectors (top hit is the exact duplicate)."""
    from imagefactory import make_photo_like

    from deepvision.store.faiss_index import PQ_MIN_VECTORS

    folder, idx = tmp_path / "many", tmp_path / "idx"
    for i in range(20):
        make_photo_like(folder / f"a{i:04d}.png", seed=i, size=(32, 24))
    run = cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0",
              "--index-type", "ivfpq")
    assert run.exit_code == 0 and "needs more vectors" in run.stderr
    info = cli("info", "--index-dir", idx, "--json").json()
    assert info["index_type"] == "flat" and info["index_requested"] == "ivfpq"
    for i in range(20, PQ_MIN_VECTORS + 20):
        make_photo_like(folder / f"a{i:04d}.png", seed=i, size=(32, 24))
    run = cli("index", folder, "--index-dir", idx, "--json", "--workers", "0")
    assert run.exit_code == 0, run.stderr
    assert cli("info", "--index-dir", idx, "--json").json()["index_type"] == "ivfpq"
    probe = folder / "a0333.png"
    doc = cli("search", probe, "--index-dir", idx, "--format", "json", "-k", "3",
              "--workers", "0").json()
    top = doc["queries"][0]["matches"][0]
    assert top["path"] == str(probe) and top["score"] > 0.999  # exact score after re-ranking
