"""Near-duplicate groups inside an index: pairs above a threshold, put in tiers, grouped.

Pairs come from FAISS range search, a block of vectors at a time, so memory grows with the
number of close pairs, never with N x N. Each pair of pictures is then put in a tier
(match.tiers): `exact` (the same bytes: they share one vector), `copy` (the same picture,
verified by local features and an aligned comparison) or `similar` (another shot of the same
scene). By default a group is a connected component of exact and copy pairs; `similar=True`
also joins similar shots, each to the copy cluster it is directly similar to (never through a
chain of similar ones: a burst of 35 shots is not one group because each is like the next).
A video's frames are not verified (no local features are kept for frames): a pair with a
video frame counts as a copy when its vectors are above the threshold, as before tiers, and a
video joins every group one of its frames matches.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from deepvision.filters import Filter
from deepvision.match.features import Evidence
from deepvision.match.verifier import Verifier, index_verifier
from deepvision.store.catalog import Catalog, FileRow, Hit
from deepvision.store.faiss_index import EXACT_MAX, SPARSE, VectorIndex
from deepvision.store.indexstore import IndexStore
from deepvision.types import Tier

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
    # How it relates to the group's first member: exact (same bytes), copy (the same
    # picture: in the first member's copy cluster) or similar (another shot); the first
    # member itself is exact.
    kind: Tier = Tier.EXACT


@dataclass(frozen=True)
class Group:
    members: list[Member]
    # The review (services/review.py) fills these in: the stable id, where the group stands
    # (new, grown, later, open, resolved), the proposed or decided keeper, and the members that
    # joined since the decision.
    id: str = ""
    state: str = "new"
    keeper: str | None = None
    new_members: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def tier(self) -> Tier:
        """The loosest relation in the group: similar if any member is only similar."""
        kinds = {m.kind for m in self.members}
        return next(t for t in (Tier.SIMILAR, Tier.COPY, Tier.EXACT) if t in kinds)


@dataclass
class DupesResult:
    index: str
    model: str
    threshold: float
    groups: list[Group]
    similar: bool = False  # whether similar shots were grouped too
    hidden: int = 0  # groups left out because a decision resolved them (review.py)
    keep_rules: tuple[str, ...] = ()  # the rules that proposed the keepers


@dataclass(frozen=True)
class Links:
    """Pairs of vector rows above the threshold, split by tier (exact pairs share a row)."""

    copy: tuple[np.ndarray, np.ndarray]
    similar: tuple[np.ndarray, np.ndarray]


def find_dupes(store: IndexStore, threshold: float = DEFAULT_THRESHOLD, similar: bool = False,
               verify: bool = True, verifier: Verifier | None = None,
               flt: Filter = Filter()) -> DupesResult:
    """Groups of exact and copy pairs (similar=True: similar shots too). verify: tell copies
    from similar shots with the index's evidence (or `verifier`'s); False: every linked pair
    is a copy, as before tiers. flt: among the files that pass it only (both members of
    every pair pass)."""
    if verify and verifier is None:
        verifier = index_verifier(store)
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
        rows, cols = _pairs(_searcher(index, ids, vectors, allowed), ids, vectors, threshold)
        files = _picture_rows(snap.catalog, ids, hits)
        model = snap.manifest.model
    links = _tiered(rows, cols, files, verifier if verify else None)
    labels, copy_labels = _labels(len(ids), links, _same_file(ids, hits), similar)
    groups = _groups(ids, vectors, labels, copy_labels, hits)
    return DupesResult(os.path.abspath(store.dir), model, threshold, groups, similar)


def _picture_rows(catalog: Catalog, ids: np.ndarray,
                  hits: dict[int, list[Hit]]) -> dict[int, FileRow]:
    """Row -> the catalog row of a still picture behind it (a video frame has none)."""
    out = {}
    for row, vid in enumerate(ids.tolist()):
        found = hits.get(vid, [])
        if found and found[0].time is None:
            file = catalog.file_by_id(found[0].file_id)
            if file is not None:
                out[row] = file
    return out


def _tiered(rows: np.ndarray, cols: np.ndarray, files: dict[int, FileRow],
            verifier: Verifier | None) -> Links:
    """Each linked pair of rows as copy or similar (match.tiers); pairs with a video frame,
    or all of them without a verifier, are copies."""
    from deepvision.match.tiers import GreySquares, tier

    copy = np.ones(len(rows), bool)
    if verifier is not None and len(rows):
        pictures = sorted({int(r) for r in (*rows, *cols) if int(r) in files})
        evidence = verifier.evidence(files[r] for r in pictures)
        grey = GreySquares(verifier.loader)
        dense: dict[int, Evidence | None] = {}

        def dense_of(row: int) -> Evidence | None:
            if row not in dense:
                dense[row] = verifier.query_of(files[row])
            return dense[row]

        for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            ea = evidence.get(files[r].hash or "") if r in files else None
            eb = evidence.get(files[c].hash or "") if c in files else None
            if r in files and c in files:
                kind = Tier.SIMILAR if ea is None or eb is None else tier(
                    ea, eb, partial(grey, files[r].path), partial(grey, files[c].path),
                    partial(dense_of, r))[0]
                copy[i] = kind == Tier.COPY
    return Links((rows[copy], cols[copy]), (rows[~copy], cols[~copy]))


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


def _pairs(range_search: Callable[[np.ndarray, float], RangeResult], ids: np.ndarray,
           vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (r < c) whose vectors are above the threshold."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    row_of = {int(v): i for i, v in enumerate(ids)}
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for start in range(0, n, BLOCK):
        # FAISS keeps inner-product results strictly above the radius.
        lims, _, hits = range_search(vectors[start:start + BLOCK], threshold)
        counts = np.diff(lims).astype(np.int64)  # FAISS returns size_t offsets
        rows.append(np.repeat(np.arange(start, start + len(counts)), counts))
        cols.append(np.fromiter((row_of[int(h)] for h in hits), np.int64, len(hits)))
    r, c = np.concatenate(rows), np.concatenate(cols)
    keep = r < c  # each pair once; a row with itself is no pair
    return r[keep], c[keep]


def _components(n: int, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Component label per row (scipy's connected components on the sparse pair graph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, np.int64)
    r = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int64)
    c = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _labels(n: int, links: Links, chains: tuple[np.ndarray, np.ndarray],
            similar: bool) -> tuple[np.ndarray, np.ndarray]:
    """(group label, copy-cluster label) per row. Copy clusters are components of copy
    pairs (and a video's frames); with `similar`, each cluster not yet placed becomes a
    group's leader and takes the unplaced clusters directly similar to it, largest first."""
    clusters = _components(n, [links.copy, chains])
    if not similar or not len(links.similar[0]):
        return clusters, clusters
    near: dict[int, set[int]] = {}
    for r, c in zip(*links.similar, strict=True):
        a, b = int(clusters[r]), int(clusters[c])
        if a != b:
            near.setdefault(a, set()).add(b)
            near.setdefault(b, set()).add(a)
    sizes = np.bincount(clusters)
    leader: dict[int, int] = {}
    for cl in sorted(range(len(sizes)), key=lambda k: (-sizes[k], k)):
        if cl in leader:
            continue
        leader[cl] = cl
        for other in sorted(near.get(cl, ())):
            leader.setdefault(other, cl)
    return np.array([leader[int(k)] for k in clusters], np.int64), clusters


def _groups(ids: np.ndarray, vectors: np.ndarray, labels: np.ndarray, clusters: np.ndarray,
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
        # The leader's copy cluster first (its label is the group's): kinds are relative
        # to a member of it, so a group joined by --similar reads "copies, then similar".
        names = sorted(files, key=lambda p: (clusters[files[p][0][0]] != labels[rows[0]], p))
        first_rows = [row for row, _ in files[names[0]]]
        first = vectors[first_rows]
        groups.append(Group([_member(p, first, vectors, files[p],
                                     _kind(files[p], first_rows, clusters))
                             for p in names]))
    groups.sort(key=lambda g: (-g.size, g.members[0].path))
    return groups


def _kind(frames: list[tuple[int, float | None]], first_rows: list[int],
          clusters: np.ndarray) -> Tier:
    """A member's relation to the group's first member: its very vectors (the same bytes),
    the same copy cluster, or only similar."""
    rows = [row for row, _ in frames]
    if rows == first_rows:
        return Tier.EXACT
    return Tier.COPY if clusters[rows[0]] == clusters[first_rows[0]] else Tier.SIMILAR


def _member(path: str, first: np.ndarray, vectors: np.ndarray,
            frames: list[tuple[int, float | None]], kind: Tier) -> Member:
    """The file's best pair with the group's first member: its score and frame time."""
    scores = (vectors[[row for row, _ in frames]] @ first.T).max(axis=1)
    best = int(np.argmax(scores))
    return Member(path, float(scores[best]), frames[best][1], kind)
