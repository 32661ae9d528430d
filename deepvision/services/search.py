"""Query images -> ranked matches from a saved index, embedded with the index's own model.

`Searcher` holds what is expensive (the Embedder) and answers queries against one consistent
snapshot of the index each time; the one-shot `search` command builds one and asks it once.
"""

from __future__ import annotations

import os
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepvision.errors import NoImagesError, UsageError
from deepvision.models.registry import text_models
from deepvision.pipeline.discover import discover
from deepvision.pipeline.embedder import Embedder, EmbedOptions
from deepvision.progress import Reporter
from deepvision.services.embedding import EmbedderFactory, index_embedder
from deepvision.services.ranking import expand_queries
from deepvision.store.faiss_index import VectorIndex
from deepvision.store.indexstore import IndexStore, Snapshot
from deepvision.store.manifest import Manifest
from deepvision.types import Failure, Match

IMAGE, TEXT = "image", "text"  # QueryResult.kind: what the query was


@dataclass
class QueryResult:
    query: str  # the query image's path, or the text itself
    error: str | None = None
    matches: list[Match] = field(default_factory=list)
    kind: str = IMAGE


@dataclass
class SearchResult:
    index: str
    model: str
    queries: list[QueryResult]

    @property
    def failed(self) -> int:
        return sum(q.error is not None for q in self.queries)


@dataclass(frozen=True)
class RankOptions:
    top_k: int = 10
    min_score: float | None = None
    nprobe: int | None = None  # IVF lists to scan; default chosen with the index
    ef_search: int | None = None  # HNSW search breadth
    qe: int = 0  # alpha query expansion with this many neighbours (0: off)


@dataclass(frozen=True)
class SearchRequest:
    queries: tuple[Path, ...]
    store: IndexStore
    rank: RankOptions = RankOptions()
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    texts: tuple[str, ...] = ()  # text queries (a model with a text encoder), after the images


def run_search(req: SearchRequest, rep: Reporter,
               embedders: EmbedderFactory = index_embedder) -> SearchResult:
    """Image queries (sorted by path), then text queries in the order given."""
    manifest = req.store.check()  # before any heavy work: is there an index, is it intact?
    if req.texts and not manifest.text_encoder:
        raise UsageError(no_text_encoder(manifest, req.store))
    found = discover(req.queries) if req.queries else None
    if found is not None and not found.files and not found.failures:
        raise NoImagesError(f"no query images found in {', '.join(map(str, req.queries))}")
    embedder = embedders(manifest, req.weights, req.embed)
    rep.info(f"index {req.store.dir}: {embedder.describe()}")
    note = manifest.preprocessing_note()
    if note:
        rep.info(note)
    searcher = Searcher(req.store, embedder)
    results: dict[str, QueryResult] = {}
    if found is not None:
        results.update((f.path, failed_query(f)) for f in found.failures)
        results.update(searcher.search_files([f.path for f in found.files], req.rank, rep))
    ordered = [results[p] for p in sorted(results)]
    if req.texts:
        ordered += searcher.search_texts(req.texts, req.rank, rep)
    return SearchResult(os.path.abspath(req.store.dir), manifest.model, ordered)


def no_text_encoder(manifest: Manifest, store: IndexStore) -> str:
    """Why `--text` cannot work on this index, and the rebuild that makes it work."""
    have = text_models()
    where = shlex.quote(str(store.dir.parent))
    return (f"index {manifest.name!r} was built with {manifest.model}, which has no text "
            f"encoder; --text needs a model that has one ({', '.join(have)}): re-create the "
            f"index with `deepvision rebuild --index-dir {where} --name {manifest.name} "
            f"--model {have[0]}` (its weights: see the README, \"CLIP models\")")


def failed_query(failure: Failure) -> QueryResult:
    return QueryResult(failure.path, f"{failure.reason}: {failure.message}")


class Searcher:
    """An index and the Embedder for its model: embeds queries, ranks them against the index as
    of the moment of each call (a rebuild that switches catalogs in between is picked up)."""

    def __init__(self, store: IndexStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        # The FAISS structure of the last generation searched: a long-lived Searcher (serve)
        # reloads it only when a writer has committed or a rebuild has switched catalogs.
        self._cached: tuple[tuple[str, int], VectorIndex] | None = None
        self._lock = threading.Lock()

    def search_files(self, paths: Sequence[str], opts: RankOptions,
                     rep: Reporter) -> dict[str, QueryResult]:
        """Every path gets a result: matches, or the reason it could not be read."""
        vectors = np.zeros((len(paths), self.embedder.dim), np.float32)
        ok = np.zeros(len(paths), bool)
        results: dict[str, QueryResult] = {}
        with rep.progress(len(paths) if len(paths) > 1 else 0, "embedding queries") as advance:
            for batch in self.embedder.embed_files(paths):
                vectors[batch.items] = batch.vectors
                ok[batch.items] = True
                results.update((paths[i], failed_query(f)) for i, f in batch.failures)
                advance(len(batch.items) + len(batch.failures))
        good = [p for p, hit in zip(paths, ok, strict=True) if hit]
        if good:
            ranked, notes = self.rank(vectors[ok], opts)
            for note in notes:
                rep.info(note)
            results.update((p, QueryResult(p, None, m)) for p, m in zip(good, ranked, strict=True))
        return results

    def search_texts(self, texts: Sequence[str], opts: RankOptions,
                     rep: Reporter) -> list[QueryResult]:
        """One result per text, in order. A non-finite embedding is that query's error."""
        vectors = self.embedder.embed_texts(texts)
        finite = np.isfinite(vectors).all(axis=1)
        ranked: list[list[Match]] = []
        if finite.any():
            ranked, notes = self.rank(vectors[finite], opts)
            for note in notes:
                rep.info(note)
        found = iter(ranked)
        return [QueryResult(t, None, next(found), TEXT) if ok else
                QueryResult(t, "corrupt: the model produced non-finite features for this text",
                            [], TEXT)
                for t, ok in zip(texts, finite, strict=True)]

    def rank(self, vectors: np.ndarray, opts: RankOptions) -> tuple[list[list[Match]], list[str]]:
        """Ranked matches for each query vector, and notes for the user (a repaired cache).
        All of them see one committed generation: FAISS and the id -> path map alike."""
        with self.store.open_read() as snap:
            index = self._index(snap)
            index.configure(opts.nprobe, opts.ef_search)
            if opts.qe:
                vectors = _expand(index, vectors, opts.qe, snap.stored)
            scores, ids = index.top(vectors, opts.top_k, snap.stored)
            hits = snap.catalog.hits_for(ids[ids >= 0].ravel())
            notes = list(snap.notes)
        return [matches(s, i, hits, opts) for s, i in zip(scores, ids, strict=True)], notes

    def _index(self, snap: Snapshot) -> VectorIndex:
        key = (snap.manifest.catalog, snap.catalog.generation)
        with self._lock:
            if self._cached is None or self._cached[0] != key:
                self._cached = (key, snap.vectors(mmap=True).on_gpu())
            return self._cached[1]


def _expand(index: VectorIndex, queries: np.ndarray, n: int,
            stored: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """alpha query expansion with the n nearest indexed vectors (ranking.expand_queries)."""
    scores, ids = index.top(queries, n, stored)
    neighbours = np.zeros((*ids.shape, queries.shape[1]), np.float32)
    valid = ids >= 0
    uniq = np.unique(ids[valid])
    if len(uniq):
        neighbours[valid] = stored(uniq)[np.searchsorted(uniq, ids[valid])]
    return expand_queries(queries, np.where(valid, scores, 0.0), neighbours)


def matches(scores: np.ndarray, ids: np.ndarray, hits: dict[int, list[tuple[str, int]]],
            opts: RankOptions) -> list[Match]:
    """Expand vector hits to files (byte-identical files share a vector), rank, cut."""
    out: list[Match] = []
    for score, vid in zip(scores, ids, strict=True):
        if vid < 0 or (opts.min_score is not None and score < opts.min_score):
            continue
        for path, file_id in hits.get(int(vid), []):
            if len(out) == opts.top_k:
                return out
            out.append(Match(len(out) + 1, path, float(score), file_id))
    return out
