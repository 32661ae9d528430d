"""`eval --whiten` and `eval --qe`: experiments on the set's own vectors, learned from the set
itself (no labels, nothing stored), to see whether an option is worth building into the index.
"""

from __future__ import annotations

import numpy as np

from deepvision.services.ranking import QE_ALPHA, expand_queries


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
