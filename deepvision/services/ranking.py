"""Query-side ranking helpers shared by `search` and `eval`."""

from __future__ import annotations

import numpy as np

QE_ALPHA = 3.0


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
