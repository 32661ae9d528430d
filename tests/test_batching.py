"""The live service's machinery without HTTP: dynamic batching and background jobs."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deepvision.errors import IndexLockedError, UsageError
from deepvision.pipeline.embedder import EmbedOptions
from deepvision.services.batching import QueryBatcher
from deepvision.services.embedding import index_embedder
from deepvision.services.jobs import JobRunner
from deepvision.services.search import RankOptions, Searcher
from deepvision.store.indexstore import IndexStore


@pytest.fixture
def searcher(sync, photos: Path, tmp_path: Path) -> Searcher:
    sync(photos, tmp_path / "idx")
    store = IndexStore(tmp_path / "idx")
    embedder = index_embedder(store.read_manifest(), None, EmbedOptions(device="cpu", workers=0))
    return Searcher(store, embedder)


def test_queries_arriving_together_share_batches_and_get_their_own_answers(searcher, photos):
    files = sorted(photos.iterdir())
    crops = [searcher.embedder.prepare(p.read_bytes(), p.name) for p in files]
    batcher = QueryBatcher(searcher, max_batch=8, max_wait=0.05)
    try:
        with ThreadPoolExecutor(12) as pool:
            futures = list(pool.map(
                lambda i: batcher.submit(files[i].name, crops[i], RankOptions(top_k=1 + i % 3)),
                range(len(files))))
            answers = [f.result(timeout=60) for f in futures]
    finally:
        batcher.close()
    for i, (path, matches) in enumerate(zip(files, answers, strict=True)):
        assert len(matches) == 1 + i % 3 and matches[0].path == str(path)  # itself first
        assert [m.rank for m in matches] == list(range(1, len(matches) + 1))
    assert batcher.queries == len(files) and batcher.batches < len(files)
    # The same ranking as one direct call over all of them.
    embedded = searcher.embedder.embed_crops([p.name for p in files], crops,
                                             searcher.views(RankOptions(3)))
    direct, _ = searcher.rank(embedded.vectors, RankOptions(3), embedded.query_views)
    assert [[m.path for m in d[:1 + i % 3]] for i, d in enumerate(direct)] == \
        [[m.path for m in a] for a in answers]


def test_min_score_is_applied_per_query(searcher, photos):
    path = sorted(photos.iterdir())[0]
    crop = searcher.embedder.prepare(path.read_bytes(), path.name)
    batcher = QueryBatcher(searcher, max_batch=4)
    try:
        strict = batcher.submit("a", crop, RankOptions(top_k=10, min_score=0.999))
        loose = batcher.submit("b", crop, RankOptions(top_k=10))
        assert [m.path for m in strict.result(timeout=60)] == [str(path)]
        assert len(loose.result(timeout=60)) == 10
    finally:
        batcher.close()


def test_a_failing_search_answers_every_waiter(searcher, photos):
    path = sorted(photos.iterdir())[0]
    crop = searcher.embedder.prepare(path.read_bytes(), path.name)

    class GoneAway(Searcher):
        def rank(self, vectors, opts, extra=None):
            raise UsageError("the index went away")

    batcher = QueryBatcher(GoneAway(searcher.store, searcher.embedder), max_batch=4,
                           max_wait=0.05)
    try:
        futures = [batcher.submit(str(i), crop, RankOptions()) for i in range(3)]
        for f in futures:
            with pytest.raises(UsageError, match="went away"):
                f.result(timeout=60)
    finally:
        batcher.close()


def test_jobs_run_one_at_a_time_and_report_progress_and_cancellation():
    release = threading.Event()

    def slow(rep):
        with rep.progress(5, "embedding") as advance:
            for _ in range(5):
                release.wait(10)
                advance(1)
        return {"embedded": 5}

    runner = JobRunner(probe_lock=lambda: False)
    job = runner.start(slow)
    with pytest.raises(IndexLockedError):
        runner.start(slow)
    release.set()
    _wait(lambda: job.state != "running")
    assert (job.state, job.done, job.total, job.summary) == ("done", 5, 5, {"embedded": 5})

    release.clear()
    second = runner.start(slow)
    runner.stop(timeout=10)  # cancels between two images
    release.set()
    _wait(lambda: second.state != "running")
    assert second.state == "cancelled" and second.done == 0


def test_a_job_is_refused_while_another_process_holds_the_lock():
    runner = JobRunner(probe_lock=lambda: True)
    with pytest.raises(IndexLockedError, match="holds the index's lock"):
        runner.start(lambda rep: {})
    assert runner.jobs == {}


def test_a_failed_job_keeps_its_error():
    runner = JobRunner(probe_lock=lambda: False)

    def fails(rep):
        raise UsageError("recorded folder /mnt/photos is missing")

    job = runner.start(fails)
    _wait(lambda: job.state != "running")
    assert job.state == "failed" and "missing" in (job.error or "")


def _wait(done, seconds: float = 30) -> None:
    end = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)
