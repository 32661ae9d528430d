"""`/api/images/{id}` and its thumbnail: an indexed file by its id only, re-checked against the
catalog before a byte is sent."""

from __future__ import annotations

import logging
import mimetypes
from typing import Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from deepvision.pipeline.decode import DecodeError, load_rgb, max_file_bytes
from deepvision.server.budget import decode_cost
from deepvision.server.files import THUMB, Opened, jpeg, open_indexed
from deepvision.server.files import read_opened as read_opened_file
from deepvision.server.models import errors
from deepvision.server.service import BINARY, MAX_ID, ApiError, Service

log = logging.getLogger("uvicorn.error")


def image_routes(router: APIRouter, service: Service) -> None:
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
