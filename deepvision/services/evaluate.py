"""The eval stage: how well does a model find the other copies of a picture among distractors?

An evaluation set (services.eval_set) is groups of images that show the same picture (an
original and its edited copies, say) plus distractors that belong to no group. Every image is
embedded once; each grouped image then searches all the others, and its ranked list says how
early its group-mates come (services.eval_metrics: AP, recall@k, precision@k). Nothing is
written anywhere: the vectors live in memory only.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepvision.errors import NoImagesError, UsageError
from deepvision.models.descriptor import QUERY_ZOOM, Descriptor, QueryViews
from deepvision.models.registry import AUTO, default_descriptor, resolve
from deepvision.pipeline.embedder import Embedder, EmbedOptions, report_notes
from deepvision.progress import Reporter
from deepvision.services.eval_experiments import alpha_query_expansion, pca_whiten
from deepvision.services.eval_metrics import QueryScore, Scores, grouped, score_rankings, summarise
from deepvision.services.eval_set import (
    NATURAL_EDIT,
    ORIGINAL_EDIT,
    EvalItem,
    EvalSet,
    load_evalset,
)
from deepvision.types import Failure

DEFAULT_KS = (1, 5, 10)


def parse_ks(text: str) -> tuple[int, ...]:
    """'1,5,10' -> (1, 5, 10): sorted, unique, each >= 1."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise UsageError(f"--ks {text!r}: give cut-offs >= 1 separated by commas, e.g. 1,5,10")
    return tuple(ks)


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
        by_group=[summarise(g, qs, req.ks) for g, qs in grouped(queries, lambda q: q.group)
                  if g is not None],  # every query has a group; the check is for the types
        by_edit=[summarise(e, qs, req.ks) for e, qs in grouped(queries, lambda q: q.edit)
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
