"""Query-side ranking helpers shared by `search` and `eval`."""

from __future__ import annotations

import numpy as np

QE_ALPHA = 3.0


def merge_views(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One ranked list per query from the lists of its views (the query turned, say): each id
    scores its best view, the k best ids are kept. Exact for the top k as long as every view's
    list holds its own top k: an id missing from a view's list scores there below that list's
    k-th, whose id then outranks it anyway.

    scores, ids: (q, v, n), FAISS-style (id -1 = nothing). Returns (q, k) arrays, -1 / -inf
    padded where fewer than k distinct ids were found."""
    q = scores.shape[0]
    out_s = np.full((q, k), -np.inf, np.float32)
    out_i = np.full((q, k), -1, np.int64)
    for row in range(q):
        flat_i, flat_s = ids[row].ravel(), scores[row].ravel()
        valid = flat_i >= 0
        flat_i, flat_s = flat_i[valid], flat_s[valid]
        order = np.lexsort((-flat_s, flat_i))  # by id, best score first within an id
        flat_i, flat_s = flat_i[order], flat_s[order]
        first = np.ones(len(flat_i), bool)
        first[1:] = flat_i[1:] != flat_i[:-1]
        best_i, best_s = flat_i[first], flat_s[first]
        top = np.argsort(-best_s, kind="stable")[:k]
        out_s[row, :len(top)], out_i[row, :len(top)] = best_s[top], best_i[top]
    return out_s, out_i


def expand_queries(queries: np.ndarray, scores: np.ndarray, neighbours: np.ndarray,
                   alpha: float = QE_ALPHA) -> np.ndarray:
    """alpha query expansion (Radenovic et al.): each query plus its neighbours weighted by
    similarity^alpha, re-normalised. A close copy pulls the query towards the indexed version;
    an unrelated neighbour (similarity 0.3 -> weight 0.027) barely moves it.

    queries (q, d); scores (q, n) similarities of the neighbours (0 for a missing one);
    neighbours (q, n, d) their vectors."""
    weights = np.clip(scores, 0, None) ** alpha
    out = queries + np.einsum("qn,qnd->qd", weights.astype(np.float32), neighbours)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
