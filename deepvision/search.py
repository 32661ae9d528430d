"""Query images -> ranked matches from a saved index, embedded with the index's own model."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepvision.catalog import Catalog
from deepvision.discover import Failure, discover
from deepvision.embed import EmbedOptions, embed_paths, pick_device
from deepvision.errors import NoImagesError
from deepvision.index import RERANK_FACTOR, rerank
from deepvision.models import Descriptor, get_spec, load_model, weights_for_index
from deepvision.render import Reporter
from deepvision.storage import Location, load_vectors, read_manifest


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
            if index.plan.kind == "ivfpq":  # candidates from codes, ranking from stored vectors
                _, cand = index.search(vectors, req.top_k * RERANK_FACTOR)
                scores, ids = rerank(vectors, cand, lambda u: catalog.vectors_for(u, dim),
                                     req.top_k)
            else:
                scores, ids = index.search(vectors, req.top_k)
            names = catalog.paths_for(ids[ids >= 0].ravel())
    finally:
        catalog.close()
    return {path: QueryResult(path, None, _matches(s, i, names, req))
            for path, s, i in zip(paths, scores, ids, strict=True)}


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
