"""Near-duplicate groups inside an index: connected components of pairs above a threshold.

Pairs come from FAISS range search, a block of vectors at a time, so memory grows with the
number of close pairs, never with N x N. A group is a set of files: two files are linked when
any vector of one (a video: any sampled frame) is above the threshold with any vector of the
other, and a video's frames all belong to that one video, so a video joins every group one of
its frames matches (and may join two groups of photos into one).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deepvision.filters import Filter
from deepvision.store.catalog import Catalog, Hit
from deepvision.store.faiss_index import EXACT_MAX, SPARSE, VectorIndex
from deepvision.store.indexstore import IndexStore

# Cosine similarity above which two images count as near-duplicates. Measured with
# EfficientNet-Lite0 (bench/dupes_threshold.py, figures in bench/RESULTS.md): half-size and
# quality-40 copies of the shipped photos score >= 0.78 with their original, the closest two
# distinct photos 0.64. Other models have other score ranges: tune --threshold for them.
DEFAULT_THRESHOLD = 0.72
BLOCK = 2048  # queries per range search: bounds the temporary result arrays
RangeResult = tuple[np.ndarray, np.ndarray, np.ndarray]  # FAISS's (lims, scores, ids)


@dataclass(frozen=True)
class Member:
    path: str
    score: float  # cosine similarity to the group's first member (best pair of vectors)
    timestamp: float | None = None  # a video: its frame in that best pair

@dataclass(frozen=True)
class Group:
    members: list[Member]

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class DupesResult:
    index: str
    model: str
    threshold: float
    groups: list[Group]


def find_dupes(store: IndexStore, threshold: float = DEFAULT_THRESHOLD,
               flt: Filter = Filter()) -> DupesResult:
    """Groups among all indexed files, or with a filter among the files that pass it only
    (both members of every pair pass)."""
    with store.open_read() as snap:
        ids, vectors = _all_vectors(snap.catalog, snap.dim)
        index = snap.vectors()
        index.configure()
        allowed = None
        if flt.active:
            allowed = snap.catalog.passing_vectors(flt)
            keep = np.isin(ids, allowed)
            ids, vectors = ids[keep], vectors[keep]
        hits = _passing(snap.catalog, snap.catalog.hits_for(ids.tolist()), flt)
        labels = _components(_searcher(index, ids, vectors, allowed), ids, vectors, threshold,
                             _same_file(ids, hits))
        model = snap.manifest.model
    groups = _groups(ids, vectors, labels, hits)
    return DupesResult(os.path.abspath(store.dir), model, threshold, groups)


def _searcher(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray,
              allowed: np.ndarray | None) -> Callable[[np.ndarray, float], RangeResult]:
    """Range search among the passing vectors: the index with an ID selector, or for a
    filter that passes few (for HNSW, whose graph walk strands: a small fraction), an exact
    flat index of just them."""
    if allowed is None:
        return index.range_search
    sparse = index.plan.kind == "hnsw" and len(allowed) < SPARSE * len(index)
    if len(allowed) <= EXACT_MAX or sparse:
        exact = VectorIndex.new(vectors.shape[1])
        exact.add(ids, vectors)
        return exact.range_search
    return lambda queries, threshold: index.filtered_range(queries, threshold, allowed)


def _passing(catalog: Catalog, hits: dict[int, list[Hit]], flt: Filter) -> dict[int, list[Hit]]:
    """Only the files that pass: a vector shared by byte-identical files may pass for one of
    them only."""
    if not flt.active:
        return hits
    passing = catalog.passing_files((h.file_id for hs in hits.values() for h in hs), flt)
    return {vid: [h for h in hs if h.file_id in passing] for vid, hs in hits.items()}


def _all_vectors(catalog: Catalog, dim: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = list(catalog.iter_vectors(dim))
    if not blocks:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _same_file(ids: np.ndarray, hits: dict[int, list[Hit]]) -> tuple[np.ndarray, np.ndarray]:
    """Edges (rows, cols) that chain the rows of each file's vectors (a video's frames)."""
    rows_of: dict[str, list[int]] = {}
    for row, vid in enumerate(ids.tolist()):
        for hit in hits.get(vid, []):
            rows_of.setdefault(hit.path, []).append(row)
    chains = [(a, b) for rows in rows_of.values() for a, b in itertools.pairwise(rows)]
    pairs = np.array(chains, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _components(range_search: Callable[[np.ndarray, float], RangeResult], ids: np.ndarray,
                vectors: np.ndarray, threshold: float,
                extra: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Component label per row of `ids` (scipy's connected components on the sparse pair
    graph, plus the `extra` edges)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64)
    row_of = {int(v): i for i, v in enumerate(ids)}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, BLOCK):
        # FAISS keeps inner-product results strictly above the radius.
        lims, _, hits = range_search(vectors[start:start + BLOCK], threshold)
        counts = np.diff(lims).astype(np.int64)  # FAISS returns size_t offsets
        rows.append(np.repeat(np.arange(start, start + len(counts)), counts))
        cols.append(np.fromiter((row_of[int(h)] for h in hits), np.int64, len(hits)))
    r, c = np.concatenate([*rows, extra[0]]), np.concatenate([*cols, extra[1]])
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _groups(ids: np.ndarray, vectors: np.ndarray, labels: np.ndarray,
            hits: dict[int, list[Hit]]) -> list[Group]:
    rows_by_label: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        rows_by_label.setdefault(int(label), []).append(row)
    groups = []
    for rows in rows_by_label.values():
        # Byte-identical files share their vectors, so a single row can already be a group.
        files: dict[str, list[tuple[int, float | None]]] = {}
        for row in rows:
            for hit in hits.get(int(ids[row]), []):
                files.setdefault(hit.path, []).append((row, hit.time))
        if len(files) < 2:
            continue
        names = sorted(files)
        first = vectors[[row for row, _ in files[names[0]]]]
        groups.append(Group([_member(p, first, vectors, files[p]) for p in names]))
    groups.sort(key=lambda g: (-g.size, g.members[0].path))
    return groups


def _member(path: str, first: np.ndarray, vectors: np.ndarray,
            frames: list[tuple[int, float | None]]) -> Member:
    """The file's best pair with the group's first member: its score and frame time."""
    scores = (vectors[[row for row, _ in frames]] @ first.T).max(axis=1)
    best = int(np.argmax(scores))
    return Member(path, float(scores[best]), frames[best][1])
