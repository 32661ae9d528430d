"""An on-disk IVF-PQ build's shard tasks on the `--ray` cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from deepvision.services.distributed.cluster import connect, disconnect, import_ray


class ClusterShards:
    """An on-disk IVF-PQ build's shard tasks (store.ondisk) on the --ray cluster, joined the same
    way as for embedding (checked, quiet) and left when the shards are done."""

    def __init__(self, address: str) -> None:
        self.address = address

    def map(self, fn: Callable[..., np.ndarray], shared: np.ndarray,
            jobs: Iterable[tuple[Any, ...]]) -> Iterator[np.ndarray]:
        from deepvision.store.ondisk import RayRunner

        ray = import_ray()
        connect(self.address, ray)
        try:
            yield from RayRunner(self.address).map(fn, shared, jobs)
        finally:
            disconnect(ray)
