"""What `serve`'s routes share: the service's configuration and lifetime state, and the
error every route raises (turned into the JSON error document by app.error_handlers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.responses import JSONResponse

from deepvision.errors import DeepVisionError
from deepvision.server.budget import PixelBudget
from deepvision.server.files import ThumbCache
from deepvision.services.batching import QueryBatcher
from deepvision.services.info import describe
from deepvision.services.jobs import JobRunner
from deepvision.services.review_session import ReviewSession
from deepvision.services.search import Searcher

# Error reasons -> HTTP status (the rest are 422: the request is the client's problem, not ours).
STATUS = {"too-large-upload": 413, "bad-request": 400, "forbidden-path": 403, "not-found": 404,
          "unauthorized": 401, "locked": 409, "bad-host": 400, "busy": 503}
BINARY = {"schema": {"type": "string", "format": "binary"}}
MAX_ID = 2**63 - 1  # sqlite's largest rowid: a larger id is a 422, never an OverflowError


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    allow_paths: tuple[Path, ...] = ()
    cors: tuple[str, ...] = ()
    max_upload_bytes: int = 50 << 20
    loopback: bool = True  # bound to a loopback address: the Host header is checked


@dataclass
class Service:
    """What the app holds for its lifetime: the searcher (model + index), batcher, jobs, the
    thumbnail cache and the decode budget every request shares."""

    searcher: Searcher
    batcher: QueryBatcher
    jobs: JobRunner
    index_job: Callable[[Any], dict[str, Any]]  # a JobTarget: runs `index` on the recorded folders
    config: ServeConfig
    on_ready: Callable[[], None] = lambda: None
    thumbs: ThumbCache = field(default_factory=ThumbCache)
    # run.decode_budget sets it from --max-megapixels; this default is for the same 120 MP.
    budget: PixelBudget = field(default_factory=lambda: PixelBudget(120_000_000))
    # The duplicate review (/review, /api/dupes...): groups cached per catalog generation.
    review: ReviewSession | None = None  # None: one over the searcher's index, on first use

    def review_session(self) -> ReviewSession:
        if self.review is None:
            self.review = ReviewSession(self.store)
        return self.review

    @property
    def store(self) -> Any:
        return self.searcher.store


class ApiError(Exception):
    def __init__(self, reason: str, message: str, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.headers = reason, message, headers
        self.status = status or STATUS.get(reason, 422)


def error_response(reason: str, message: str, status: int,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason, "message": message}, status_code=status,
                        headers=headers)


def index_stats(service: Service) -> dict[str, Any]:
    try:
        return describe(service.store)
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None
