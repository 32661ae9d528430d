"""`deepvision serve`: the HTTP way in. Like cli.py, it only turns requests into calls on the
services (a Searcher behind a QueryBatcher, index jobs, info) and results into responses.

The model and the index are loaded once; each search sees the index as last committed, so a
`deepvision index` run from cron (or a `rebuild` swap) shows within the next query. Every route
declares its response model and its errors, and auth is a dependency: /openapi.json is the
contract, and tests/test_serve_contract.py holds the server to it with schemathesis.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import swagger_ui  # imported here: a missing serve extra is the CLI's usage error, not a crash
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from deepvision.errors import DeepVisionError, IndexLockedError, UsageError
from deepvision.filters import Filter, build_filter
from deepvision.match.features import WORK_SIDE, at_most
from deepvision.output import review_page, web
from deepvision.output.render import search_document
from deepvision.pipeline.decode import DecodeError, load_rgb, max_file_bytes, read_file
from deepvision.progress import Silent
from deepvision.server import security
from deepvision.server.budget import BusyError, PixelBudget, decode_cost
from deepvision.server.files import THUMB, Opened, RefusedError, ThumbCache, jpeg, open_indexed
from deepvision.server.files import read_opened as read_opened_file
from deepvision.server.models import (
    HealthDoc,
    InfoDoc,
    JobDoc,
    SearchDoc,
    errors,
)
from deepvision.server.review import review_routes
from deepvision.services.batching import QueryBatcher
from deepvision.services.info import describe
from deepvision.services.jobs import JobRunner
from deepvision.services.review import ReviewSession
from deepvision.services.search import (
    QueryResult,
    RankOptions,
    Searcher,
    SearchResult,
    check_filter,
    in_order,
    no_text_encoder,
)
from deepvision.types import Failure, Match

STATIC = Path(__file__).resolve().parent.parent / "output" / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
MAX_TEXT = web.MAX_TEXT  # characters of a text query (CLIP's tokenizer keeps 77 tokens)
MAX_ID = 2**63 - 1  # sqlite's largest rowid: a larger id is a 422, never an OverflowError
DRAIN_BYTES = 64 << 20  # read past the cap before a 413, so the client hears the answer
DRAIN_SECONDS = 10.0
# Decoded-image errors -> HTTP status: the upload is the client's problem (422), not ours.
STATUS = {"too-large-upload": 413, "bad-request": 400, "forbidden-path": 403, "not-found": 404,
          "unauthorized": 401, "locked": 409, "bad-host": 400, "busy": 503}
BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY = {"requestBody": {"required": True, "description": "the query image", "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
        "image": {"type": "string", "format": "binary"}}}},
    "image/jpeg": BINARY, "image/png": BINARY, "image/webp": BINARY,
    "application/octet-stream": BINARY}}}
# What a search answer leads to (OpenAPI links: a client, or schemathesis, follows them).
_FIRST_ID = "$response.body#/queries/0/matches/0/id"
SEARCH_LINKS = {"links": {
    "image": {"operationId": "image", "parameters": {"file_id": _FIRST_ID}},
    "thumbnail": {"operationId": "thumbnail", "parameters": {"file_id": _FIRST_ID}}}}
log = logging.getLogger("uvicorn.error")


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


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.on_ready()
        yield
        service.jobs.stop()
        service.batcher.close()

    app = FastAPI(title="deepvision", summary="Reverse image search over a deepvision index",
                  version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    error_handlers(app)
    _middleware(app, service.config)
    auth = _auth(service.config)
    app.include_router(_api_routes(service), dependencies=auth)
    app.include_router(review_routes(service.review_session, ApiError), dependencies=auth,
                       responses=errors(401) if service.config.token else {})
    app.include_router(_open_routes(service))
    app.include_router(_page_routes(service, auth))
    app.mount("/static/swagger", StaticFiles(directory=_swagger_assets()), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# ---- errors, the Host check and the token ------------------------------------------------------


def error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.reason, exc.message, exc.status, exc.headers)

    @app.exception_handler(RefusedError)
    async def refused(_: Request, exc: RefusedError) -> JSONResponse:
        return error_response(exc.reason, exc.message, exc.status)

    @app.exception_handler(BusyError)
    async def busy(_: Request, exc: BusyError) -> JSONResponse:
        return error_response("busy", str(exc), 503, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response("bad-request", f"{where}: {first.get('msg', 'invalid')}", 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = "not-found" if exc.status_code == 404 else "bad-request"
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the first route's methods only
            headers["Allow"] = ", ".join(_methods(request))
        return error_response(reason, message, exc.status_code, headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, _: ClientDisconnect) -> Response:
        # The client closed the connection mid-upload: nothing to answer, nothing to debug.
        log.info("client went away during %s %s", request.method, request.url.path)
        return Response(status_code=400)


def _methods(request: Request) -> list[str]:
    """Every method some route answers at this path (GET /api/search and POST /api/search are
    two routes)."""
    from starlette.routing import Match as RouteMatch

    found: set[str] = set()
    for route in request.app.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(request.scope)[0] != RouteMatch.NONE:
            found |= set(methods)
    return sorted(found)


def _middleware(app: FastAPI, config: ServeConfig) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        header = request.headers.get("host") or ""
        if config.loopback and not security.is_local_host(security.host_of(header)):
            # DNS rebinding: a page elsewhere that resolves its name to 127.0.0.1.
            return error_response("bad-host", f"Host {header!r} is not this server's", 400)
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])


def _auth(config: ServeConfig) -> list[Any]:
    """The token check as a dependency (none without --token): header or cookie, never the
    query string, which ends up in logs and browser history."""
    token = config.token
    if not token:
        return []

    async def require_token(
            credentials: HTTPAuthorizationCredentials | None = Depends(security.bearer),
            from_cookie: str | None = Depends(security.cookie)) -> None:
        if not security.token_matches(security.presented(credentials, from_cookie), token):
            raise ApiError("unauthorized", "pass the token: Authorization: Bearer T", 401,
                           {"WWW-Authenticate": "Bearer"})

    return [Depends(require_token)]


# ---- the JSON API --------------------------------------------------------------------------------


def _open_routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/api/health", response_model=HealthDoc, responses=errors(503),
                operation_id="health")
    def health() -> dict[str, Any]:
        """For probes, open without the token: the status and the index's generation only."""
        try:
            with service.store.open_read() as snap:
                return {"status": "ok", "generation": snap.catalog.generation}
        except DeepVisionError as exc:
            raise ApiError("index-unavailable", str(exc), 503) from None

    return router


def _api_routes(service: Service) -> APIRouter:
    router = APIRouter(responses=errors(401) if service.config.token else {})
    _search_routes(router, service)
    _index_routes(router, service)
    _image_routes(router, service)
    return router


@dataclass(frozen=True)
class Narrowing:
    """The filter and order a search request asks for (its query parameters)."""

    filter: Filter
    sort: str


def narrowing(
        after: str | None = Query(None, max_length=40, description="taken on or after (DATE)"),
        before: str | None = Query(None, max_length=40, description="taken before (DATE)"),
        camera: str | None = Query(None, min_length=1, max_length=200,
                                   description="part of the camera's make or model"),
        folder: list[str] = Query([], description="inside this folder (repeatable)"),
        kind: Literal["image", "video"] | None = Query(None),
        min_width: int | None = Query(None, ge=1, le=1_000_000),
        min_height: int | None = Query(None, ge=1, le=1_000_000),
        near: str | None = Query(None, max_length=60, description="LAT,LON"),
        radius: float | None = Query(None, gt=0, le=20015, description="km around --near"),
        sort: Literal["score", "date"] = Query("score")) -> Narrowing:
    """The filter parameters, checked as the CLI checks its flags (422 `bad-filter`)."""
    try:
        flt = build_filter(after=after, before=before, camera=camera, folders=folder, kind=kind,
                           min_width=min_width, min_height=min_height, near=near,
                           radius_km=radius)
    except UsageError as exc:
        raise ApiError("bad-filter", str(exc), 422) from None
    return Narrowing(flt, sort)


def _options(service: Service, k: int, min_score: float | None, n: Narrowing) -> RankOptions:
    if n.filter.needs_metadata:
        try:
            check_filter(service.store, n.filter)
        except UsageError as exc:
            raise ApiError("bad-filter", str(exc), 422) from None
    return RankOptions(k, min_score, filter=n.filter, sort=n.sort)


def _search_routes(router: APIRouter, service: Service) -> None:
    @router.get("/api/stats", response_model=InfoDoc, responses=errors(503), operation_id="stats")
    def stats() -> dict[str, Any]:
        """What `deepvision info --json` prints."""
        return _stats(service)

    @router.post("/api/search", response_model=SearchDoc, response_model_exclude_unset=True,
                 responses={200: SEARCH_LINKS, **errors(400, 413, 422, 503)},
                 openapi_extra=UPLOAD_BODY, operation_id="search_upload")
    async def search_upload(request: Request, k: int = Query(10, ge=1, le=1000),
                            min_score: float | None = Query(None, ge=-1, le=1),
                            narrow: Narrowing = Depends(narrowing)) -> dict[str, Any]:
        """Search by an uploaded image: multipart field `image`, or a raw image body;
        the filters narrow the search inside the index (as `search --after ...`)."""
        opts = await asyncio.to_thread(_options, service, k, min_score, narrow)
        name, data = await _upload(request, service.config.max_upload_bytes)
        return await _search(service, name, data, opts)

    @router.get("/api/search", response_model=SearchDoc, response_model_exclude_unset=True,
                responses={200: SEARCH_LINKS, **errors(403, 404, 422, 503)},
                operation_id="search")
    async def search_get(
            path: str | None = Query(None, min_length=1, max_length=4096, pattern=r"^[^\x00]+$",
                                     description="an image inside a --allow-path folder"),
            text: str | None = Query(None, min_length=1, max_length=MAX_TEXT,
                                     description="words (an index of a CLIP-family model)"),
            k: int = Query(10, ge=1, le=1000),
            min_score: float | None = Query(None, ge=-1, le=1),
            narrow: Narrowing = Depends(narrowing)) -> dict[str, Any]:
        """?path= (a server-side image inside --allow-path) or ?text= (CLIP-family index);
        the filters narrow the search inside the index (as `search --after ...`)."""
        opts = await asyncio.to_thread(_options, service, k, min_score, narrow)
        if path is not None and text is None:
            data = await asyncio.to_thread(_allowed_file, service.config.allow_paths, path)
            return await _search(service, path, data, opts)
        if text is not None and path is None:
            return await asyncio.to_thread(_search_text, service, text, opts)
        raise ApiError("bad-request", "pass one of ?path= (an image) or ?text= (words)", 422)


def _index_routes(router: APIRouter, service: Service) -> None:
    @router.post("/api/index", status_code=202, response_model=JobDoc, operation_id="start_index",
                 responses={202: {"links": {"job": {"operationId": "job", "parameters": {
                     "job_id": "$response.body#/job"}}}}, **errors(409)})
    def start_index() -> dict[str, Any]:
        """An incremental `index` of the recorded folders, in the background."""
        try:
            job = service.jobs.start(service.index_job)
        except IndexLockedError as exc:
            raise ApiError("locked", str(exc)) from None
        return job.to_json()

    @router.get("/api/jobs/{job_id}", response_model=JobDoc, responses=errors(404, 422),
                operation_id="job")
    def job(job_id: str = PathParam(max_length=64)) -> dict[str, Any]:
        """A job's progress, and at the end the `index --json` document."""
        found = service.jobs.jobs.get(job_id)
        if found is None:
            raise ApiError("not-found", f"no job {job_id!r}")
        return found.to_json()


def _image_routes(router: APIRouter, service: Service) -> None:
    file_id = PathParam(ge=1, le=MAX_ID, description="a match's `id`")

    @router.get("/api/images/{file_id}", response_class=Response,
                responses={200: {"content": {"image/*": BINARY, "video/*": BINARY,
                                             "application/octet-stream": BINARY},
                                 "description": "the indexed file (byte ranges accepted)"},
                           206: {"content": {"image/*": BINARY, "video/*": BINARY,
                                             "application/octet-stream": BINARY},
                                 "description": "the byte range asked for"},
                           **errors(404, 410, 422)}, operation_id="image")
    def image(file_id: int = file_id) -> Response:
        """An indexed file, as it was indexed: streamed, with byte ranges."""
        opened = _open_id(service, file_id)
        kind = mimetypes.guess_type(opened.path)[0] or "application/octet-stream"
        return _OpenedFileResponse(opened, media_type=kind)

    @router.get("/api/images/{file_id}/thumbnail", response_class=Response,
                responses={200: {"content": {"image/jpeg": BINARY},
                                 "description": f"a JPEG of at most {THUMB} px"},
                           **errors(404, 410, 422, 503)}, operation_id="thumbnail")
    def thumbnail(file_id: int = file_id) -> Response:
        """A JPEG of at most 256 px of an indexed file (a video: its first frame)."""
        opened = _open_id(service, file_id)
        try:
            data = _thumbnail(service, opened)
        finally:
            opened.close()
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})


class _OpenedFileResponse(FileResponse):
    """Streams the checked file (byte ranges too) and closes its descriptor however the
    response ends: sent, or cut off by a client that went away (a background task would not
    run then)."""

    def __init__(self, opened: Opened, media_type: str) -> None:
        super().__init__(opened.name, media_type=media_type, stat_result=opened.st)
        self.opened = opened

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.opened.close()


def _stats(service: Service) -> dict[str, Any]:
    try:
        return describe(service.store)
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None


async def _search(service: Service, name: str, data: bytes, opts: RankOptions) -> dict[str, Any]:
    """Decode on a worker thread (within the decode budget), then the batcher: the document
    `search --format json` prints for one query, with file ids."""
    if not data:
        raise ApiError("empty", "the upload is empty (0 bytes)")
    crop = await asyncio.to_thread(_decode, service, data, name)
    try:
        found = await asyncio.wrap_future(service.batcher.submit(name, crop, opts))
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None
    if isinstance(found, Failure):
        raise ApiError(str(found.reason), found.message)
    found = await asyncio.to_thread(_verified, service, data, name, found, opts)
    return _document(service, [QueryResult(name, None, found)])


def _verified(service: Service, data: bytes, name: str, found: list[Match],
              opts: RankOptions) -> list[Match]:
    """The batcher's candidates verified against the upload's pixels (match/), on this
    request's thread: the network batches stay free for other queries meanwhile."""
    searcher = service.searcher
    if not searcher.verifying(opts):
        return in_order(searcher.verified(None, found, opts), opts.sort)
    cost = decode_cost(data, WORK_SIDE)
    with service.budget.hold(cost):
        try:
            # shrunk while the budget holds: the full decode is freed before the heap's trim
            picture = at_most(np.asarray(load_rgb(name, data=data, draft_size=WORK_SIDE)))
        except DecodeError:  # it decoded for the network: unverified rather than failed
            picture = None
    return in_order(searcher.verified(picture, found, opts), opts.sort)


def _decode(service: Service, data: bytes, name: str) -> Any:
    embedder = service.searcher.embedder
    cost = decode_cost(data, embedder.model.preprocess.draft_size)
    try:
        with service.budget.hold(cost):
            return embedder.prepare(data, name)
    except DecodeError as exc:
        raise ApiError(str(exc.reason), exc.message) from None


def _search_text(service: Service, text: str, opts: RankOptions) -> dict[str, Any]:
    """A text query (on a worker thread: the text tower is small next to the image batcher's
    network, and runs beside it): the document `search --text --format json` prints."""
    embedder = service.searcher.embedder
    if not text.strip():
        raise ApiError("bad-request", "the text is empty: type the words to search for", 422)
    if not embedder.has_text:
        with service.store.open_read() as snap:
            manifest = snap.manifest
        raise ApiError("no-text-encoder", no_text_encoder(manifest, service.store))
    try:
        found = service.searcher.search_texts([text], opts, Silent())
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None
    return _document(service, found)


def _document(service: Service, found: list[QueryResult]) -> dict[str, Any]:
    result = SearchResult(os.path.abspath(service.store.dir),
                          service.searcher.embedder.model.spec.name, found)
    return search_document(result, with_ids=True)


async def _upload(request: Request, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of an upload: multipart field `image`, or a raw image/* body. Never
    more than `limit` bytes are read; a slow client only holds up its own request."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _too_large(limit)
    kind = request.headers.get("content-type", "")
    body = _capped(request.stream(), limit)
    if kind.startswith("multipart/form-data"):
        try:
            form = await MultiPartParser(request.headers, body, max_files=1, max_fields=10,
                                         max_part_size=limit).parse()
        except MultiPartException as exc:
            raise ApiError("bad-request", f"cannot read the form: {exc.message}") from None
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError("bad-request", "send the image as the multipart file field `image`")
        return upload.filename or "upload", await upload.read()
    if kind.startswith("image/") or kind == "application/octet-stream":
        return "upload", b"".join([chunk async for chunk in body])
    raise ApiError("bad-request", "send multipart/form-data with a field `image`, or a raw "
                   "image/* body")


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            await _drain(stream)
            raise _too_large(limit)
        yield chunk


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read (and drop) what the client is still sending, within bounds: a server that closes
    with unread bytes resets the connection, and the client never reads the 413."""
    end, dropped = time.monotonic() + DRAIN_SECONDS, 0
    try:
        async for chunk in stream:
            dropped += len(chunk)
            if dropped > DRAIN_BYTES or time.monotonic() > end:
                return
    except ClientDisconnect:
        return


def _too_large(limit: int) -> ApiError:
    return ApiError("too-large-upload", f"uploads are limited to {limit >> 20} MB "
                    "(serve --max-upload-mb)")


def _allowed_file(allowed: tuple[Path, ...], path: str) -> bytes:
    """The bytes of a server-side file inside an --allow-path folder; nothing else is read."""
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):  # a NUL byte, a name too long
        raise ApiError("bad-request", "that is not a usable path", 422) from None
    inside = any(os.path.commonpath([real, str(root)]) == str(root) for root in allowed)
    if not allowed or not inside:
        raise ApiError("forbidden-path", "that path is not inside a folder the server allows "
                       "(serve --allow-path DIR)")
    if not os.path.isfile(real):
        raise ApiError("not-found", f"no file {path}")
    try:
        return read_file(real)
    except DecodeError as exc:
        raise ApiError(str(exc.reason), exc.message) from None


def _open_id(service: Service, file_id: int) -> Opened:
    """An indexed file by its id (the only way a request names a file), opened and re-checked
    against what the catalog recorded."""
    with service.store.open_read() as snap:
        row = snap.catalog.file_by_id(file_id)
        roots = snap.catalog.roots()
    if row is None:
        raise ApiError("not-found", f"no indexed file with id {file_id}")
    return open_indexed(row, roots)


def _thumbnail(service: Service, opened: Opened) -> bytes:
    """A JPEG of at most THUMB px (a video: its first frame), cached by (path, size, mtime)."""
    key = (opened.path, opened.st.st_size, opened.st.st_mtime_ns)
    return service.thumbs.get(key, lambda: _make_thumbnail(service, opened))


def _make_thumbnail(service: Service, opened: Opened) -> bytes:
    from deepvision.pipeline.decode import load_rgb
    from deepvision.pipeline.video import frame_image

    limit = service.searcher.embedder.opts.max_megapixels
    try:
        if _is_video(opened):
            image = frame_image(opened.name, 0.0, THUMB)
        else:
            data = read_opened_file(opened, max_file_bytes(limit))
            with service.budget.hold(decode_cost(data, THUMB)):
                image = load_rgb(opened.path, limit, draft_size=THUMB, data=data)
    except (OSError, DecodeError) as exc:
        raise ApiError("not-found", f"the indexed file cannot be read now: {exc}") from None
    image.thumbnail((THUMB, THUMB))
    return jpeg(image)


def _is_video(opened: Opened) -> bool:
    """By the indexed name, else by the opened file's first bytes (never the path again)."""
    from deepvision.pipeline.discover import extension_kind, looks_like_video

    kind = extension_kind(opened.path)
    return kind == "video" if kind is not None else looks_like_video(opened.name)


# ---- the page and the docs -----------------------------------------------------------------------


def _page_routes(service: Service, auth: list[Any]) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _page_get(router, service)

    @router.post("/", response_class=HTMLResponse, dependencies=auth)
    async def page_search(request: Request) -> HTMLResponse:
        """The form without JavaScript: the same search, rendered on the server."""
        try:
            name, data = await _upload(request, service.config.max_upload_bytes)
            result = await _search(service, name, data, RankOptions(24))
            return _html(web.page(_stats(service), result=result))
        except ApiError as exc:
            error = {"error": exc.reason, "message": exc.message}
            return _html(web.page(_stats(service), error=error), exc.status)

    @router.get("/docs", response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
                # No /favicon.ico request (a 404 in the console): an empty icon.
                '<title>deepvision API</title><link rel="icon" href="data:,">'
                '<link rel="stylesheet" href="/static/swagger/swagger-ui.css"></head><body>'
                '<div id="swagger-ui"></div>'
                '<script src="/static/swagger/swagger-ui-bundle.js"></script>'
                '<script src="/static/docs.js"></script></body></html>')
        return _html(page, csp=DOCS_CSP)

    return router


def _page_get(router: APIRouter, service: Service) -> None:
    token = service.config.token

    def gate(request: Request, given: str | None, presented: str | None) -> Response | None:
        """The one place a ?token= is taken: it becomes a cookie, and the browser is sent on
        without it. A page asked for without the token is refused."""
        if token and given is not None and security.token_matches(given, token):
            moved = RedirectResponse(security.without_token(request), status_code=303)
            moved.set_cookie(security.TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return moved
        if token and not security.token_matches(presented, token):
            raise ApiError("unauthorized", "open the page once with ?token=T", 401)
        return None

    @router.get("/", response_class=HTMLResponse)
    def page(request: Request, text: str | None = Query(None, max_length=MAX_TEXT),
             given: str | None = Query(None, alias="token"),
             credentials: HTTPAuthorizationCredentials | None = Depends(security.bearer),
             from_cookie: str | None = Depends(security.cookie)) -> Response:
        """The page; with ?text= (the text form without JavaScript), its results too."""
        moved = gate(request, given, security.presented(credentials, from_cookie))
        return moved or _page(service, text)

    @router.get("/review", response_class=HTMLResponse)
    def review(request: Request, given: str | None = Query(None, alias="token"),
               credentials: HTTPAuthorizationCredentials | None = Depends(security.bearer),
               from_cookie: str | None = Depends(security.cookie)) -> Response:
        """The duplicate review page: app-review.js pages through /api/dupes."""
        moved = gate(request, given, security.presented(credentials, from_cookie))
        if moved is not None:
            return moved
        service.review_session().warm()  # before the script asks for the first page
        return _html(review_page.page(_stats(service)))


def _page(service: Service, text: str | None) -> HTMLResponse:
    if text is None:
        return _html(web.page(_stats(service)))
    try:
        result = _search_text(service, text, RankOptions(web.K))
        return _html(web.page(_stats(service), result=result, text=text))
    except ApiError as exc:
        error = {"error": exc.reason, "message": exc.message}
        return _html(web.page(_stats(service), error=error, text=text), exc.status)


def _html(text: str, status: int = 200, csp: str = PAGE_CSP) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": csp})


def _swagger_assets() -> str:
    """Swagger UI 5 (renders OpenAPI 3.1) from the swagger-ui-py package: /docs works offline,
    no CDN."""
    return str(Path(swagger_ui.__file__).resolve().parent / "static")
