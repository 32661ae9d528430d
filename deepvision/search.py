"""Query images -> ranked matches from a saved index, embedded with the index's own model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepvision.catalog import Catalog
from deepvision.discover import Failure, discover
from deepvision.embed import EmbedOptions, embed_paths, pick_device
from deepvision.errors import NoImagesError
from deepvision.index import RERANK_FACTOR, VectorIndex, rerank
from deepvision.models import Descriptor, get_spec, load_model, weights_for_index
from deepvision.render import Reporter
from deepvision.storage import Location, load_vectors, read_manifest

QE_ALPHA = 3.0


@dataclass(frozen=True)
class Match:
    rank: int
    path: str
    score: float  # cosine similarity, higher is more similar


@dataclass
class QueryResult:
    query: str
    error: str | None = None
    matches: list[Match] = field(default_factory=list)


@dataclass
class SearchResult:
    index: str
    model: str
    queries: list[QueryResult]

    @property
    def failed(self) -> int:
        return sum(q.error is not None for q in self.queries)


@dataclass(frozen=True)
class SearchRequest:
    queries: tuple[Path, ...]
    location: Location
    top_k: int = 10
    min_score: float | None = None
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    nprobe: int | None = None  # IVF lists to scan; default chosen with the index
    ef_search: int | None = None  # HNSW search breadth
    qe: int = 0  # alpha query expansion with this many neighbours (0: off)


def run_search(req: SearchRequest, rep: Reporter) -> SearchResult:
    manifest = read_manifest(req.location)  # before any heavy work: is there an index at all?
    found = discover(req.queries)
    if not found.files and not found.failures:
        raise NoImagesError(f"no query images found in {', '.join(map(str, req.queries))}")
    weights = weights_for_index(manifest.model, manifest.weights, manifest.weights_path,
                                req.weights)
    device = pick_device(req.embed.device)
    rep.info(f"index {req.location.dir}: model {manifest.model} ({weights.origin}) on {device}")
    model = load_model(get_spec(manifest.model), weights, device,
                       Descriptor.from_dict(manifest.descriptor))

    paths = [f.path for f in found.files]
    vectors = np.zeros((len(paths), manifest.dim), np.float32)
    errors: dict[str, Failure] = {f.path: f for f in found.failures}
    ok = np.zeros(len(paths), bool)
    for batch in embed_paths(model, paths, device, req.embed):
        vectors[batch.items] = batch.vectors
        ok[batch.items] = True
        errors.update((paths[i], f) for i, f in batch.failures)

    results = {p: QueryResult(p, f"{f.reason}: {f.message}") for p, f in errors.items()}
    good = [p for p, hit in zip(paths, ok, strict=True) if hit]
    results.update(_rank(req, vectors[ok], good))
    ordered = [results[p] for p in sorted(results)]
    return SearchResult(os.path.abspath(req.location.dir), manifest.model, ordered)


def _rank(req: SearchRequest, vectors: np.ndarray, paths: list[str]) -> dict[str, QueryResult]:
    if not paths:
        return {}
    manifest = read_manifest(req.location)  # re-read: a rebuild may have switched catalogs
    dim = manifest.dim
    catalog = Catalog(req.location.dir / manifest.catalog, readonly=True)
    try:
        with catalog.snapshot():  # the FAISS state and the id -> path map of one commit
            index = load_vectors(catalog, manifest, req.location.dir, mmap=True).on_gpu()
            index.configure(req.nprobe, req.ef_search)
            def stored(ids: np.ndarray) -> np.ndarray:
                return catalog.vectors_for(ids, dim)

            if req.qe:
                vectors = _expand(index, vectors, req.qe, stored)
            scores, ids = _top(index, vectors, req.top_k, stored)
            names = catalog.paths_for(ids[ids >= 0].ravel())
    finally:
        catalog.close()
    return {path: QueryResult(path, None, _matches(s, i, names, req))
            for path, s, i in zip(paths, scores, ids, strict=True)}


def _top(index: VectorIndex, queries: np.ndarray, k: int,
         stored: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if index.plan.kind == "ivfpq":  # candidates from codes, ranking from stored vectors
        _, cand = index.search(queries, k * RERANK_FACTOR)
        return rerank(queries, cand, stored, k)
    return index.search(queries, k)


def _expand(index: VectorIndex, queries: np.ndarray, n: int,
            stored: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """alpha query expansion (alpha = 3): each query plus its n nearest indexed vectors weighted
    by similarity^3, re-normalised. A close copy pulls the query towards the indexed version;
    an unrelated neighbour (similarity 0.3 -> weight 0.027) barely moves it."""
    scores, ids = _top(index, queries, n, stored)
    out = queries.copy()
    for row, (s, i) in enumerate(zip(scores, ids, strict=True)):
        keep = i >= 0
        if not keep.any():
            continue
        ids_k = i[keep]
        order = np.argsort(ids_k)  # the catalog reads sorted ids; put them back in rank order
        neighbours = np.empty((len(ids_k), queries.shape[1]), np.float32)
        neighbours[order] = stored(ids_k[order])
        out[row] += (np.clip(s[keep], 0, None) ** QE_ALPHA) @ neighbours
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _matches(scores: np.ndarray, ids: np.ndarray, names: dict[int, list[str]],
             req: SearchRequest) -> list[Match]:
    """Expand vector hits to file paths (byte-identical files share a vector), rank, cut."""
    out: list[Match] = []
    for score, vid in zip(scores, ids, strict=True):
        if vid < 0 or (req.min_score is not None and score < req.min_score):
            continue
        for path in names.get(int(vid), []):
            if len(out) == req.top_k:
                return out
            out.append(Match(len(out) + 1, path, float(score)))
    return out
