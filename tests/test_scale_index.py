"""On-disk IVF-PQ built in shards (issue 14): shard-and-merge == one process, on a thread pool
and on a real local Ray cluster; the folder can move; the CLI builds, searches (memory-mapped),
updates and repairs it from the catalog."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from vectorfactory import DIM, clustered

from deepvision.store import ondisk
from deepvision.store.faiss_index import ONDISK, VectorIndex, load_faiss, plan_index

N = 3000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.arange(N, dtype=np.int64) * 7 + 3  # catalog ids need not be 0..n-1
    return ids, clustered(N, 1), clustered(40, 2)


def single_process(trained: np.ndarray, ids: np.ndarray, db: np.ndarray) -> VectorIndex:
    """The reference: the same trained index, every vector added in one call, in memory."""
    plan = plan_index(ONDISK, len(db), DIM)
    index = VectorIndex(load_faiss().deserialize_index(trained), plan)
    index.add(ids, db)
    index.configure()
    return index


def sharded(trained: np.ndarray, ids: np.ndarray, db: np.ndarray, folder: Path,
            runner: ondisk.ShardRunner) -> VectorIndex:
    plan = plan_index(ONDISK, len(db), DIM)
    blocks = ((ids[s:s + 256], db[s:s + 256]) for s in range(0, len(db), 256))
    index = ondisk.build(trained, blocks, plan, folder / "faiss-5.bin", runner,
                         shard_vectors=700)  # 5 shards, none aligned with the blocks
    index.configure()
    return index


def check_same(index: VectorIndex, reference: VectorIndex, ids: np.ndarray, db: np.ndarray,
               q: np.ndarray) -> None:
    assert len(index) == len(reference) == len(db)
    got, want = index.search(q, 10), reference.search(q, 10)
    np.testing.assert_array_equal(got[1], want[1])  # same quantizer + codes: same results
    np.testing.assert_array_equal(got[0], want[0])
    # and they are the right results: re-ranked top 10 against numpy brute force
    stored = dict(zip(ids.tolist(), db, strict=True))
    top = index.top(q, 10, lambda u: np.stack([stored[int(i)] for i in u]))[1]
    truth = ids[np.argsort(-(q @ db.T), axis=1, kind="stable")[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, truth, strict=True)])
    assert recall >= 0.9, recall


def test_shards_on_a_thread_pool_merge_into_what_one_process_builds(data, tmp_path):
    ids, db, q = data
    plan = plan_index(ONDISK, N, DIM)
    assert plan.on_disk and plan.compressed and not plan.removes_in_place
    trained = ondisk.train(db[::2], plan)
    (tmp_path / "a").mkdir()
    index = sharded(trained, ids, db, tmp_path / "a", ondisk.LocalRunner(2))
    reference = single_process(trained, ids, db)
    check_same(index, reference, ids, db, q)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["faiss-5.bin", "faiss-5.ivfdata"]  # no shard files or temp files left
    # The .bin names its lists' file by bare name: the folder can move (or be mounted elsewhere).
    (tmp_path / "a").rename(tmp_path / "moved")
    moved = VectorIndex.load(tmp_path / "moved" / "faiss-5.bin", plan)
    moved.configure()
    check_same(moved, reference, ids, db, q)


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_shards_as_ray_tasks_merge_into_what_one_process_builds(data, tmp_path, ray_cluster):
    ids, db, q = data
    plan = plan_index(ONDISK, N, DIM)
    trained = ondisk.train(db[::2], plan)
    index = sharded(trained, ids, db, tmp_path, ondisk.RayRunner())
    check_same(index, single_process(trained, ids, db), ids, db, q)


def test_without_ray_asking_for_it_names_the_extra(monkeypatch):
    from deepvision.errors import UsageError

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like
    with pytest.raises(UsageError, match=r"deepvision-search\[ray\]"):
        list(ondisk.RayRunner().map(ondisk.encode_shard, np.zeros(1, np.uint8), [()]))


def test_auto_goes_on_disk_only_when_in_memory_codes_exceed_the_budget():
    n, dim = 2_000_000, 1280
    in_memory = plan_index("ivfpq", n, dim, 1 << 40)
    assert plan_index("auto", n, dim, 1 << 30).kind == "ivfpq"  # 2M x 168 B fits in 1 GiB
    low = plan_index("auto", n, dim, 32 << 20)  # even 24 B/vector codes do not fit 32 MiB
    assert low.kind == ONDISK and low.pq_m == in_memory.pq_m == 160  # finest codes: on disk
    assert low.bytes_per_vector(dim) == 168


def test_faiss_progress_lines_stay_off_stdout(data, tmp_path, capfd):
    """FAISS printf()s while merging and loading on-disk lists; stdout carries --json."""
    ids, db, _ = data
    plan = plan_index(ONDISK, N, DIM)
    sharded(ondisk.train(db, plan), ids, db, tmp_path, ondisk.LocalRunner(1))
    VectorIndex.load(tmp_path / "faiss-5.bin", plan)
    out, err = capfd.readouterr()
    assert out == "" and "ondisk" in err


# ---- through the CLI ---------------------------------------------------------------------------


def add_synthetic(idx: Path, n: int, dim: int) -> None:
    """n more vectors with their file rows, outside the indexed folder (the next `index` run
    leaves them alone), committed through the real Catalog as a run would."""
    from deepvision.store.catalog import Catalog

    manifest = json.loads((idx / "default" / "manifest.json").read_text())
    catalog = Catalog(idx / "default" / manifest["catalog"])
    with catalog.write():
        for i, v in enumerate(clustered(n, 3, dim)):
            vid = catalog.add_vector(f"synthetic{i:06d}", v)
            catalog.upsert_file(f"/synthetic/{i:06d}.png", 1, 1, f"synthetic{i:06d}", vid)
    catalog.close()


def faiss_files(idx: Path) -> list[str]:
    return sorted(p.name for p in (idx / "default").iterdir() if p.name.startswith("faiss-"))


def quantizer(path: Path) -> np.ndarray:
    faiss = load_faiss()
    index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA)  # alive while ivf is used
    ivf = faiss.extract_index_ivf(index)
    return faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist)


def top_match(cli, query: Path, idx: Path) -> tuple[dict, str]:
    run = cli("search", query, "--index-dir", idx, "--format", "json", "-k", "3",
              "--workers", "0")
    assert run.exit_code == 0, run.stderr
    return run.json()["queries"][0]["matches"][0], run.stderr


@pytest.mark.slow
def test_cli_builds_searches_updates_and_repairs_an_on_disk_index(cli, tiny_model, photos,
                                                                   tmp_path):
    from conftest import TINY_DIM
    from imagefactory import make_photo_like

    from deepvision.store.faiss_index import PQ_MIN_VECTORS
    from deepvision.store.indexstore import IndexStore

    idx = tmp_path / "idx"
    assert cli("index", photos, "--index-dir", idx, "--model", "tiny", "--workers", "0",
               "--index-type", "ivfpq-ondisk").exit_code == 0
    add_synthetic(idx, PQ_MIN_VECTORS, TINY_DIM)
    run = cli("rebuild", "--from-vectors", "--index-dir", idx, "--json")
    assert run.exit_code == 0, run.stderr
    assert json.loads(run.stdout)["index_type"] == ONDISK
    info = cli("info", "--index-dir", idx, "--json").json()
    assert info["index_type"] == ONDISK and info["index_requested"] == ONDISK
    first = faiss_files(idx)
    assert [f.rsplit(".", 1)[1] for f in first] == ["bin", "ivfdata"]

    probe = photos / "img_03.bmp"
    match, err = top_match(cli, probe, idx)
    assert match["path"] == str(probe) and match["score"] > 0.999  # exact after re-ranking
    assert "checksum" not in err and "stored vectors" not in err
    with IndexStore(idx).open_read() as snap:  # what search loads: the mapped pair, verified
        assert snap.vectors(mmap=True).plan.on_disk and not snap.notes

    # A new image: the run merges a new pair (kept quantizer); the old pair is cleaned up.
    new = photos / "new.png"
    make_photo_like(new, seed=99)
    centroids = quantizer(idx / "default" / first[0])
    killed = idx / "default" / ".shards-k1lled00"  # the work folder of a build killed midway
    killed.mkdir()
    (killed / "shard-0.bin").write_bytes(b"partial")
    assert cli("index", photos, "--index-dir", idx, "--workers", "0").exit_code == 0
    assert not killed.exists()
    second = faiss_files(idx)
    assert len(second) == 2 and not set(second) & set(first)
    np.testing.assert_array_equal(quantizer(idx / "default" / second[0]), centroids)
    assert top_match(cli, new, idx)[0]["path"] == str(new)

    # A truncated .ivfdata: caught by the checksum, never trusted; search answers from the
    # stored vectors, and the next run writes a new pair from the catalog.
    data = idx / "default" / second[1]
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    match, err = top_match(cli, probe, idx)
    assert match["path"] == str(probe) and "does not match its checksum" in err
    assert cli("index", photos, "--index-dir", idx, "--workers", "0").exit_code == 0
    match, err = top_match(cli, probe, idx)
    assert match["path"] == str(probe) and "checksum" not in err
    with IndexStore(idx).open_read() as snap:
        assert snap.vectors(mmap=True).plan.on_disk and not snap.notes
