"""Synthetic embeddings for the FAISS tests: clustered unit vectors (like image embeddings,
unlike uniform noise, on which every ANN structure looks bad)."""

from __future__ import annotations

import numpy as np

DIM = 64


def clustered(n: int, seed: int, dim: int = DIM, centers: int = 50) -> np.ndarray:
    """n unit vectors around `centers` random centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
