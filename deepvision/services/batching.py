"""Dynamic batching for a live service: queries that arrive together share one network pass
and one FAISS search.

Request threads decode their uploads themselves (`Embedder.prepare`) and hand the crop to the
batcher; one worker thread takes the first waiting query, gathers more for up to `max_wait`
seconds or `max_batch` queries, embeds them in one batch and ranks them against one snapshot
of the index (so every query of a batch sees the same generation, whole).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from deepvision.services.search import RankOptions, Searcher
from deepvision.types import Failure, Match

if TYPE_CHECKING:
    from deepvision.pipeline.transforms import Crop

MAX_WAIT = 0.005  # seconds a batch waits for company: small next to a ~30 ms network pass


@dataclass
class _Query:
    name: str
    crop: Crop
    opts: RankOptions
    done: Future = field(default_factory=Future)


class QueryBatcher:
    """Queries in, ranked matches (or a Failure) out, through one worker thread."""

    def __init__(self, searcher: Searcher, max_batch: int, max_wait: float = MAX_WAIT) -> None:
        self.searcher = searcher
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait
        self._queue: queue.Queue[_Query | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="deepvision-batcher", daemon=True)
        self._thread.start()
        self.batches = 0  # for the stats: how many network passes served how many queries
        self.queries = 0

    def submit(self, name: str, crop: Crop, opts: RankOptions) -> Future:
        """A Future of list[Match], or of a Failure the network reported for this image."""
        query = _Query(name, crop, opts)
        self._queue.put(query)
        return query.done

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first, *self._gather()]
            asked = [q for q in batch if q is not None]
            if batch[-1] is None:  # closing: answer what was asked, then stop
                self._answer(asked)
                return
            self._answer(asked)

    def _gather(self) -> list[_Query | None]:
        out: list[_Query | None] = []
        deadline = time.monotonic() + self.max_wait
        while len(out) < self.max_batch - 1:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(item)
            if item is None:
                break
        return out

    def _answer(self, batch: list[_Query]) -> None:
        live = [q for q in batch if q.done.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._search(live)
        except Exception as exc:  # a query must never hang: every waiter hears about it
            for q in live:
                q.done.set_exception(exc)
            return
        for q, result in zip(live, results, strict=True):
            q.done.set_result(result)

    def _search(self, batch: list[_Query]) -> list[list[Match] | Failure]:
        # A batch is embedded one way: with the views any of its queries wants (the serve API
        # never mixes: every request uses the index's own setting).
        asked = [self.searcher.resolved(q.opts) for q in batch]
        turns, zoom = any(o.turns for o in asked), any(o.zoom for o in asked)
        views = self.searcher.views(replace(batch[0].opts, turns=turns, zoom=zoom))
        embedded = self.searcher.embedder.embed_crops([q.name for q in batch],
                                                      [q.crop for q in batch], views)
        results: list[list[Match] | Failure] = [[] for _ in batch]
        for pos, failure in embedded.failures:
            results[pos] = failure
        # One ranking per filter in the batch (most batches have one: none): a filter works
        # inside the FAISS search, so queries with other filters cannot share it.
        rows_of: dict[object, list[int]] = {}
        for row, pos in enumerate(embedded.items):
            rows_of.setdefault(batch[pos].opts.filter, []).append(row)
        for rows in rows_of.values():
            group = [batch[embedded.items[r]] for r in rows]
            widest = replace(group[0].opts, min_score=None, turns=turns, zoom=zoom, top_k=max(
                self.searcher.widened(q.opts).top_k for q in group))
            extra = None if embedded.query_views is None else embedded.query_views[rows]
            ranked, _ = self.searcher.rank(embedded.vectors[rows], widest, extra)
            for row, matches in zip(rows, ranked, strict=True):
                pos = embedded.items[row]
                # verification (on the request's thread) chooses from the widened list
                results[pos] = _cut(matches, self.searcher.widened(batch[pos].opts))
        self.batches += 1
        self.queries += len(batch)
        return results


def _cut(matches: list[Match], opts: RankOptions) -> list[Match]:
    """One query's share of a batch ranked for the widest k: its own k and min_score."""
    kept = [m for m in matches if opts.min_score is None or m.score >= opts.min_score]
    return kept[:opts.top_k]
