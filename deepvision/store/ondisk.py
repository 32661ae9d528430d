"""IVF-PQ beyond one machine's memory: trained on a sample, codes added in shards in parallel,
the shards merged into one on-disk inverted-list file that search memory-maps.

    faiss-<generation>.bin      quantizer, PQ codebooks, the list directory (offsets, sizes)
    faiss-<generation>.ivfdata  every list's ids and codes (FAISS OnDiskInvertedLists)

The .bin names its .ivfdata by the bare file name and is always read with
IO_FLAG_ONDISK_SAME_DIR, so the pair is found wherever the index folder is moved or mounted.
The catalog stays the source of truth: the pair is written whole (each file atomically, the
.ivfdata first), checksummed together in the catalog's FAISS record, and never changed in
place; a run that adds or removes vectors merges a new pair from the catalog, re-encoding
every vector with the quantizer it already has (training is kept until the plan changes).

The shard function is the same whoever runs it: a thread pool here (LocalRunner) or Ray tasks
on a cluster (RayRunner, the `ray` extra). Workers get (trained index, ids, vectors) and
return a serialised index of their codes; they never see the catalog or the index folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deepvision.atomic import atomic_write
from deepvision.errors import UsageError
from deepvision.extras import install_hint
from deepvision.store.faiss_index import (
    TRAIN_POINTS_PER_CENTROID,
    IndexPlan,
    VectorIndex,
    faiss_chatter_to_stderr,
    load_faiss,
)

# Vectors per shard task: 64k x 1280-d float32 = 335 MB in flight per task, a few seconds of
# encoding each; the runner keeps at most 2 shards per worker in flight (bounded memory).
SHARD_VECTORS = 65_536
SHARDS_DIR = "shards"  # prefix of the work folder inside the index folder (removed when done)

ShardFn = Callable[..., np.ndarray]


def ivfdata_name(index_file: str) -> str:
    """faiss-12.bin -> faiss-12.ivfdata: the lists' file always sits beside its index file."""
    return index_file.rsplit(".", 1)[0] + ".ivfdata"


class ShardRunner(Protocol):
    """Runs `fn(shared, *job)` for each job, results in job order, a bounded number in flight."""

    def map(self, fn: ShardFn, shared: np.ndarray,
            jobs: Iterable[tuple[Any, ...]]) -> Iterator[np.ndarray]: ...


class LocalRunner:
    """Shards on a thread pool in this process: FAISS releases the GIL while it encodes."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, fn: ShardFn, shared: np.ndarray,
            jobs: Iterable[tuple[Any, ...]]) -> Iterator[np.ndarray]:
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[Any] = deque()
            for job in jobs:
                pending.append(pool.submit(fn, shared, *job))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def load_ray() -> Any:
    """Ray, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"Ray is not installed: {install_hint('ray')}") from None
    return ray


class RayRunner:
    """Shards as Ray tasks. Uses the Ray session already started in this process, else
    connects to `address` ('local' or None: a cluster on this machine, or RAY_ADDRESS as
    ray.init reads it). The trained index goes to the object store once, not once per task."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def map(self, fn: ShardFn, shared: np.ndarray,
            jobs: Iterable[tuple[Any, ...]]) -> Iterator[np.ndarray]:
        ray = load_ray()
        if not ray.is_initialized():
            ray.init(address=None if self.address in (None, "local") else self.address)
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        task, ref = ray.remote(fn), ray.put(shared)
        pending: deque[Any] = deque()
        for job in jobs:
            pending.append(task.remote(ref, *job))
            if len(pending) >= 2 * workers:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())


def encode_shard(trained: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One shard's codes: the trained (empty) index plus these vectors, serialised. Pure: the
    same on a thread, in a process or in a Ray task on another machine."""
    faiss = load_faiss()

    index = faiss.deserialize_index(trained)
    index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                       np.ascontiguousarray(ids, np.int64))
    return faiss.serialize_index(index)


def train(sample: np.ndarray, plan: IndexPlan) -> np.ndarray:
    """The trained, empty IVF-PQ index of `plan`, serialised (what every shard starts from)."""
    index = VectorIndex.new(sample.shape[1], plan)
    index.train(sample)
    return load_faiss().serialize_index(index._index)


def kept_training(path: Path) -> np.ndarray | None:
    """The trained quantizer and codebooks of an existing on-disk index, emptied and
    serialised, without reading its lists; None when the file cannot be read."""
    faiss = load_faiss()

    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_SKIP_IVF_DATA)
    except RuntimeError:
        return None
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # owned by the index now (else freed twice)
    index.ntotal = ivf.ntotal = 0
    return faiss.serialize_index(index)


def shards(blocks: Iterable[tuple[np.ndarray, np.ndarray]],
           size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) blocks regrouped into shards of `size` rows (the last one shorter);
    at most one shard's blocks are held at a time."""
    held: list[tuple[np.ndarray, np.ndarray]] = []
    rows = 0
    for ids, vecs in blocks:
        held.append((ids, vecs))
        rows += len(ids)
        while rows >= size:
            all_ids = np.concatenate([b[0] for b in held])
            all_vecs = np.concatenate([b[1] for b in held])
            yield all_ids[:size], all_vecs[:size]
            held, rows = [(all_ids[size:], all_vecs[size:])], rows - size
    if rows:
        yield np.concatenate([b[0] for b in held]), np.concatenate([b[1] for b in held])


def build(trained: np.ndarray, blocks: Iterable[tuple[np.ndarray, np.ndarray]],
          plan: IndexPlan, path: Path, runner: ShardRunner,
          shard_vectors: int = SHARD_VECTORS) -> VectorIndex:
    """Encode `blocks` in shards on `runner`, merge them into `path`'s .ivfdata, write `path`
    (both atomically, the lists first) and return the index loaded as search loads it."""
    work = Path(tempfile.mkdtemp(prefix=f".{SHARDS_DIR}-", dir=path.parent))
    try:
        files = []
        jobs = shards(blocks, shard_vectors)
        for i, blob in enumerate(runner.map(encode_shard, trained, jobs)):
            files.append(work / f"shard-{i}.bin")
            blob.tofile(files[-1])  # shards go to disk: the merge maps them, RAM stays small
        index = load_faiss().deserialize_index(trained)
        atomic_write(path.parent / ivfdata_name(path.name),
                     lambda tmp: _merge(index, files, tmp, ivfdata_name(path.name)))
        VectorIndex(index, plan).save(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return VectorIndex.load(path, plan)


def _merge(index: Any, shard_files: list[Path], target: str, name: str) -> None:
    """FAISS's on-disk merge (as faiss.contrib.ondisk.merge_ondisk: every shard's lists into
    one OnDiskInvertedLists file), keeping the shards' indexes alive until it is done and
    freeing them after (merge_ondisk leaks their memory maps for the life of the process)."""
    faiss = load_faiss()

    ivf = faiss.extract_index_ivf(index)
    with faiss_chatter_to_stderr():
        parts = [faiss.read_index(str(f), faiss.IO_FLAG_MMAP) for f in shard_files]
        lists = faiss.InvertedListsPtrVector()
        for part in parts:
            lists.push_back(faiss.extract_index_ivf(part).invlists)
        merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, target)
        total = merged.merge_from_multiple(lists.data(), lists.size(), False)
    merged.filename = name  # the bare name: the reader looks for it beside the index file
    index.ntotal = ivf.ntotal = total
    ivf.replace_invlists(merged, True)
    merged.this.disown()  # owned by the index now
    del parts


def train_sample_size(plan: IndexPlan) -> int:
    """Vectors k-means trains on (the same rule as an in-memory IVF-PQ)."""
    return TRAIN_POINTS_PER_CENTROID * plan.nlist
