"""The page of `deepvision serve`: one HTML document, rendered on the server.

Pure functions from the server's JSON documents (the `info --json` stats, a search result, an
error) to HTML; the server sends the string. The page works without JavaScript (a multipart form
that posts back to `/`, results rendered here); `/static/app.js` enhances it (drop, paste, fetch)
and builds the same grid markup. No inline script or style anywhere: the server's CSP allows
only `'self'`. Every piece of text from data goes through `_text` (control characters shown as
escapes, then HTML-escaped); an image is named in a URL only by its integer id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from html import escape
from typing import Any

from deepvision.output.console import safe_text

# A narrow card wraps a long file name after these.
_BREAKS = re.compile(r"(?<=[_\-.])")

# How many results app.js asks for (the form's data-k); the no-JS form gets the server's default.
K = 24
MAX_TEXT = 2000  # the text box's maxlength: what the server accepts (server/app.py)

# A magnifier over a picture, as a data: icon (the CSP allows data: images): no /favicon.ico
# request, hence no 404 in the browser console.
ICON = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E"
         "%3Crect width='32' height='32' rx='7' fill='%232f6fde'/%3E%3Ccircle cx='14' cy='14' "
         "r='7' fill='none' stroke='white' stroke-width='3'/%3E%3Cpath d='M19 19l7 7' "
         "stroke='white' stroke-width='3' stroke-linecap='round'/%3E%3C/svg%3E")

# Drawn with attributes only (an SVG style attribute would be an inline style).
_UPLOAD_SVG = ('<svg class="drop-icon" viewBox="0 0 48 48" aria-hidden="true" focusable="false">'
               '<rect x="5" y="9" width="38" height="30" rx="5" fill="none" '
               'stroke="currentColor" stroke-width="2.5"/>'
               '<circle cx="17" cy="19" r="3.5" fill="currentColor"/>'
               '<path d="M9 35l10-10 7 7 5-5 9 8" fill="none" stroke="currentColor" '
               'stroke-width="2.5" stroke-linejoin="round"/></svg>')


def page(stats: Mapping[str, Any], result: Mapping[str, Any] | None = None,
         error: Mapping[str, Any] | None = None, token: str | None = None,
         text: str | None = None) -> str:
    """The whole page: header from `stats`, the form (and the text box, where the index's
    model has a text encoder, holding `text`), a status line, and the results of `result`
    (a search document with one query) or the message of `error`.

    `token` is not used: the server turns `?token=` into a cookie, and every URL here is
    same-origin, so links and thumbnails carry it already.
    """
    del token
    name = os.path.basename(str(stats.get("index", "")).rstrip("/")) or "index"
    status, grid = _outcome(stats, result, error)
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f'<title>{_text(name)} · deepvision</title>'
            f'<link rel="icon" href="{ICON}">'
            '<link rel="stylesheet" href="/static/app.css">'
            '<script src="/static/app.js" defer></script></head>\n'
            f'<body>{header(name, stats)}<main>{_form()}{_filters()}{_text_form(stats, text)}'
            f'{status}{grid}</main>'
            f'{_footer()}</body></html>\n')


def header(name: str, stats: Mapping[str, Any]) -> str:
    files = _count(stats.get("files"))
    facts = [("model", _text(str(stats.get("model", "?")))),
             ("files", f'<span id="file-count">{files}</span>'),
             ("updated", _when(str(stats.get("updated", ""))))]
    items = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    return ('<header class="top"><div class="bar">'
            '<a class="brand" href="/"><span class="logo" aria-hidden="true"></span>'
            'deepvision</a>'
            f'<h1 title="{_text(str(stats.get("index", "")))}">{_text(name)}</h1>'
            f'<dl class="facts">{items}</dl></div></header>')


def _form() -> str:
    # The input stays in the layout (visually hidden, still focusable): the label is the
    # drop zone, and its focus ring shows where the keyboard is.
    return ('<form id="search" class="search" method="post" action="/" '
            f'enctype="multipart/form-data" data-k="{K}">'
            '<input type="file" id="image" name="image" accept="image/*" required>'
            '<label id="drop" class="drop" for="image">'
            '<span id="preview-frame" class="frame preview-frame" hidden>'
            '<img id="preview" class="preview" alt="the query image" hidden>'
            '<svg id="query-overlay" class="overlay" viewBox="0 0 1 1" '
            'preserveAspectRatio="none" aria-hidden="true"></svg></span>'
            f'<span class="drop-body">{_UPLOAD_SVG}'
            '<span class="drop-title">Choose an image</span>'
            '<span class="drop-hint hint-js">or drop it here, or paste it (Ctrl/⌘ + V)</span>'
            '<span class="drop-hint hint-nojs">then press Search</span>'
            '</span></label>'
            '<div class="actions"><span id="file-name" class="file-name"></span>'
            '<button id="submit" type="submit">Search</button></div></form>')


def _filters() -> str:
    """Filters on metadata (as `search --after ...`), folded: app.js adds the filled ones to
    every search it sends, image or text."""
    def field(label: str, control: str) -> str:
        return f'<label class="filter">{label} {control}</label>'

    return ('<details id="filters" class="filters"><summary>Filters</summary>'
            + field("taken after", '<input type="date" name="after">')
            + field("taken before", '<input type="date" name="before">')
            + field("folder", '<input type="text" name="folder" placeholder="/photos/2023" '
                    'autocomplete="off">')
            + field("camera", '<input type="text" name="camera" placeholder="pixel 7" '
                    'autocomplete="off">')
            + field("kind", '<select name="kind"><option value="">any</option>'
                    '<option value="image">image</option><option value="video">video</option>'
                    '</select>')
            + field("order", '<select name="sort"><option value="score">most similar first'
                    '</option><option value="date">oldest first</option></select>')
            + '</details>')


def _text_form(stats: Mapping[str, Any], text: str | None) -> str:
    """Search by words (CLIP-family index): a GET form to `/`, so it works without JavaScript;
    app.js sends it to /api/search?text= instead."""
    if stats.get("text_encoder") is not True:
        return ""
    value = f' value="{_text(text)}"' if text else ""
    return ('<form id="text-search" class="text-search" method="get" action="/" role="search">'
            '<label for="text" class="text-label">or describe it</label>'
            f'<input type="search" id="text" name="text" maxlength="{MAX_TEXT}" required '
            f'placeholder="a red bicycle on a beach" autocomplete="off"{value}>'
            '<button id="text-submit" type="submit">Search text</button></form>')


def _outcome(stats: Mapping[str, Any], result: Mapping[str, Any] | None,
             error: Mapping[str, Any] | None) -> tuple[str, str]:
    """The status line and the results section for what happened."""
    if error is not None:
        return _status(_error_text(error), "error"), _results("")
    if result is None:
        files = _count(stats.get("files"))
        how = "by example or by text" if stats.get("text_encoder") is True else "by example"
        text = (f"Search {files} indexed {_plural(files, 'file')} {how}."
                if files else "The index is empty: run `deepvision index` first.")
        return _status(text, "idle"), _results("")
    query = (result.get("queries") or [{}])[0]
    if query.get("error"):
        return _status(f"Could not search: {query['error']}", "error"), _results("")
    matches = query.get("matches") or []
    label = (f"“{query.get('query')}”" if query.get("kind") == "text"
             else os.path.basename(str(query.get("query") or "upload")))
    copies = [m for m in matches if m.get("match") is True]
    n = len(copies)
    text = f"{n} {_plural(n, 'match', 'matches')} for {label}" if n else f"No matches for {label}"
    return _status(text, "done"), _results(_grid(copies, matches))


def _grid(copies: list[Mapping[str, Any]], matches: list[Mapping[str, Any]]) -> str:
    """The matches first; the other similar images folded below them (open when there is no
    match: then they are all there is to see); the points toggle when there are points."""
    others = [m for m in matches if m.get("match") is not True]
    toggle = _points_toggle() if any(m.get("points") for m in matches) else ""
    folded = ""
    if others:
        n = len(others)
        opened = "" if copies else " open"
        folded = (f'<details id="similar" class="similar"{opened}><summary>{n} other similar '
                  f'{_plural(n, "image")}</summary><div class="grid">'
                  f'{"".join(_figure(m) for m in others)}</div></details>')
    return toggle + "".join(_figure(m) for m in copies) + folded


def _points_toggle() -> str:
    # A checkbox and CSS (:has) show the points: it works without JavaScript too.
    return ('<label class="points-toggle"><input type="checkbox" id="show-points"> '
            'show matched points</label>')


def _status(text: str, state: str) -> str:
    return (f'<p id="status" class="status" data-state="{state}" role="status" '
            f'aria-live="polite">{_text(text)}</p>')


def _results(figures: str) -> str:
    return f'<section id="results" class="results" aria-label="Results">{figures}</section>'


def _figure(match: Mapping[str, Any]) -> str:
    """One result card; app.js builds the same markup (keep the two in step)."""
    rank = _count(match.get("rank"))
    score = _score(match.get("score"))
    path = str(match.get("path", ""))
    head, tail = os.path.split(path)
    meter = min(max(score, 0.0), 1.0)
    return (f'<figure class="match" data-rank="{rank}" data-score="{score:.4f}"'
            f'{_flags(match)}>{_picture(match)}'
            f'<span class="rank" aria-label="rank">{rank}</span>{_badge(match)}<figcaption>'
            f'<span class="path" title="{_text(path)}"><span class="dir"><span>'
            f'{_text(head + os.sep if head else "")}</span></span>'
            f'<span class="name">{_breakable(tail)}</span></span>'
            f'<span class="score-row"><meter min="0" max="1" value="{meter:.4f}"></meter>'
            f'<span class="score">{score:.4f}</span></span></figcaption></figure>')


def _flags(match: Mapping[str, Any]) -> str:
    verified = match.get("verified")
    state = "true" if verified is True else "false" if verified is False else "unknown"
    return (f' data-match="{"true" if match.get("match") is True else "false"}"'
            f' data-verified="{state}"')


def _badge(match: Mapping[str, Any]) -> str:
    if match.get("verified") is not True:
        return ""
    inliers = _count(match.get("inliers"))
    return (f'<span class="verified" title="{inliers} matched points agree on one geometric '
            f'transform">✓ verified</span>')


def _picture(match: Mapping[str, Any]) -> str:
    image_id = _image_id(match.get("id"))
    if image_id is None:
        return '<div class="thumb missing">no preview</div>'
    img = (f'<img src="/api/images/{image_id}/thumbnail" alt="" loading="lazy" '
           'decoding="async" width="256" height="256">')
    box = _box(match.get("match_box"))
    if box is None:
        return (f'<a class="thumb" href="/api/images/{image_id}" target="_blank" '
                f'rel="noopener">{img}</a>')
    overlay = _overlay(box, _points(match.get("points"), 2))
    return (f'<a class="thumb framed" href="/api/images/{image_id}" target="_blank" '
            f'rel="noopener"><span class="frame">{img}{overlay}</span></a>')


def _overlay(box: tuple[float, float, float, float], points: list[tuple[float, float]]) -> str:
    """The matched region (and points) over a picture: an SVG in fractions of its size, drawn
    with attributes only (the CSP allows no inline style)."""
    x0, y0, x1, y1 = box
    dots = "".join(f'<circle cx="{x:.4f}" cy="{y:.4f}" r="0.018"></circle>' for x, y in points)
    return ('<svg class="overlay" viewBox="0 0 1 1" preserveAspectRatio="none" '
            f'aria-hidden="true"><rect class="box" x="{x0:.4f}" y="{y0:.4f}" '
            f'width="{x1 - x0:.4f}" height="{y1 - y0:.4f}"></rect>'
            f'<g class="points">{dots}</g></svg>')


def _box(value: object) -> tuple[float, float, float, float] | None:
    """x0, y0, x1, y1 as fractions in 0..1 with x0 < x1 and y0 < y1; None for anything else."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    x0, y0, x1, y1 = (_fraction(v) for v in value)
    if x0 is None or y0 is None or x1 is None or y1 is None:
        return None
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _points(value: object, at: int) -> list[tuple[float, float]]:
    """The (x, y) at offset `at` of each [qx, qy, mx, my] (0: the query's, 2: the match's)."""
    if not isinstance(value, (list, tuple)):
        return []
    out = []
    for point in value:
        if isinstance(point, (list, tuple)) and len(point) == 4:
            x, y = _fraction(point[at]), _fraction(point[at + 1])
            if x is not None and y is not None:
                out.append((x, y))
    return out


def _fraction(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0.0 <= value <= 1.0 else None


def _footer() -> str:
    return ('<footer class="foot"><a href="/review">duplicate review</a>'
            '<span aria-hidden="true">·</span><a href="/docs">API</a>'
            '<span aria-hidden="true">·</span><a href="/api/stats">stats</a></footer>')


def _error_text(error: Mapping[str, Any]) -> str:
    message = str(error.get("message") or "").strip()
    reason = str(error.get("error") or "error")
    return message or f"Search failed ({reason})."


def _when(stamp: str) -> str:
    """An ISO time as a short UTC date and time, in a <time> element; anything else as text."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return _text(stamp or "never")
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    shown = moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo else "")
    return f'<time datetime="{_text(stamp)}">{shown}</time>'


def _image_id(value: object) -> int | None:
    """The integer id an image is named by in URLs; None for anything else (never a string)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _count(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _score(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _plural(n: int, one: str, many: str | None = None) -> str:
    return one if n == 1 else (many or one + "s")


def _breakable(name: str) -> str:
    """A file name that wraps after _ - . rather than inside a word (<wbr> adds no text)."""
    return "<wbr>".join(_text(part) for part in _BREAKS.split(name))


def _text(text: str) -> str:
    """HTML-escaped (quotes too: safe in attributes), control characters shown as escapes."""
    return escape(safe_text(text), quote=True)
