"""`deepvision serve`: the HTTP way in. Like cli.py, it only turns requests into calls on the
services (a Searcher behind a QueryBatcher, index jobs, info) and results into responses.

The model and the index are loaded once; each search sees the index as last committed, so a
`deepvision index` run from cron (or a `rebuild` swap) shows within the next query.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import mimetypes
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartException, MultiPartParser

from deepvision.errors import DeepVisionError, IndexLockedError
from deepvision.output import web
from deepvision.output.render import search_document
from deepvision.pipeline.decode import DecodeError, read_file
from deepvision.progress import Silent
from deepvision.services.batching import QueryBatcher
from deepvision.services.info import describe
from deepvision.services.jobs import JobRunner
from deepvision.services.search import (
    QueryResult,
    RankOptions,
    Searcher,
    SearchResult,
    no_text_encoder,
)
from deepvision.types import Failure

STATIC = Path(__file__).resolve().parent.parent / "output" / "static"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_COOKIE = "deepvision_token"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
THUMB = 256
MAX_TEXT = web.MAX_TEXT  # characters of a text query (CLIP's tokenizer keeps 77 tokens)
# Decoded-image errors -> HTTP status: the upload is the client's problem (422), not ours.
STATUS = {"too-large-upload": 413, "bad-request": 400, "forbidden-path": 403, "not-found": 404,
          "unauthorized": 401, "locked": 409, "bad-host": 400}


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
    """What the app holds for its lifetime: the searcher (model + index), batcher, jobs."""

    searcher: Searcher
    batcher: QueryBatcher
    jobs: JobRunner
    index_job: Callable[[Any], dict[str, Any]]  # a JobTarget: runs `index` on the recorded folders
    config: ServeConfig
    on_ready: Callable[[], None] = lambda: None
    thumbs: OrderedDict[tuple[str, int, int], bytes] = field(default_factory=OrderedDict)

    @property
    def store(self) -> Any:
        return self.searcher.store


class ApiError(Exception):
    def __init__(self, reason: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message
        self.status = status or STATUS.get(reason, 422)


def error_response(reason: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": reason, "message": message}, status_code=status)


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.on_ready()
        yield
        service.jobs.stop()
        service.batcher.close()

    app = FastAPI(title="deepvision", summary="Reverse image search over a deepvision index",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    _errors(app)
    _middleware(app, service.config)
    _api_routes(app, service)
    _page_routes(app, service)
    swagger = _swagger_assets()
    if swagger is not None:  # before /static, which would otherwise take these paths
        app.mount("/static/swagger", StaticFiles(directory=swagger), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# ---- errors and middleware ---------------------------------------------------------------------


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.reason, exc.message, exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response("bad-request", f"{where}: {first.get('msg', 'invalid')}", 422)

    @app.exception_handler(404)
    async def not_found(_: Request, exc: Exception) -> JSONResponse:
        return error_response("not-found", "no such resource", 404)


def _middleware(app: FastAPI, config: ServeConfig) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]")
        if config.loopback and host not in LOOPBACK_HOSTS:
            # DNS rebinding: a page elsewhere that resolves its name to 127.0.0.1.
            return error_response("bad-host", f"Host {host!r} is not this server's", 400)
        if config.token and not _authorised(request, config.token):
            return error_response("unauthorized", "pass the token: Authorization: Bearer T", 401)
        response = await call_next(request)
        if config.token and request.query_params.get("token") == config.token:
            response.set_cookie(TOKEN_COOKIE, config.token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors),
                           allow_methods=["GET", "POST"], allow_headers=["Authorization"])


def _authorised(request: Request, token: str) -> bool:
    if request.url.path == "/api/health":
        return True
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else (
        request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token") or "")
    return hmac.compare_digest(given.encode(), token.encode())


# ---- the JSON API --------------------------------------------------------------------------------


def _api_routes(app: FastAPI, service: Service) -> None:
    @app.get("/api/health")
    def health() -> dict[str, Any]:
        with service.store.open_read() as snap:
            generation = snap.catalog.generation
        return {"status": "ok", "index": os.path.abspath(service.store.dir),
                "generation": generation}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        return _stats(service)

    @app.post("/api/search")
    async def search_upload(request: Request, k: int = Query(10, ge=1, le=1000),
                            min_score: float | None = Query(None, ge=-1, le=1)) -> JSONResponse:
        name, data = await _upload(request, service.config.max_upload_bytes)
        return JSONResponse(await _search(service, name, data, RankOptions(k, min_score)))

    @app.get("/api/search")
    async def search_get(path: str | None = None,
                         text: str | None = Query(None, max_length=MAX_TEXT),
                         k: int = Query(10, ge=1, le=1000),
                         min_score: float | None = Query(None, ge=-1, le=1)) -> JSONResponse:
        """?path= (a server-side image inside --allow-path) or ?text= (CLIP-family index)."""
        if (path is None) == (text is None):
            raise ApiError("bad-request", "pass one of ?path= (an image) or ?text= (words)")
        if text is not None:
            return JSONResponse(await asyncio.to_thread(
                _search_text, service, text, RankOptions(k, min_score)))
        assert path is not None
        data = await asyncio.to_thread(_allowed_file, service.config.allow_paths, path)
        return JSONResponse(await _search(service, path, data, RankOptions(k, min_score)))

    @app.post("/api/index", status_code=202)
    def start_index() -> dict[str, Any]:
        try:
            job = service.jobs.start(service.index_job)
        except IndexLockedError as exc:
            raise ApiError("locked", str(exc)) from None
        return job.to_json()

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        found = service.jobs.jobs.get(job_id)
        if found is None:
            raise ApiError("not-found", f"no job {job_id!r}")
        return found.to_json()

    @app.get("/api/images/{file_id}")
    def image(file_id: int) -> Response:
        path = _indexed_path(service, file_id)
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return Response(_read_indexed(path), media_type=kind)

    @app.get("/api/images/{file_id}/thumbnail")
    def thumbnail(file_id: int) -> Response:
        return Response(_thumbnail(service, _indexed_path(service, file_id)),
                        media_type="image/jpeg", headers={"Cache-Control": "max-age=300"})


def _stats(service: Service) -> dict[str, Any]:
    try:
        return describe(service.store)
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None


async def _search(service: Service, name: str, data: bytes, opts: RankOptions) -> dict[str, Any]:
    """Decode on a worker thread, then the batcher: the document `search --format json` prints
    for one query, with file ids."""
    embedder = service.searcher.embedder
    if not data:
        raise ApiError("empty", "the upload is empty (0 bytes)")
    try:
        crop = await asyncio.to_thread(embedder.prepare, data, name)
    except DecodeError as exc:
        raise ApiError(str(exc.reason), exc.message) from None
    try:
        found = await asyncio.wrap_future(service.batcher.submit(name, crop, opts))
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None
    if isinstance(found, Failure):
        raise ApiError(str(found.reason), found.message)
    result = SearchResult(os.path.abspath(service.store.dir), embedder.model.spec.name,
                          [QueryResult(name, None, found)])
    return search_document(result, with_ids=True)


def _search_text(service: Service, text: str, opts: RankOptions) -> dict[str, Any]:
    """A text query (on a worker thread: the text tower is small next to the image batcher's
    network, and runs beside it): the document `search --text --format json` prints."""
    embedder = service.searcher.embedder
    if not text.strip():
        raise ApiError("bad-request", "the text is empty: type the words to search for")
    if not embedder.has_text:
        with service.store.open_read() as snap:
            manifest = snap.manifest
        raise ApiError("no-text-encoder", no_text_encoder(manifest, service.store))
    try:
        found = service.searcher.search_texts([text], opts, Silent())
    except DeepVisionError as exc:
        raise ApiError("index-unavailable", str(exc), 503) from None
    result = SearchResult(os.path.abspath(service.store.dir), embedder.model.spec.name, found)
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


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        yield chunk


def _too_large(limit: int) -> ApiError:
    return ApiError("too-large-upload", f"uploads are limited to {limit >> 20} MB "
                    "(serve --max-upload-mb)")


def _allowed_file(allowed: tuple[Path, ...], path: str) -> bytes:
    """The bytes of a server-side file inside an --allow-path folder; nothing else is read."""
    real = os.path.realpath(path)
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


def _indexed_path(service: Service, file_id: int) -> str:
    """The path of an indexed file, looked up by its id: the only way a request names a file."""
    with service.store.open_read() as snap:
        row = snap.catalog.file_by_id(file_id)
    if row is None:
        raise ApiError("not-found", f"no indexed file with id {file_id}")
    return row.path


def _read_indexed(path: str) -> bytes:
    try:
        return read_file(path)
    except DecodeError as exc:
        raise ApiError("not-found", f"the indexed file cannot be read now: {exc.message}") from None


def _thumbnail(service: Service, path: str) -> bytes:
    """A JPEG of at most THUMB px (a video: its first frame), cached in memory by (path, size,
    mtime)."""
    from deepvision.pipeline.decode import load_rgb
    from deepvision.pipeline.discover import looks_like_video
    from deepvision.pipeline.video import frame_image

    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        if key in service.thumbs:
            service.thumbs.move_to_end(key)
            return service.thumbs[key]
        image = (frame_image(path, 0.0, THUMB) if looks_like_video(path)
                 else load_rgb(path, draft_size=THUMB))
    except (OSError, DecodeError) as exc:
        raise ApiError("not-found", f"the indexed file cannot be read now: {exc}") from None
    image.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=82)
    service.thumbs[key] = buf.getvalue()
    while len(service.thumbs) > 2048:
        service.thumbs.popitem(last=False)
    return service.thumbs[key]


# ---- the page and the docs -----------------------------------------------------------------------


def _page_routes(app: FastAPI, service: Service) -> None:
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(text: str | None = Query(None, max_length=MAX_TEXT)) -> HTMLResponse:
        """The page; with ?text= (the text form without JavaScript), its results too."""
        if text is None:
            return _html(web.page(_stats(service)))
        try:
            result = _search_text(service, text, RankOptions(web.K))
            return _html(web.page(_stats(service), result=result, text=text))
        except ApiError as exc:
            error = {"error": exc.reason, "message": exc.message}
            return _html(web.page(_stats(service), error=error, text=text), exc.status)

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def page_search(request: Request) -> HTMLResponse:
        """The form without JavaScript: the same search, rendered on the server."""
        try:
            name, data = await _upload(request, service.config.max_upload_bytes)
            result = await _search(service, name, data, RankOptions(24))
            return _html(web.page(_stats(service), result=result))
        except ApiError as exc:
            error = {"error": exc.reason, "message": exc.message}
            return _html(web.page(_stats(service), error=error), exc.status)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
                "<title>deepvision API</title>"
                '<link rel="stylesheet" href="/static/swagger/swagger-ui.css"></head><body>'
                '<div id="swagger-ui"></div>'
                '<script src="/static/swagger/swagger-ui-bundle.js"></script>'
                '<script src="/static/docs.js"></script></body></html>')
        return _html(page, csp=DOCS_CSP)


def _html(text: str, status: int = 200, csp: str = PAGE_CSP) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": csp})


def _swagger_assets() -> str | None:
    """Swagger UI's files from the swagger-ui-bundle package: /docs works offline, no CDN."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)
