"""The HTML pages of `serve`: the search page (and its no-JavaScript form), the duplicate
review page and /docs (Swagger UI, offline). A ?token= is taken only here, and becomes a
cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui  # imported here: a missing serve extra is the CLI's usage error, not a crash
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials

from deepvision.output import review_page, web
from deepvision.server import security
from deepvision.server.queries import read_upload, search_image, search_text
from deepvision.server.service import ApiError, Service, index_stats
from deepvision.services.search import RankOptions

STATIC = Path(__file__).resolve().parent.parent / "output" / "static"
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


DOCS_CSP = PAGE_CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def page_routes(service: Service, auth: list[Any]) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _page_get(router, service)

    @router.post("/", response_class=HTMLResponse, dependencies=auth)
    async def page_search(request: Request) -> HTMLResponse:
        """The form without JavaScript: the same search, rendered on the server."""
        try:
            name, data = await read_upload(request, service.config.max_upload_bytes)
            result = await search_image(service, name, data, RankOptions(24))
            return _html(web.page(index_stats(service), result=result))
        except ApiError as exc:
            error = {"error": exc.reason, "message": exc.message}
            return _html(web.page(index_stats(service), error=error), exc.status)

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
    def page(request: Request, text: str | None = Query(None, max_length=web.MAX_TEXT),
             given: str | None = Query(None, alias="token"),
             credentials: HTTPAuthorizationCredentials | None = Depends(security.bearer),
             from_cookie: str | None = Depends(security.cookie)) -> Response:
        """The page; with ?text= (the text form without JavaScript), its results too."""
        moved = gate(request, given, security.presented(credentials, from_cookie))
        return moved or _page(service, text)

    @router.get("/review", response_class=HTMLResponse)
    def review(request: Request, given: str | None = Query(None, alias="token"),
               per_page: int = Query(review_page.PAGE, ge=1, le=200),
               credentials: HTTPAuthorizationCredentials | None = Depends(security.bearer),
               from_cookie: str | None = Depends(security.cookie)) -> Response:
        """The duplicate review page: review.js pages through /api/dupes."""
        moved = gate(request, given, security.presented(credentials, from_cookie))
        if moved is not None:
            return moved
        service.review_session().warm()  # before the script asks for the first page
        return _html(review_page.page(index_stats(service), per_page))


def _page(service: Service, text: str | None) -> HTMLResponse:
    if text is None:
        return _html(web.page(index_stats(service)))
    try:
        result = search_text(service, text, RankOptions(web.K))
        return _html(web.page(index_stats(service), result=result, text=text))
    except ApiError as exc:
        error = {"error": exc.reason, "message": exc.message}
        return _html(web.page(index_stats(service), error=error, text=text), exc.status)


def _html(text: str, status: int = 200, csp: str = PAGE_CSP) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers={"Content-Security-Policy": csp})


def swagger_assets() -> str:
    """Swagger UI 5 (renders OpenAPI 3.1) from the swagger-ui-py package: /docs works offline,
    no CDN."""
    return str(Path(swagger_ui.__file__).resolve().parent / "static")
