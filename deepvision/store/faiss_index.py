"""FAISS structures: choose, build, add / remove / search, save / load. Knows ids, never paths.

Scores are inner products of L2-normalised vectors, i.e. cosine similarities, for every type.
The catalog keeps the vectors themselves, so any structure can be rebuilt without the model.
"""

# Long module: everything that calls FAISS itself (the plans, VectorIndex, the exact top-k and
# re-ranking it falls back on) is here, so FAISS's quirks (stdout chatter, RuntimeError for I/O,
# the GPU/CPU builds) are handled once; the rest of the package sees plans and ids.

from __future__ import annotations

import errno
import math
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepvision.atomic import atomic_write
from deepvision.errors import UsageError
from deepvision.extras import install_hint

FACTORY = "IDMap2,Flat"  # exact search; ids are the catalog's vector ids
ONDISK = "ivfpq-ondisk"  # IVF-PQ whose lists live in a memory-mapped file (store/ondisk.py)
INDEX_TYPES = ("auto", "flat", "ivf", "ivfpq", ONDISK, "hnsw")
FLAT_MAX = 50_000  # exact search stays in single-digit milliseconds up to about here
MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this; k-means needs it to be meaningful
TRAIN_POINTS_PER_CENTROID = 64  # sample size for training (k-means on a sample)
RETRAIN_GROWTH = 4.0  # retrain an IVF index once the collection is 4x its training size
PQ_MIN_VECTORS = MIN_POINTS_PER_CENTROID * 16  # 4-bit codebooks: 16 centroids each
DEFAULT_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 200


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS structure and its parameters; recorded in the manifest, shown by `info`."""

    kind: str  # flat | ivf | ivfpq | ivfpq-ondisk | hnsw
    factory: str
    nlist: int = 0
    pq_m: int = 0
    pq_nbits: int = 0
    hnsw_m: int = 0
    trained_on: int = 0  # collection size when the structure was last trained
    nprobe: int = 0  # search-time default chosen with the structure

    @property
    def needs_training(self) -> bool:
        return self.kind in ("ivf", "ivfpq", ONDISK)

    @property
    def compressed(self) -> bool:
        """PQ codes: they only propose candidates, which search re-ranks exactly."""
        return self.kind in ("ivfpq", ONDISK)

    @property
    def on_disk(self) -> bool:
        """Lists in a memory-mapped .ivfdata file beside the index file (store/ondisk.py)."""
        return self.kind == ONDISK

    @property
    def removes_in_place(self) -> bool:
        # FAISS HNSW cannot delete; an on-disk index is never written in place (a run that
        # changes vectors merges a new one). Both are rebuilt from the stored vectors.
        return self.kind not in ("hnsw", ONDISK)

    def bytes_per_vector(self, dim: int) -> int:
        """Bytes per vector of the structure: in RAM, or for ivfpq-ondisk in its .ivfdata file."""
        pq = (self.pq_m * self.pq_nbits + 7) // 8
        code = {"flat": 4 * dim, "ivf": 2 * dim, "ivfpq": pq, ONDISK: pq,
                "hnsw": 4 * dim + 8 * self.hnsw_m}[self.kind]
        return code + 8  # the 64-bit id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FLAT_PLAN = IndexPlan("flat", FACTORY)


def default_max_memory() -> int:
    """Half the machine's RAM: the index shares it with decoding and the model."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 8 << 30


def parse_size(text: str) -> int:
    """'16G', '512M', '1.5GB', '1000000' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise UsageError(f"--max-memory {text!r}: use a size such as 8G or 512M")
    return int(float(m[1]) * 1024 ** "_KMGT".index(m[2] or "_"))


def plan_index(kind: str, n: int, dim: int, max_memory: int | None = None) -> IndexPlan:
    """The structure for n vectors: `auto` picks exact flat while it is small and fits, then
    IVF (fp16 codes, lossless for our fp16-stored vectors), then IVF-PQ when memory needs, and
    on-disk IVF-PQ when even the smallest in-memory codes exceed the budget."""
    budget = max_memory or default_max_memory()
    if kind == "auto":
        if n <= FLAT_MAX and n * (4 * dim + 8) <= budget:
            kind = "flat"
        elif n * (2 * dim + 8) <= budget:
            kind = "ivf"
        else:
            kind = "ivfpq"
            if n * plan_index("ivfpq", n, dim, budget).bytes_per_vector(dim) > budget:
                kind = ONDISK
    if kind == "flat":
        return FLAT_PLAN
    if kind == "hnsw":
        return IndexPlan("hnsw", "IDMap2,HNSW32,Flat", hnsw_m=32)
    if kind not in ("ivf", "ivfpq", ONDISK):
        raise UsageError(f"unknown index type {kind!r}; choose one of {', '.join(INDEX_TYPES)}")
    if kind in ("ivfpq", ONDISK) and n < PQ_MIN_VECTORS:
        return FLAT_PLAN  # too few vectors to train codebooks; re-planned as the index grows
    nlist = _nlist(n)
    nprobe = min(nlist, max(16, nlist // 128))  # from the nprobe sweep in bench/RESULTS.md
    if kind == "ivf":
        return IndexPlan("ivf", f"IVF{nlist},SQfp16", nlist=nlist, trained_on=n, nprobe=nprobe)
    # 8-bit codebooks need 256 x 39 training points; small collections get 4-bit ones.
    nbits = 8 if n >= MIN_POINTS_PER_CENTROID * 256 else 4
    # On disk the codes cost no RAM: the finest codes _pq_m allows (dim/8 sub-quantizers).
    fit = dim if kind == ONDISK else (budget // max(n, 1) - 8) * 8 // nbits
    m = _pq_m(dim, fit)
    return IndexPlan(kind, f"IVF{nlist},PQ{m}x{nbits}", nlist=nlist, pq_m=m,
                     pq_nbits=nbits, trained_on=n, nprobe=nprobe)


def plan_note(requested: str, plan: IndexPlan) -> str | None:
    """What the user should hear when the structure in use is not quite the one asked for
    (a collection too small for it), or None."""
    if requested not in ("auto", plan.kind):
        return (f"index type {requested} needs more vectors to train (ivfpq: {PQ_MIN_VECTORS})"
                f"; using exact {plan.kind} search until the index has them")
    if plan.needs_training and plan.nlist == 1:
        return (f"index type {plan.kind}: {plan.trained_on} vectors are too few for more "
                f"than one list ({MIN_POINTS_PER_CENTROID}+ each), so a search scans them all; "
                "the lists are trained again as the index grows")
    return None


def desired_plan(index_type: str, current: IndexPlan, n: int, dim: int,
                 max_memory: int | None) -> IndexPlan:
    """Keep the current structure unless the requested type now calls for another one, or an
    IVF index has grown or shrunk 4x since it was trained (its lists no longer fit)."""
    wanted = plan_index(index_type, n, dim, max_memory)
    if wanted.kind != current.kind:
        return wanted
    if current.needs_training:
        low, high = current.trained_on / RETRAIN_GROWTH, current.trained_on * RETRAIN_GROWTH
        return current if low <= n <= high else wanted
    return current


def _nlist(n: int) -> int:
    """About 4 sqrt(n) lists (a power of two), with enough points per list to train k-means."""
    target = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    while target > 1 and n < MIN_POINTS_PER_CENTROID * target:
        target //= 2
    return max(1, target)


def _pq_m(dim: int, budget: int) -> int:
    """Sub-quantizers: as many as memory allows (budget: how many fit), at most dim/8 (8-d
    sub-vectors: 256 bytes at 2048-d; finer codes cost training time for little recall once
    candidates are re-ranked exactly), and a divisor of dim so all sub-vectors are equal."""
    cap = max(min(16, dim // 4), min(dim // 8, budget))
    return max(m for m in range(1, cap + 1) if dim % m == 0)


def load_faiss() -> Any:
    """The installed FAISS, or a clear error: it comes from the `cpu` or `gpu` extra."""
    try:
        import faiss
    except ImportError:
        raise UsageError(
            f"FAISS is not installed: {install_hint('cpu')}, or the gpu extra on a CUDA "
            "machine (never both: with both installed FAISS sees no GPU)") from None
    return faiss


class VectorIndex:
    """One FAISS structure over L2-normalised vectors with the catalog's int64 ids."""

    def __init__(self, index: Any, plan: IndexPlan = FLAT_PLAN) -> None:
        self._index = index
        self.plan = plan

    @classmethod
    def new(cls, dim: int, plan: IndexPlan = FLAT_PLAN) -> VectorIndex:
        faiss = load_faiss()

        index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
        if plan.kind == "hnsw":  # a better graph for a slower build (FAISS default: 40)
            faiss.downcast_index(index.index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return cls(index, plan)

    @classmethod
    def from_blocks(cls, dim: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]],
                    plan: IndexPlan = FLAT_PLAN, sample: np.ndarray | None = None) -> VectorIndex:
        """Build from (ids, vectors) blocks, e.g. streamed out of the catalog; trained types
        need `sample`, a training sample of the vectors."""
        index = cls.new(dim, plan)
        if plan.needs_training:
            if sample is None or len(sample) == 0:
                raise ValueError("a trained index type needs a training sample")
            index.train(sample)
        for ids, vectors in blocks:
            index.add(ids, vectors)
        return index

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def train(self, sample: np.ndarray) -> None:
        faiss = load_faiss()

        ivf = faiss.try_extract_index_ivf(self._index) if self.plan.needs_training else None
        if ivf is not None:
            # Below 39 points per centroid FAISS prints a raw "WARNING clustering 30 points to
            # 1 centroids" on stderr (into `--json` runs too). The plans give every list 39+
            # points; only a tiny collection's single list (nothing for k-means to learn) has
            # fewer, and the run says what that means (services/sync.py).
            ivf.cp.min_points_per_centroid = 1
        if ivf is not None and self.plan.compressed:
            faiss.downcast_index(ivf).pq.cp.min_points_per_centroid = 1
            # 64 points per codeword (FAISS default 256): 4x faster codebook training, and the
            # codes only propose candidates that search re-ranks exactly.
            faiss.downcast_index(ivf).pq.cp.max_points_per_centroid = 64
            # FAISS's default polysemous training only relabels the codewords for Hamming
            # pre-filtering, which search never uses: 343 s of IVF1024,PQ160x8 training on
            # 65k vectors with it, 107 s without (bench/ivf_train.py, bench/RESULTS.md).
            faiss.downcast_index(ivf).do_polysemous_training = False
        if ivf is not None and faiss.get_num_gpus() > 0:
            # k-means on the GPU; the index itself stays a CPU index (that is what is saved).
            ivf.clustering_index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(ivf.d))
        self._index.train(np.ascontiguousarray(sample, np.float32))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                                     np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        """Remove ids in place; HNSW cannot (see IndexPlan.removes_in_place)."""
        arr = np.fromiter(ids, np.int64)
        if len(arr):
            if not self.plan.removes_in_place:
                raise NotImplementedError("HNSW cannot remove vectors; rebuild it")
            self._index.remove_ids(arr)

    def configure(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Search-time knobs, reached through the IDMap wrapper."""
        faiss = load_faiss()

        if self.plan.needs_training:
            ivf = faiss.try_extract_index_ivf(self._index)
            if ivf is not None:
                ivf.nprobe = min(ivf.nlist, nprobe or self.plan.nprobe or 16)
        elif self.plan.kind == "hnsw":
            faiss.ParameterSpace().set_index_parameter(self._index, "efSearch",
                                                       ef_search or DEFAULT_EF_SEARCH)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; k is capped at the index size. Approximate types may
        still return fewer than k hits (id -1): callers drop those."""
        k = min(k, len(self))
        if k <= 0:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        return self._index.search(np.ascontiguousarray(queries, np.float32), k)

    def range_search(self, queries: np.ndarray,
                     threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All entries with score > threshold: (lims, scores, ids), row i in lims[i]:lims[i+1]."""
        return self._index.range_search(np.ascontiguousarray(queries, np.float32), threshold)

    def on_gpu(self) -> VectorIndex:
        """A GPU copy for searching when the installed faiss has GPUs (never saved)."""
        faiss = load_faiss()

        if faiss.get_num_gpus() == 0 or self.plan.kind not in ("flat", "ivf"):
            return self
        return VectorIndex(faiss.index_cpu_to_all_gpus(self._index), self.plan)

    def save(self, path: Path) -> None:
        """Atomic (atomic.atomic_write). A failed write (a full disk) is an OSError with its
        errno: FAISS reports it as a RuntimeError that only names it in the text."""
        faiss = load_faiss()

        def write(tmp: str) -> None:
            try:
                faiss.write_index(self._index, tmp)
            except RuntimeError as exc:
                raise _as_os_error(exc, tmp) from exc

        atomic_write(path, write)

    def top(self, queries: np.ndarray, k: int, stored: Callable[[np.ndarray], np.ndarray],
            allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), exact cosine scores whatever the structure: compressed (PQ)
        types fetch RERANK_FACTOR x k candidates from their codes and rescore them with the
        stored vectors (`stored`: sorted unique ids -> vectors). allowed: the only ids that
        may be returned (sorted, unique; a filter's), searched for inside FAISS (filtered_top)."""
        if allowed is not None:
            return self.filtered_top(queries, k, stored, allowed)
        if self.plan.compressed:
            _, candidates = self.search(queries, k * RERANK_FACTOR)
            return rerank(queries, candidates, stored, k)
        return self.search(queries, k)

    def filtered_top(self, queries: np.ndarray, k: int,
                     stored: Callable[[np.ndarray], np.ndarray],
                     allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k among `allowed` only, so a filter still gets k results (cutting an unfiltered
        top-k would leave few or none). Few ids (for flat and HNSW, a small fraction): exact
        scores over just their vectors. Otherwise FAISS itself skips every other id (an ID
        selector), and the approximate types look further in proportion to what the filter
        drops: IVF probes nprobe / fraction lists, HNSW widens efSearch."""
        if len(allowed) == 0 or len(self) == 0:
            return _empty(len(queries))
        fraction = min(1.0, len(allowed) / len(self))
        if self.plan.kind in ("flat", "hnsw") and fraction < SPARSE:
            return self._gathered_top(queries, k, allowed)
        if len(allowed) <= EXACT_MAX:
            return exact_top(queries, allowed, stored(allowed), k)
        selection = Selection(allowed)  # held here: FAISS only points into its bitmap
        params = self._params(selection, fraction)
        fetch = k * RERANK_FACTOR if self.plan.compressed else k
        scores, ids = self._index.search(np.ascontiguousarray(queries, np.float32),
                                         min(fetch, len(allowed)), params=params)
        if self.plan.compressed:
            return rerank(queries, ids, stored, k)
        return scores, ids

    def _gathered_top(self, queries: np.ndarray, k: int,
                      allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores over just the passing vectors, copied block by block out of the
        index's own flat storage (flat, HNSW: in RAM, by id through the IDMap), so neither
        the catalog nor a scan of every id is needed."""
        best = _empty(len(queries))
        for start in range(0, len(allowed), GATHER_BLOCK):
            part = np.ascontiguousarray(allowed[start:start + GATHER_BLOCK], np.int64)
            found = exact_top(queries, part, self._index.reconstruct_batch(part), k)
            merged_s = np.concatenate([best[0], found[0]], axis=1)
            merged_i = np.concatenate([best[1], found[1]], axis=1)
            order = np.argsort(-merged_s, axis=1, kind="stable")[:, :k]
            best = (np.take_along_axis(merged_s, order, axis=1),
                    np.take_along_axis(merged_i, order, axis=1))
        return best

    def _params(self, selection: Selection, fraction: float) -> Any:
        faiss = load_faiss()

        if self.plan.needs_training:
            ivf = faiss.try_extract_index_ivf(self._index)
            nprobe = min(ivf.nlist, math.ceil(ivf.nprobe / fraction))
            return faiss.SearchParametersIVF(sel=selection.sel, nprobe=nprobe)
        if self.plan.kind == "hnsw":
            ef = faiss.downcast_index(self._index.index).hnsw.efSearch
            # The graph's result list only takes passing nodes, so the walk already goes on
            # longer; a wider list on top keeps recall@10 >= 0.95 down to 5 % (bench/filters.py).
            return faiss.SearchParametersHNSW(sel=selection.sel,
                                              efSearch=math.ceil(ef / math.sqrt(fraction)))
        return faiss.SearchParameters(sel=selection.sel)

    def filtered_range(self, queries: np.ndarray, threshold: float,
                       allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """range_search among `allowed` only (an ID selector; IVF probes further, as in
        filtered_top)."""
        if len(allowed) == 0 or len(self) == 0:
            return np.zeros(len(queries) + 1, np.uint64), np.zeros(0, np.float32), \
                np.zeros(0, np.int64)
        selection = Selection(allowed)
        params = self._params(selection, min(1.0, len(allowed) / len(self)))
        return self._index.range_search(np.ascontiguousarray(queries, np.float32), threshold,
                                        params=params)

    @classmethod
    def load(cls, path: Path, plan: IndexPlan = FLAT_PLAN, mmap: bool = False) -> VectorIndex:
        """mmap: memory-map the file read-only (IVF types), so `search` starts without reading
        the whole index; pages are read as lists are probed. An on-disk index is always
        mapped: its lists are the .ivfdata file, found beside `path` (IO_FLAG_ONDISK_SAME_DIR;
        the file records only its bare name), so the index folder may move."""
        faiss = load_faiss()

        if plan.on_disk:
            flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
            with faiss_chatter_to_stderr():
                return cls(faiss.read_index(str(path), flags), plan)
        if mmap and plan.needs_training:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
            return cls(faiss.read_index(str(path), flags), plan)
        return cls(faiss.read_index(str(path)), plan)


_STDOUT_LOCK = threading.Lock()


@contextmanager
def faiss_chatter_to_stderr() -> Iterator[None]:
    """FAISS's on-disk lists printf() progress lines ("resizing ...", "IO_FLAG_ONDISK_SAME_DIR:
    updating ondisk filename ...") to the C stdout, where they would corrupt `--json` and
    `--format json` output: send file descriptor 1 to stderr meanwhile. C stdio buffers a
    pipe's output, so its buffers are flushed before fd 1 is given back."""
    import ctypes

    with _STDOUT_LOCK:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            yield
        finally:
            ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)


def _as_os_error(exc: RuntimeError, path: str) -> Exception:
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES):
        if f"({os.strerror(code)})" in text:
            return OSError(code, os.strerror(code), path)
    return exc


RERANK_FACTOR = 20  # compressed (PQ) types fetch 20x the candidates, then rescore exactly
# A filter passing at most this many vectors is searched exactly over just their stored
# vectors, read from the catalog: 300 vectors of 1280-d cost 6.7 ms, 4096 cost 73 ms on a
# loaded 2-core machine (bench/filters.py --catalog). Above this, FAISS's ID selector: flat
# and sparse HNSW then scan every id (a bit test each) exactly, and IVF's nprobe / fraction
# reaches every list once a filter passes under nprobe / nlist of the collection.
EXACT_MAX = 256
# Below this fraction passing, flat and HNSW indexes score the passing vectors exactly,
# copied out of their own storage: an HNSW graph walk strands among nodes that do not pass
# (recall@10 under 0.95 at 1 %), and a flat scan tests every id (bench/filters.py).
SPARSE = 0.05
# Vectors copied per reconstruct_batch call: FAISS runs a call of more than 1000 keys on
# OpenMP threads, which on a busy 2-core machine cost 38 ms for 3000 vectors instead of
# 0.3 ms in blocks of 1000.
GATHER_BLOCK = 1000


class Selection:
    """A FAISS ID selector over sorted unique ids, holding the memory it points into: a
    bitmap (one bit per id up to the largest: 125 kB for ids below a million, one bit test
    per candidate) when the ids are dense enough, else a hashed batch."""

    def __init__(self, ids: np.ndarray) -> None:
        faiss = load_faiss()

        top = int(ids[-1]) + 1 if len(ids) else 1
        if top <= 64 * max(1, len(ids)):  # the bitmap costs at most 8 bytes per id
            dense = np.zeros(top, bool)
            dense[ids] = True
            self.bitmap = np.packbits(dense, bitorder="little")
            self.sel = faiss.IDSelectorBitmap(len(self.bitmap), faiss.swig_ptr(self.bitmap))
        else:
            self.sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, np.int64))


def exact_top(queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the k best of `ids` (their `vectors`) per query, FAISS-style (-1 padded)."""
    scores = np.asarray(queries, np.float32) @ np.asarray(vectors, np.float32).T
    kk = min(k, len(ids))
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    best = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    out_s = np.take_along_axis(best, order, axis=1).astype(np.float32)
    out_i = ids[np.take_along_axis(part, order, axis=1)]
    return out_s, out_i.astype(np.int64)


def _empty(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)


def rerank(queries: np.ndarray, ids: np.ndarray,
           stored: Callable[[np.ndarray], np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine scores for candidate ids (from `stored`, e.g. the catalog's vectors), best
    k per query. PQ codes only find the candidates; the ranking and scores users see are exact."""
    valid = ids >= 0
    uniq = np.unique(ids[valid])
    if len(uniq) == 0:
        return np.zeros((len(ids), 0), np.float32), np.zeros((len(ids), 0), np.int64)
    vecs = stored(uniq)
    pos = np.searchsorted(uniq, np.where(valid, ids, uniq[0]))
    exact = np.einsum("qd,qkd->qk", queries, vecs[pos]).astype(np.float32)
    exact[~valid] = -np.inf
    order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(exact, order, axis=1)
    out_ids = np.take_along_axis(np.where(valid, ids, -1), order, axis=1)
    out_ids[~np.isfinite(scores)] = -1
    return scores, out_ids


def faiss_build() -> str:
    """Which FAISS is installed: 'cpu' or 'gpu (N GPUs)'."""
    faiss = load_faiss()

    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return f"gpu ({n} GPUs)" if n else "cpu"
