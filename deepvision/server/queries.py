"""Turning a request into a search: reading an upload within its cap, a server-side file inside
--allow-path, decoding within the budget, the batcher, verification on the request's thread,
and the document `search --format json` prints."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from deepvision.errors import DeepVisionError
from deepvision.match.features import WORK_SIDE, at_most
from deepvision.output.render import search_document
from deepvision.pipeline.decode import DecodeError, load_rgb, read_file
from deepvision.progress import Silent
from deepvision.server.budget import decode_cost
from deepvision.server.service import ApiError, Service
from deepvision.services.search import (
    QueryResult,
    RankOptions,
    SearchResult,
    in_order,
    no_text_encoder,
)
from deepvision.types import Failure, Match

DRAIN_BYTES = 64 << 20  # read past the cap before a 413, so the client hears the answer
DRAIN_SECONDS = 10.0


async def search_image(service: Service, name: str, data: bytes,
                       opts: RankOptions) -> dict[str, Any]:
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


def search_text(service: Service, text: str, opts: RankOptions) -> dict[str, Any]:
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


async def read_upload(request: Request, limit: int) -> tuple[str, bytes]:
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


def allowed_file(allowed: tuple[Path, ...], path: str) -> bytes:
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
