"""The eval stage: how well does a model find the other copies of a picture among distractors?

An evaluation set is groups of images that show the same picture (an original and its edited
copies, say) plus distractors that belong to no group. Every image is embedded once; each grouped
image then searches all the others, and its ranked list says how early its group-mates come.

Metrics of one query (the query itself is never in its own ranked list; the "relevant" items are
the other readable members of its group):

- AP, average precision: the mean, over all relevant items, of the precision at the rank where
  each one is found. mAP is its mean over queries.
- recall@k: 1 if at least one relevant item is in the top k, else 0. This is the Recall@K of
  instance retrieval and deep metric learning benchmarks (Stanford Online Products, In-Shop,
  CUB-200), also called hit rate or top-k accuracy; recall@1 equals precision@1.
- precision@k: the number of relevant items in the top k, divided by k (so it cannot reach 1
  when a query has fewer than k relevant items).

Overall, per-group and per-edit figures are means over queries. A query without relevant items
(a distractor, or the only readable image of its group) is not scored, but stays in the database
that every other query searches. Nothing is written anywhere: the vectors live in memory only.
"""

from __future__ import annotations

import csv
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepvision.errors import NoImagesError, UsageError
from deepvision.models.descriptor import QUERY_ZOOM, Descriptor, QueryViews
from deepvision.models.registry import AUTO, default_descriptor, resolve
from deepvision.pipeline.discover import discover, extension_kind
from deepvision.pipeline.embedder import Embedder, EmbedOptions, report_notes
from deepvision.progress import Reporter
from deepvision.services.ranking import QE_ALPHA, expand_queries, merge_views
from deepvision.types import Failure, Reason

DISTRACTOR_GROUP = "distractors"  # a sub-folder (or CSV group) of this name holds no group
EDIT_SEPARATOR = "__"  # <anything>__<edit>.jpg: the edit name for the per-edit breakdown
DEFAULT_KS = (1, 5, 10)
# Queries per FAISS search call: a full ranking is N entries per query, so cap the block at
# about 16 M (id, score) pairs (~200 MB) whatever the size of the set.
_BLOCK_PAIRS = 1 << 24


# ---- the set -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    path: str  # absolute, not symlink-resolved
    group: str | None  # None: a distractor, relevant to nothing

    @property
    def edit(self) -> str | None:
        return edit_name(self.path)


@dataclass(frozen=True)
class EvalSet:
    items: tuple[EvalItem, ...]
    failures: tuple[Failure, ...]  # listed or found, but not usable (missing, unsupported)


def edit_name(path: str) -> str | None:
    """'.../cat__crop70.jpg' -> 'crop70'; None when the file name carries no edit."""
    stem = os.path.splitext(os.path.basename(path))[0]
    head, sep, tail = stem.rpartition(EDIT_SEPARATOR)
    return tail if sep and head and tail else None


def load_evalset(source: Path) -> EvalSet:
    """A folder with one sub-folder per group, or a CSV file with the columns path,group.

    Folder: every image below DIR/<name>/ (at any depth) belongs to group <name>; images directly
    inside DIR and below DIR/distractors/ are distractors. CSV: paths are relative to the CSV's
    folder (or absolute); an empty group or "distractors" makes a distractor.
    """
    if not source.exists():
        raise UsageError(f"{source} does not exist (check the path)")
    if source.is_dir():
        return _from_folder(source)
    if source.suffix.lower() == ".csv":
        return _from_csv(source)
    raise UsageError(f"{source}: pass a folder with one sub-folder per group, "
                     "or a .csv file with the columns path,group")


def _from_folder(root: Path) -> EvalSet:
    top = os.path.abspath(root)
    found = discover([Path(top)])
    items = []
    for rec in found.files:
        parts = Path(os.path.relpath(rec.path, top)).parts
        group = parts[0] if len(parts) > 1 and parts[0] != DISTRACTOR_GROUP else None
        items.append(EvalItem(rec.path, group))
    return EvalSet(tuple(items), tuple(found.failures))


def _from_csv(path: Path) -> EvalSet:
    base = os.path.dirname(os.path.abspath(path))
    items: list[EvalItem] = []
    failures: list[Failure] = []
    seen: set[str] = set()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: Excel writes a BOM
            reader = csv.DictReader(f)
            if not {"path", "group"} <= set(reader.fieldnames or ()):
                raise UsageError(f"{path}: the first row must name the columns path,group")
            for row in reader:
                line = reader.line_num
                name = (row.get("path") or "").strip()
                if not name:
                    raise UsageError(f"{path}, line {line}: empty path")
                full = os.path.abspath(os.path.join(base, os.path.expanduser(name)))
                if full in seen:  # one file in two groups would be its own relevant item
                    raise UsageError(f"{path}, line {line}: {name} is listed twice")
                seen.add(full)
                group = (row.get("group") or "").strip()
                failure = _unusable(full)
                if failure is not None:
                    failures.append(failure)
                    continue
                items.append(EvalItem(full, group if group and group != DISTRACTOR_GROUP
                                      else None))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return EvalSet(tuple(items), tuple(failures))


def _unusable(path: str) -> Failure | None:
    if not os.path.isfile(path):
        return Failure(path, Reason.MISSING,
                       "listed in the CSV but not found (relative paths start at the CSV's folder)")
    if extension_kind(path) == "unsupported":
        ext = os.path.splitext(path)[1].lower()
        return Failure(path, Reason.UNSUPPORTED_FORMAT,
                       f"{ext} files are not supported; convert to JPEG/PNG/WebP")
    return None  # a wrong extension on a good image is the decoder's call, not ours


# ---- metrics (pure numpy) ----------------------------------------------------------------------


def average_precision(hits: Sequence[bool] | np.ndarray, n_relevant: int) -> float:
    """Average precision of one ranked list.

    hits[r] is true when the item at rank r + 1 is relevant. n_relevant counts all relevant items,
    including any the list does not reach (each of those adds a precision of 0). Example:
    relevant at ranks 1 and 3 of 4, n_relevant 2 -> (1/1 + 2/3) / 2 = 0.8333.
    """
    h = np.asarray(hits, dtype=bool)
    found = int(h.sum())
    if n_relevant < max(found, 1):
        raise ValueError(f"n_relevant={n_relevant}, but the list holds {found} relevant items")
    ranks = np.flatnonzero(h) + 1  # 1-based ranks of the relevant items
    return float((np.arange(1, found + 1) / ranks).sum() / n_relevant)


def recall_at_k(hits: Sequence[bool] | np.ndarray, k: int) -> float:
    """1.0 if any relevant item is among the first k, else 0.0 (instance-retrieval Recall@K)."""
    return float(np.asarray(hits, dtype=bool)[:k].any())


def precision_at_k(hits: Sequence[bool] | np.ndarray, k: int) -> float:
    """Relevant items among the first k, divided by k (a list shorter than k counts as misses)."""
    return float(np.asarray(hits, dtype=bool)[:k].sum() / k)


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,5,10' -> (1, 5, 10): sorted, unique, each >= 1."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise UsageError(f"--ks {text!r}: give cut-offs >= 1 separated by commas, e.g. 1,5,10")
    return tuple(ks)


# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryScore:
    path: str
    group: str
    edit: str | None
    relevant: int  # other readable members of the group
    ap: float
    recall: dict[int, float]  # k -> recall@k (0 or 1)
    precision: dict[int, float]  # k -> precision@k
    first_hit: int | None  # rank of the first relevant item (1: found at once; None: never)
    top_path: str  # what came first instead, when first_hit > 1
    top_score: float


@dataclass(frozen=True)
class Scores:
    """Means over `queries` queries: one line of the report."""

    name: str
    queries: int
    mean_ap: float
    recall: dict[int, float]
    precision: dict[int, float]


@dataclass
class EvalResult:
    source: str
    model: str
    weights: str  # where the weights came from
    weights_identity: str
    device: str
    descriptor: str
    ks: tuple[int, ...]
    images: int  # embedded
    groups: int
    distractors: int  # embedded images without a group (lone group members are not counted)
    overall: Scores
    by_group: list[Scores]
    by_edit: list[Scores]  # empty when no file name carries an edit
    queries: list[QueryScore]
    failures: list[Failure] = field(default_factory=list)
    embed_seconds: float = 0.0
    seconds: float = 0.0
    protocol: str = "all"
    vectors: np.ndarray | None = field(default=None, repr=False)  # row-aligned with `paths`
    paths: list[str] = field(default_factory=list, repr=False)
    item_groups: list[str | None] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class EvalRequest:
    source: Path
    model: str = AUTO
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    ks: tuple[int, ...] = DEFAULT_KS
    descriptor: Descriptor | None = None  # None: the model's default (registry.default_descriptor)
    whiten: int = 0  # experiment: PCA-whitening to this many dims, learned from the set
    qe: int = 0  # experiment: alpha query expansion with this many neighbours
    protocol: str = "all"  # all | originals (see PROTOCOLS)
    turns: bool | None = None  # query-time turns (None: as the descriptor says, like search)
    zoom: bool | None = None  # query-time zoom (None: as the descriptor says, like search)
    # Local-feature verification of each query's first verify_top candidates, as `search`
    # does by default (0: off, the vectors' ranking alone).
    verify_top: int = 0


# all: every grouped image searches all the others (its group-mates are relevant).
# originals: the database is the originals (files named <x>__original.*), the members of
# natural pairs (<x>__natural.*: two photos of one scene, no original between them), images
# without an edit name and the distractors; each edited copy searches only that database, so
# it must find its own original: a `search` against an index of originals. Natural-pair members
# (and unnamed images) query it too, and must find their partner.
PROTOCOLS = ("all", "originals")
ORIGINAL_EDIT = "original"
NATURAL_EDIT = "natural"


# ---- running -----------------------------------------------------------------------------------


def run_eval(req: EvalRequest, rep: Reporter, embedder: Embedder | None = None) -> EvalResult:
    """Embed every image of the set once, rank all of them for every query, score the rankings."""
    start = time.perf_counter()
    if req.protocol not in PROTOCOLS:
        raise UsageError(f"--protocol {req.protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    evalset = load_evalset(req.source)  # before any heavy work: a bad set fails in a blink
    return evaluate_set(evalset, req, rep, embedder, start)


def evaluate_set(evalset: EvalSet, req: EvalRequest, rep: Reporter,
                 embedder: Embedder | None = None, start: float | None = None) -> EvalResult:
    """run_eval on a set already listed (`eval --synthetic` makes its own)."""
    start = time.perf_counter() if start is None else start
    if not evalset.items:
        first = (f"; {len(evalset.failures)} unusable, e.g. {evalset.failures[0].path}: "
                 f"{evalset.failures[0].message}") if evalset.failures else ""
        raise NoImagesError(f"no images found in {req.source}{first}")
    _check_scorable([item.group for item in evalset.items], req.source)

    spec, weights, notice = resolve(req.model, req.weights)
    if notice:
        rep.info(notice)
    descriptor = req.descriptor or default_descriptor(spec)
    opts = replace(req.embed, workload=len(evalset.items))
    embedder = embedder or Embedder.load(spec, weights, descriptor, opts)
    n_groups = len({i.group for i in evalset.items if i.group is not None})
    views = query_views(descriptor, req.turns, req.zoom)
    described = replace(descriptor, query_turns=views.turns, query_zoom=views.zoom)
    rep.info(f"eval {req.source}: {len(evalset.items)} images in {n_groups} groups; "
             f"descriptor {described.label}; {embedder.describe()}")
    report_notes(embedder, rep)

    embed_start = time.perf_counter()
    vectors, turned, ok, failures = _embed_all(embedder, evalset.items, rep, views)
    embed_seconds = time.perf_counter() - embed_start
    rep.info(f"embedded {int(ok.sum())} images in {embed_seconds:.1f} s "
             f"({ok.sum() / embed_seconds if embed_seconds else 0:.1f} img/s)")
    items = [item for item, good in zip(evalset.items, ok, strict=True) if good]
    db = pca_whiten(vectors[ok], req.whiten) if req.whiten else vectors[ok]
    expanded = alpha_query_expansion(db, req.qe) if req.qe else None
    if turned is not None and (req.whiten or req.qe):
        raise UsageError("query-time turns and zoom do not combine with --whiten/--qe; add "
                         "--no-turns --no-zoom")
    queries = score_rankings(db, [i.group for i in items], [i.path for i in items], req.ks,
                             expanded, database_mask(items, req.protocol),
                             None if turned is None else turned[ok], req.verify_top)
    return EvalResult(
        source=os.path.abspath(req.source), model=spec.name, weights=weights.origin,
        weights_identity=weights.identity, device=str(embedder.device),
        descriptor=described.label
        + (f"+pcaw{req.whiten}" if req.whiten else "") + (f"+qe{req.qe}" if req.qe else ""),
        protocol=req.protocol,
        ks=req.ks, images=len(items),
        groups=len({q.group for q in queries}), distractors=sum(i.group is None for i in items),
        overall=summarise("overall", queries, req.ks),
        by_group=[summarise(g, qs, req.ks) for g, qs in _grouped(queries, lambda q: q.group)
                  if g is not None],  # every query has a group; the check is for the types
        by_edit=[summarise(e, qs, req.ks) for e, qs in _grouped(queries, lambda q: q.edit)
                 if e is not None],
        queries=queries, failures=[*evalset.failures, *failures],
        embed_seconds=embed_seconds, seconds=time.perf_counter() - start,
        vectors=db, paths=[i.path for i in items], item_groups=[i.group for i in items])


def query_views(descriptor: Descriptor, turns: bool | None, zoom: bool | None) -> QueryViews:
    """The query views of an eval: the descriptor's, unless --turns/--zoom chose (as search)."""
    fraction = (descriptor.query_zoom or QUERY_ZOOM) if zoom else 0.0
    return QueryViews(descriptor.query_turns if turns is None else turns,
                      descriptor.query_zoom if zoom is None else fraction)


def database_mask(items: Sequence[EvalItem], protocol: str) -> np.ndarray | None:
    """Which items the queries search (None: all of them); see PROTOCOLS."""
    if protocol == "all":
        return None
    return np.array([i.group is None or i.edit in (None, ORIGINAL_EDIT, NATURAL_EDIT)
                     for i in items], bool)


def _check_scorable(groups: Iterable[str | None], source: Path) -> None:
    counts: dict[str, int] = defaultdict(int)
    for g in groups:
        if g is not None:
            counts[g] += 1
    if not any(n >= 2 for n in counts.values()):
        raise UsageError(
            f"{source}: nothing to score, no group holds two images. Put each picture and its "
            "copies in a sub-folder of their own (or give them one group in the CSV)")


def _embed_all(embedder: Embedder, items: Sequence[EvalItem], rep: Reporter,
               views: QueryViews) -> tuple[np.ndarray, np.ndarray | None, np.ndarray,
                                           list[Failure]]:
    paths = [item.path for item in items]
    vectors = np.zeros((len(paths), embedder.dim), np.float32)
    extra = np.zeros((len(paths), views.count, embedder.dim), np.float32) if views.count \
        else None
    ok = np.zeros(len(paths), bool)
    failures: list[Failure] = []
    with rep.progress(len(paths), "embedding") as advance:
        for batch in embedder.embed_files(paths, views=views):
            vectors[batch.items] = batch.vectors
            if extra is not None and batch.query_views is not None:
                extra[batch.items] = batch.query_views
            ok[batch.items] = True
            failures.extend(f for _, f in batch.failures)
            advance(len(batch.items) + len(batch.failures))
    return vectors, extra, ok, failures


def pca_whiten(vectors: np.ndarray, dims: int) -> np.ndarray:
    """PCA-whitening learned from the collection itself (no labels), then L2-normalised."""
    from deepvision.store.faiss_index import load_faiss

    faiss = load_faiss()
    dims = min(dims, vectors.shape[1], len(vectors))
    pca = faiss.PCAMatrix(vectors.shape[1], dims, -0.5)  # eigen_power -0.5: whitening
    pca.train(np.ascontiguousarray(vectors, np.float32))
    out = pca.apply(np.ascontiguousarray(vectors, np.float32))
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def alpha_query_expansion(vectors: np.ndarray, n: int, alpha: float = QE_ALPHA) -> np.ndarray:
    """alpha-QE over the set itself: each query's top n + 1 (itself first, similarity 1, then
    its n nearest others), expanded by ranking.expand_queries. The database stays."""
    sims = vectors @ vectors.T
    top = np.argsort(-sims, axis=1)[:, : n + 1]
    scores = np.take_along_axis(sims, top, 1)
    return expand_queries(np.zeros_like(vectors), scores, vectors[top], alpha)


def score_rankings(vectors: np.ndarray, groups: Sequence[str | None], paths: Sequence[str],
                   ks: Sequence[int], queries: np.ndarray | None = None,
                   database: np.ndarray | None = None,
                   turned: np.ndarray | None = None,
                   verify_top: int = 0) -> list[QueryScore]:
    """Rank the database for each vector that has group-mates in it (cosine, exact) and score
    the lists.

    vectors are L2-normalised; groups[i] is None for a distractor. The query's own entry is
    removed by id, not by position: an exact duplicate may tie with it for rank 1. `queries`
    (row-aligned with vectors) replaces the query side, e.g. after query expansion. `database`
    (a mask, None: all) is what is searched; an original (in it) queries only when it is not.
    `turned` (n, V, d): the queries' other views (turned by 90/180/270°, zoomed); each item
    then scores its best view, as `search` ranks them (ranking.merge_views). verify_top: the
    first candidates of each list re-ranked by local-feature verification, as `search
    --verify` does (match.verifier.FileEvidence; each image's evidence computed once).
    """
    queries = vectors if queries is None else queries
    from deepvision.store.faiss_index import VectorIndex

    labels = _labels(groups)
    in_db = np.ones(len(labels), bool) if database is None else np.asarray(database, bool)
    grouped = labels >= 0
    counted = grouped & in_db
    per_label = np.bincount(labels[counted], minlength=int(labels.max()) + 1 if len(labels)
                            else 0)
    relevant = np.zeros(len(labels), np.int64)
    relevant[grouped] = per_label[labels[grouped]] - in_db[grouped]
    originals = np.array([edit_name(p) == ORIGINAL_EDIT for p in paths], bool)
    asks = np.ones(len(labels), bool) if database is None else ~originals
    query_ids = np.flatnonzero((relevant > 0) & asks)
    if not len(query_ids):
        return []
    db_ids = np.flatnonzero(in_db)
    n = len(db_ids)
    evidence = None
    if verify_top:
        from deepvision.match.verifier import FileEvidence

        evidence = FileEvidence()
    index = VectorIndex.new(vectors.shape[1])
    index.add(db_ids.astype(np.int64), vectors[db_ids])
    out: list[QueryScore] = []
    views = 1 if turned is None else 1 + turned.shape[1]
    for block in _blocks(query_ids, max(1, _BLOCK_PAIRS // (n * views))):
        if turned is None:
            scores, ids = index.search(queries[block], n)
        else:
            flat = np.concatenate([queries[block][:, None], turned[block]], axis=1)
            scores, ids = index.search(flat.reshape(-1, flat.shape[-1]), n)
            scores, ids = merge_views(scores.reshape(len(block), views, n),
                                      ids.reshape(len(block), views, n), n)
        for qi, row_scores, row_ids in zip(block, scores, ids, strict=True):
            # FAISS pads with -1 what it could not rank (NaN scores): never index labels[-1].
            keep = (row_ids != qi) & (row_ids >= 0)
            ranked, ranked_scores = row_ids[keep], row_scores[keep]
            if evidence is not None:
                order = evidence.reorder(paths[qi], [paths[int(i)] for i in ranked[:verify_top]],
                                         ranked_scores[:verify_top], verify_top)
                ranked[:len(order)] = ranked[:len(order)][order]
                ranked_scores[:len(order)] = ranked_scores[:len(order)][order]
            hits = labels[ranked] == labels[qi]
            out.append(QueryScore(
                path=paths[qi], group=str(groups[qi]), edit=edit_name(paths[qi]),
                relevant=int(relevant[qi]), ap=average_precision(hits, int(relevant[qi])),
                recall={k: recall_at_k(hits, k) for k in ks},
                precision={k: precision_at_k(hits, k) for k in ks},
                first_hit=int(np.argmax(hits)) + 1 if hits.any() else None,
                top_path=paths[int(ranked[0])] if len(ranked) else "",
                top_score=float(ranked_scores[0]) if len(ranked) else float("nan")))
    return out


def _labels(groups: Sequence[str | None]) -> np.ndarray:
    """Group names -> small ints; -1 for distractors."""
    codes: dict[str, int] = {}
    return np.array([-1 if g is None else codes.setdefault(g, len(codes)) for g in groups],
                    dtype=np.int64)


def _blocks(ids: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def summarise(name: str, queries: Sequence[QueryScore], ks: Sequence[int]) -> Scores:
    """Means over the queries; zeros for none (a set with nothing scorable)."""
    def mean(values: Iterable[float]) -> float:
        arr = np.fromiter(values, np.float64)
        return float(arr.mean()) if len(arr) else 0.0

    return Scores(name, len(queries), mean(q.ap for q in queries),
                  {k: mean(q.recall[k] for q in queries) for k in ks},
                  {k: mean(q.precision[k] for q in queries) for k in ks})


def _grouped(queries: Sequence[QueryScore],
             key: Callable[[QueryScore], str | None]) -> list[tuple[str | None, list[QueryScore]]]:
    buckets: dict[str | None, list[QueryScore]] = defaultdict(list)
    for q in queries:
        buckets[key(q)].append(q)
    return sorted(buckets.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
