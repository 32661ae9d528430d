"""FAISS structure: add / remove / search / save / load by integer id. Knows ids, never paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

FACTORY = "IDMap2,Flat"  # exact inner product; ids are the catalog's vector ids


class VectorIndex:
    """Inner-product index over L2-normalised vectors, so scores are cosine similarities."""

    def __init__(self, index: Any) -> None:
        self._index = index

    @classmethod
    def new(cls, dim: int) -> VectorIndex:
        import faiss

        return cls(faiss.index_factory(dim, FACTORY, faiss.METRIC_INNER_PRODUCT))

    @classmethod
    def from_blocks(cls, dim: int, blocks: Iterable[tuple[np.ndarray, np.ndarray]]) -> VectorIndex:
        """Build from (ids, vectors) blocks, e.g. streamed out of the catalog."""
        index = cls.new(dim)
        for ids, vectors in blocks:
            index.add(ids, vectors)
        return index

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                                     np.ascontiguousarray(ids, np.int64))

    def remove(self, ids: Iterable[int]) -> None:
        arr = np.fromiter(ids, np.int64)
        if len(arr):
            self._index.remove_ids(arr)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query; k is capped at the index size, so no -1 padding."""
        k = min(k, len(self))
        if k <= 0:
            n = len(queries)
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        scores, ids = self._index.search(np.ascontiguousarray(queries, np.float32), k)
        return scores, ids

    def range_search(self, queries: np.ndarray,
                     threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All entries with score > threshold: (lims, scores, ids), row i in lims[i]:lims[i+1]."""
        return self._index.range_search(np.ascontiguousarray(queries, np.float32), threshold)

    def save(self, path: Path) -> None:
        """Atomic: a temp file in the same folder, fsync, then os.replace."""
        import faiss

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        import faiss

        return cls(faiss.read_index(str(path)))
