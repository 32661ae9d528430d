"""The metrics of an eval: each grouped image ranks all the others, and its list is scored.

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
that every other query searches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from deepvision.services.eval_set import ORIGINAL_EDIT, edit_name
from deepvision.services.ranking import merge_views

# Queries per FAISS search call: a full ranking is N entries per query, so cap the block at
# about 16 M (id, score) pairs (~200 MB) whatever the size of the set.
_BLOCK_PAIRS = 1 << 24


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


def grouped(queries: Sequence[QueryScore],
            key: Callable[[QueryScore], str | None]) -> list[tuple[str | None, list[QueryScore]]]:
    """The queries by `key` (their group, their edit), sorted by it, None last."""
    buckets: dict[str | None, list[QueryScore]] = defaultdict(list)
    for q in queries:
        buckets[key(q)].append(q)
    return sorted(buckets.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
