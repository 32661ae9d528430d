"""Background `index` runs for a live service: one at a time, with progress and a summary.

A job is the same crash-safe IndexRun that cron starts, on a thread of its own: it takes the
index's writer lock, commits in chunks, and a search in flight keeps answering from the last
committed generation. Stopping the service cancels the job between two images; what was
committed stays, and the next run resumes.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from deepvision.errors import DeepVisionError, IndexLockedError
from deepvision.progress import Advance


class JobCancelledError(Exception):
    """Raised inside a job's run when the service stops."""


@dataclass
class Job:
    id: str
    state: str = "running"  # running | done | failed | cancelled
    done: int = 0
    total: int = 0
    summary: dict[str, Any] | None = None  # the `index --json` document, at the end
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"job": self.id, "state": self.state, "done": self.done, "total": self.total,
                "summary": self.summary, "error": self.error}


@dataclass
class _JobReporter:
    """The Reporter a job's run reports through: counts progress, stops when cancelled."""

    job: Job
    cancel: threading.Event
    messages: list[str] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.messages.append(message)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Advance]:
        self.job.total += total

        def advance(n: int, frames: int = 0) -> None:
            if self.cancel.is_set():
                raise JobCancelledError("the service is stopping")
            self.job.done += n

        yield advance


# What a job runs: given a Reporter, an index run that returns its `index --json` document.
JobTarget = Callable[[_JobReporter], dict[str, Any]]


class JobRunner:
    """Starts jobs (one at a time) and remembers the last few."""

    KEEP = 20

    def __init__(self, probe_lock: Callable[[], bool]) -> None:
        self.probe_lock = probe_lock  # True when another process holds the index's lock
        self.jobs: dict[str, Job] = {}
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def start(self, target: JobTarget) -> Job:
        """Raises IndexLockedError when a job of ours runs or another process holds the lock."""
        with self._guard:
            if self._thread is not None and self._thread.is_alive():
                raise IndexLockedError("an index job of this service is running")
            if self.probe_lock():
                raise IndexLockedError("another index/rebuild run holds the index's lock")
            job = Job(secrets.token_hex(6))
            self.jobs[job.id] = job
            for old in list(self.jobs)[:-self.KEEP]:
                del self.jobs[old]
            self._thread = threading.Thread(target=self._run, args=(job, target),
                                            name=f"deepvision-job-{job.id}", daemon=True)
            self._thread.start()
            return job

    def _run(self, job: Job, target: JobTarget) -> None:
        try:
            job.summary = target(_JobReporter(job, self._cancel))
            job.state = "done"
        except JobCancelledError as exc:
            job.state, job.error = "cancelled", str(exc)
        except DeepVisionError as exc:
            job.state, job.error = "failed", str(exc)
        except Exception as exc:  # reported in the job, never lost in a thread
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel a running job between two images and wait for it to unwind."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
