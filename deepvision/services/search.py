"""Query images -> ranked matches from a saved index, embedded with the index's own model.

`Searcher` holds what is expensive (the Embedder) and answers queries against one consistent
snapshot of the index each time; the one-shot `search` command builds one and asks it once.
A result row is one indexed file: a video's best-matching frame stands for it (with its time),
unless `all_frames` asks for every matching frame. A video as a query is its sampled frames,
and each indexed file scores its best pair of (query frame, indexed vector).
"""

# Long module: Searcher is one object (its snapshot, cached FAISS structure, filters' passing ids
# and verifier shared by every step of a ranking: widen, filter, expand, merge, verify, regions);
# the functions after it are parts of those steps. The server imports its names from here too.

from __future__ import annotations

import os
import shlex
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepvision.errors import NoImagesError, UsageError
from deepvision.filters import Filter
from deepvision.match.features import QUICK_SIDE, Evidence
from deepvision.match.verifier import (
    DEFAULT_TOP,
    MATCH_SCORE,
    Verifier,
    index_verifier,
    unverified,
)
from deepvision.match.verifier import ranked as ranked_matches
from deepvision.models.descriptor import QUERY_ZOOM, QueryViews
from deepvision.models.registry import text_models
from deepvision.pipeline.discover import discover
from deepvision.pipeline.embedder import Embedder, EmbedOptions, report_notes
from deepvision.pipeline.video import VideoOptions
from deepvision.progress import Reporter
from deepvision.services.embedding import EmbedderFactory, index_embedder
from deepvision.services.ranking import expand_queries
from deepvision.store.catalog import Catalog, FileRow, Hit, taken_key
from deepvision.store.faiss_index import VectorIndex
from deepvision.store.indexstore import IndexStore, Snapshot
from deepvision.store.manifest import Manifest
from deepvision.types import EmbeddedBatch, Failure, Match

IMAGE, TEXT = "image", "text"  # QueryResult.kind: what the query was
# Candidates per query row grow by this factor while a video's frames crowd the top k.
WIDEN = 4
PASSING_CACHE = 8  # filters whose passing ids a Searcher keeps


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
    all_frames: bool = False  # one row per matching video frame, not per file
    # Query-time turns: the query is also embedded turned by 90, 180 and 270°, and each image
    # scores its best turn (a photo turned sideways still finds its original; bench/QUALITY.md:
    # 4 network passes per query, nothing changes in the index). None: as the index records
    # (Descriptor.query_turns).
    turns: bool | None = None
    # Query-time zoom: also the centre of the query, enlarged (Descriptor.query_zoom; one
    # network pass). None: as the index records (no index does by default); True on an index
    # without: QUERY_ZOOM.
    zoom: bool | None = None
    # Local-feature verification of the first verify_top candidates (match/): verified
    # matches rank first and say where they match. Needs a Verifier given to the Searcher.
    verify: bool = True
    verify_top: int = DEFAULT_TOP
    # Only files that pass this (date, camera, folder, kind, size, place) are ranked; the
    # filter works inside the FAISS search, so k results still come back (filters.py).
    filter: Filter = Filter()
    sort: str = "score"  # score: best first; date: the top_k best, oldest capture first


@dataclass(frozen=True)
class Query:
    """One query's vectors: an image's one, or a video's sampled frames (times[i]); with
    query views also each of them turned or zoomed (more rows, same times)."""

    vectors: np.ndarray  # float32 (n, dim)
    times: tuple[float | None, ...]


@dataclass(frozen=True)
class SearchRequest:
    queries: tuple[Path, ...]
    store: IndexStore
    rank: RankOptions = RankOptions()
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    texts: tuple[str, ...] = ()  # text queries (a model with a text encoder), after the images
    video: VideoOptions = VideoOptions()  # how query videos are sampled


def run_search(req: SearchRequest, rep: Reporter,
               embedders: EmbedderFactory = index_embedder) -> SearchResult:
    """Image queries (sorted by path), then text queries in the order given."""
    manifest = req.store.check()  # before any heavy work: is there an index, is it intact?
    check_filter(req.store, req.rank.filter)
    if req.texts and not manifest.text_encoder:
        raise UsageError(no_text_encoder(manifest, req.store))
    found = discover(req.queries) if req.queries else None
    if found is not None and not found.files and not found.failures:
        raise NoImagesError(f"no query images found in {', '.join(map(str, req.queries))}")
    opts = replace(req.embed, workload=len(found.files) if found else 0)
    embedder = embedders(manifest, req.weights, opts)
    rep.info(f"index {req.store.dir}: {embedder.describe()}")
    report_notes(embedder, rep)
    for note in (manifest.preprocessing_note(), manifest.descriptor_note()):
        if note:
            rep.info(note)
    searcher = Searcher(req.store, embedder, index_verifier(req.store) if req.rank.verify else None)
    results: dict[str, QueryResult] = {}
    if found is not None:
        results.update((f.path, failed_query(f)) for f in found.failures)
        results.update(searcher.search_files([f.path for f in found.files], req.rank, rep,
                                             req.video))
    ordered = [results[p] for p in sorted(results)]
    if req.texts:
        ordered += searcher.search_texts(req.texts, req.rank, rep)
    return SearchResult(os.path.abspath(req.store.dir), manifest.model, ordered)


def check_filter(store: IndexStore, flt: Filter) -> None:
    """A filter on metadata needs an index that has it: say so before the model loads."""
    if flt.needs_metadata:
        with store.open_read() as snap:
            snap.catalog.passing_files((), flt)  # raises the UsageError that says what to run


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

    def __init__(self, store: IndexStore, embedder: Embedder,
                 verifier: Verifier | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.verifier = verifier  # None: no verification (RankOptions.verify is then moot)
        # The FAISS structure of the last generation searched: a long-lived Searcher (serve)
        # reloads it only when a writer has committed or a rebuild has switched catalogs.
        self._cached: tuple[tuple[str, int], VectorIndex] | None = None
        # The passing vector ids of the last few filters: turning a broad filter into ids
        # reads every file's row (seconds at a million files); a service sees the same
        # filters again. Valid while the catalog has had no commit.
        self._passing: OrderedDict[tuple[str, int, Filter], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def search_files(self, paths: Sequence[str], opts: RankOptions, rep: Reporter,
                     video: VideoOptions | None = VideoOptions()) -> dict[str, QueryResult]:
        """Every path gets a result: matches, or the reason it could not be read. video: how
        query videos are sampled (None: a video query fails like any non-image)."""
        opts = self.resolved(opts)
        queries: dict[int, Query] = {}
        results: dict[str, QueryResult] = {}
        with rep.progress(len(paths) if len(paths) > 1 else 0, "embedding queries") as advance:
            views = self.views(opts)
            for batch in self.embedder.embed_files(paths, video, views=views):
                files = batch.files()
                extra = _view_rows(batch)
                for f in files:
                    if f.failure is not None:
                        results[paths[f.pos]] = failed_query(f.failure)
                    elif f.pos in extra:  # each view is one more row: its best pair wins
                        queries[f.pos] = Query(np.concatenate([f.vectors, extra[f.pos]]),
                                               f.times + tuple(t for t in f.times
                                                               for _ in range(views.count)))
                    else:
                        queries[f.pos] = Query(f.vectors, f.times)
                advance(len(files), sum(len(f.times) for f in files if f.times != (None,)))
        good = sorted(queries)
        if good:
            ranked, notes = self.rank_queries([queries[p] for p in good], self.widened(opts))
            for note in notes:
                rep.info(note)
            for p, found in zip(good, ranked, strict=True):
                picture = (self._picture(paths[p]) if self.verifying(opts)
                           and queries[p].times[0] is None else None)
                results[paths[p]] = QueryResult(
                    paths[p], None, in_order(self.verified(picture, found, opts), opts.sort))
        return results

    def verifying(self, opts: RankOptions) -> bool:
        return opts.verify and self.verifier is not None

    def widened(self, opts: RankOptions) -> RankOptions:
        """The global search's options: enough candidates for verification to choose from."""
        if not self.verifying(opts):
            return opts
        # By score: --sort date orders the final top_k, after verification has chosen them.
        return replace(opts, top_k=max(opts.top_k, opts.verify_top), sort="score")

    def verified(self, picture: np.ndarray | None, found: list[Match],
                 opts: RankOptions) -> list[Match]:
        """One query's candidates (from a widened search) re-ranked by verification against
        the query's pixels (None: a video or a query that cannot be verified), cut to top_k."""
        if picture is None or self.verifier is None or not opts.verify:
            return unverified(found)[:opts.top_k]
        rows = self._rows(found[:opts.verify_top])
        # A quick look first (features.QUICK_SIDE): most copies verify there.
        quick = self.verifier.query(picture, QUICK_SIDE)
        out = self.verifier.rerank(quick, found, rows, opts.verify_top)
        if not any(m.verified for m in out):
            evidence = self.verifier.query(picture)
            out = self.verifier.rerank(evidence, found, rows, opts.verify_top)
            if not any(m.verified for m in out):  # the picture may be a part of the query
                out = self._regional(picture, evidence, out, opts)
        return out[:opts.top_k]

    def _rows(self, found: Sequence[Match]) -> dict[int, FileRow]:
        with self.store.open_read() as snap:
            return {m.file_id: row for m in found if m.file_id is not None
                    and (row := snap.catalog.file_by_id(m.file_id)) is not None}

    def _regional(self, picture: np.ndarray, evidence: Evidence, ranked: list[Match],
                  opts: RankOptions) -> list[Match]:
        """Candidates of the picture-like parts of the query (a photo on a page or in a
        screenshot) and of the query with its flat patches painted over (stickers, shapes:
        match.regions), verified and merged into `ranked`. Only queries where nothing
        verified pay for these network passes."""
        from deepvision.match.regions import cut, proposals, repaired

        assert self.verifier is not None
        parts = [cut(picture, b) for b in proposals(picture)]
        painted = repaired(picture)
        parts += [painted] if painted is not None else []
        if not parts:
            return ranked
        batch = self.embedder.embed_images(parts)
        if not len(batch.vectors):
            return ranked
        lists, _ = self.rank_queries([Query(v[None], (None,)) for v in batch.vectors],
                                     replace(opts, top_k=opts.verify_top))
        # one row per file (per frame with --all-frames), as the global search gave them
        held = {(m.file_id, m.timestamp if opts.all_frames else None): m for m in ranked}
        extra: dict[tuple[int | None, float | None], Match] = {}
        for m in (m for found in lists for m in found):
            key = (m.file_id, m.timestamp if opts.all_frames else None)
            if key in held:  # already checked: it keeps its verdict, and its best score
                if m.score >= MATCH_SCORE:
                    held[key] = replace(held[key], score=max(m.score, held[key].score))
            elif key not in extra or m.score > extra[key].score:
                extra[key] = m
        ranked = list(held.values())
        if not extra:
            return ranked_matches(ranked)
        new = sorted(extra.values(), key=lambda m: -m.score)[:opts.verify_top]
        checked = self.verifier.rerank(evidence, new, self._rows(new), len(new))
        # A part scores like another view of the query (as the turns and the zoom do) where it
        # is as close as a copy (MATCH_SCORE): an image found by the photo on a page outranks
        # what the page's own vector found. A part's weaker neighbours join only verified, so
        # a query with no copy in the index keeps its own ranking of similar images.
        return ranked_matches([*ranked, *(m for m in checked
                                          if m.verified or m.score >= MATCH_SCORE)])

    def _picture(self, path: str) -> np.ndarray | None:
        """The query's pixels for verification; None when it cannot be read as a picture
        (its vector came from another road, e.g. a video): it stays unverified."""
        from deepvision.match.verifier import load_picture

        try:
            return load_picture(path)
        except Exception:  # unreadable as a picture: the result stands unverified
            return None

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

    def resolved(self, opts: RankOptions) -> RankOptions:
        """opts with `turns` and `zoom` decided: the index's own choice unless the caller made
        one."""
        d = self.embedder.model.descriptor
        return replace(opts, turns=d.query_turns if opts.turns is None else opts.turns,
                       zoom=bool(d.query_zoom) if opts.zoom is None else opts.zoom)

    def views(self, opts: RankOptions) -> QueryViews:
        """The query views `opts` asks for (resolved): the index's zoom, or QUERY_ZOOM when
        the caller asks for a zoom on an index that records none."""
        opts = self.resolved(opts)
        zoom = (self.embedder.model.descriptor.query_zoom or QUERY_ZOOM) if opts.zoom else 0.0
        return QueryViews(bool(opts.turns), zoom)

    def rank(self, vectors: np.ndarray, opts: RankOptions,
             extra: np.ndarray | None = None) -> tuple[list[list[Match]], list[str]]:
        """Ranked matches for each query vector (an image), and notes for the user. extra
        (q, V, dim): the queries' views (EmbeddedBatch.query_views), used when the options
        ask for views; each image then scores its best view."""
        if extra is None or not self.views(opts).count:
            return self.rank_queries([Query(v[None], (None,)) for v in vectors], opts)
        return self.rank_queries([Query(np.concatenate([v[None], e]), (None,) * (1 + len(e)))
                                  for v, e in zip(vectors, extra, strict=True)], opts)

    def rank_queries(self, queries: Sequence[Query],
                     opts: RankOptions) -> tuple[list[list[Match]], list[str]]:
        """Ranked matches for each query, and notes for the user (a repaired cache). All of
        them see one committed generation: FAISS and the id -> path map alike."""
        flat = np.concatenate([q.vectors for q in queries])
        owner = np.repeat(np.arange(len(queries)), [len(q.vectors) for q in queries])
        qtimes = [t for q in queries for t in q.times]
        with self.store.open_read() as snap:
            index = self._index(snap)
            index.configure(opts.nprobe, opts.ef_search)
            if opts.qe:  # expansion looks at every neighbour: it only moves the query
                flat = _expand(index, flat, opts.qe, snap.stored)
            allowed = self._allowed(snap, opts.filter) if opts.filter.active else None
            out: list[list[Match]] = [[] for _ in queries]
            todo, k = list(range(len(queries))), opts.top_k
            size = len(index) if allowed is None else len(allowed)
            while todo and size:
                rows = np.flatnonzero(np.isin(owner, todo))
                scores, ids = index.top(flat[rows], min(k, size), snap.stored, allowed)
                hits = _hits(snap.catalog, ids, opts.filter)
                for q in todo:
                    mine = owner[rows] == q
                    out[q] = matches(scores[mine], ids[mine], [qtimes[i] for i in rows[mine]],
                                     hits, opts)
                # Widen only where a video's frames crowded the candidates: more exist, and
                # the last one still passed --min-score.
                todo = [q for q in todo if _crowded(out[q], scores[owner[rows] == q],
                                                    ids[owner[rows] == q], opts)]
                if k >= size:
                    break
                k *= WIDEN
            out = _described(snap.catalog, out, opts.sort)
            notes = list(snap.notes)
            if allowed is not None and not len(allowed):
                notes.append(f"no indexed file passes the filter ({opts.filter.describe()})")
        return out, notes

    def _allowed(self, snap: Snapshot, flt: Filter) -> np.ndarray:
        key = (snap.manifest.catalog, snap.catalog.commits, flt)
        with self._lock:
            if key in self._passing:
                self._passing.move_to_end(key)
                return self._passing[key]
        allowed = snap.catalog.passing_vectors(flt)
        with self._lock:
            self._passing[key] = allowed
            while len(self._passing) > PASSING_CACHE:
                self._passing.popitem(last=False)
        return allowed

    def _index(self, snap: Snapshot) -> VectorIndex:
        key = (snap.manifest.catalog, snap.catalog.generation)
        with self._lock:
            if self._cached is None or self._cached[0] != key:
                self._cached = (key, snap.vectors(mmap=True).on_gpu())
            return self._cached[1]


def _hits(catalog: Catalog, ids: np.ndarray, flt: Filter) -> dict[int, list[Hit]]:
    """The files behind candidate vectors; with a filter, only the files that pass it (a
    vector passes when any of its byte-identical files does; the others stay out)."""
    hits = catalog.hits_for(ids[ids >= 0].ravel())
    if not flt.active:
        return hits
    passing = catalog.passing_files((h.file_id for hs in hits.values() for h in hs), flt)
    return {vid: [h for h in hs if h.file_id in passing] for vid, hs in hits.items()}


def _described(catalog: Catalog, ranked: list[list[Match]], sort: str) -> list[list[Match]]:
    """Each match with its file's metadata; sort=date: oldest capture first (unknown last)."""
    metas = catalog.meta_for(m.file_id for ms in ranked for m in ms if m.file_id is not None)
    out = [[replace(m, meta=metas.get(m.file_id)) if m.file_id is not None else m for m in ms]
           for ms in ranked]
    return [in_order(ms, sort) for ms in out]


def in_order(found: list[Match], sort: str) -> list[Match]:
    """sort=date: oldest capture first, unknown dates last; score: as ranked."""
    return sorted(found, key=_date_order) if sort == "date" else found


def _date_order(m: Match) -> tuple[bool, float, int]:
    key = taken_key(m.meta.taken) if m.meta else None
    return key is None, key or 0.0, m.rank


def _view_rows(batch: EmbeddedBatch) -> dict[int, np.ndarray]:
    """Position -> its rows' query views, (rows x V, dim) in row order, for the positions of
    the batch that did not fail (as EmbeddedBatch.files() groups them); {} without views."""
    if batch.query_views is None:
        return {}
    failed = {pos for pos, _ in batch.failures}
    rows: dict[int, list[int]] = {}
    for row, pos in enumerate(batch.items):
        if pos not in failed:
            rows.setdefault(pos, []).append(row)
    dim = batch.query_views.shape[-1]
    return {pos: batch.query_views[r].reshape(-1, dim) for pos, r in rows.items()}


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


def matches(scores: np.ndarray, ids: np.ndarray, qtimes: Sequence[float | None],
            hits: dict[int, list[Hit]], opts: RankOptions) -> list[Match]:
    """One query's candidates (a row per query vector) -> files, best pair each (or every
    indexed frame with all_frames), ranked by score, then path and time; cut to top_k.
    Byte-identical files share their vectors, so one candidate can be several files."""
    best: dict[tuple[str, float | None], Match] = {}
    for row_scores, row_ids, qtime in zip(scores, ids, qtimes, strict=True):
        for score, vid in zip(row_scores, row_ids, strict=True):
            if vid < 0 or (opts.min_score is not None and score < opts.min_score):
                continue
            for hit in hits.get(int(vid), []):
                key = (hit.path, hit.time if opts.all_frames else None)
                held = best.get(key)
                if held is None or score > held.score:
                    best[key] = Match(0, hit.path, float(score), hit.file_id, hit.time, qtime)
    ranked = sorted(best.values(), key=lambda m: (-m.score, m.path, m.timestamp or 0.0))
    return [replace(m, rank=i) for i, m in enumerate(ranked[:opts.top_k], 1)]


def _crowded(found: list[Match], scores: np.ndarray, ids: np.ndarray,
             opts: RankOptions) -> bool:
    """Fewer files than asked although every candidate was a real vector that passed
    --min-score: several were frames of one video (or one query video's frames met)."""
    if len(found) >= opts.top_k or (ids < 0).any():
        return False
    return opts.min_score is None or bool((scores[:, -1] >= opts.min_score).all())
