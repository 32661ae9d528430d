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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from deepvision.errors import DeepVisionError, IndexLockedError, UsageError
from deepvision.filters import Filter, build_filter
from deepvision.output import web
from deepvision.server import security
from deepvision.server.budget import BusyError
from deepvision.server.files import RefusedError
from deepvision.server.images import image_routes
from deepvision.server.models import HealthDoc, InfoDoc, JobDoc, SearchDoc, errors
from deepvision.server.pages import STATIC, page_routes, swagger_assets
from deepvision.server.queries import allowed_file, read_upload, search_image, search_text
from deepvision.server.review import review_routes
from deepvision.server.service import (
    BINARY,
    ApiError,
    ServeConfig,
    Service,
    error_response,
    index_stats,
)
from deepvision.services.search import RankOptions, check_filter

MAX_TEXT = web.MAX_TEXT  # characters of a text query (CLIP's tokenizer keeps 77 tokens)
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
    app.include_router(page_routes(service, auth))
    app.mount("/static/swagger", StaticFiles(directory=swagger_assets()), name="swagger")
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
    image_routes(router, service)
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
        return index_stats(service)

    @router.post("/api/search", response_model=SearchDoc, response_model_exclude_unset=True,
                 responses={200: SEARCH_LINKS, **errors(400, 413, 422, 503)},
                 openapi_extra=UPLOAD_BODY, operation_id="search_upload")
    async def search_upload(request: Request, k: int = Query(10, ge=1, le=1000),
                            min_score: float | None = Query(None, ge=-1, le=1),
                            narrow: Narrowing = Depends(narrowing)) -> dict[str, Any]:
        """Search by an uploaded image: multipart field `image`, or a raw image body;
        the filters narrow the search inside the index (as `search --after ...`)."""
        opts = await asyncio.to_thread(_options, service, k, min_score, narrow)
        name, data = await read_upload(request, service.config.max_upload_bytes)
        return await search_image(service, name, data, opts)

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
            data = await asyncio.to_thread(allowed_file, service.config.allow_paths, path)
            return await search_image(service, path, data, opts)
        if text is not None and path is None:
            return await asyncio.to_thread(search_text, service, text, opts)
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


# ---- the page and the docs -----------------------------------------------------------------------


