"""Self-contained HTML reports: thumbnails written beside the page, every name escaped.

No JavaScript at all (and a CSP that forbids it): nothing a file name contains can run. The
page is rendered here; its pictures come from a `Thumbnails` the caller passes in
(services.thumbnails.FileThumbnails reads the files), so output/ reads no file itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from deepvision.atomic import atomic_write_text
from deepvision.output.console import safe_text
from deepvision.types import Box

TileKey = tuple[str, float | None]  # a file, and for a video the time of the frame shown


class Thumbnails(Protocol):
    """What a gallery needs to know of the files it shows."""

    def is_video(self, path: str) -> bool:
        """A video's tile shows one of its frames."""

    def make(self, keys: Sequence[TileKey], folder: Path) -> Mapping[TileKey, str | None]:
        """Each key's thumbnail written into `folder`: its file name there, or None when the
        file is missing or cannot be decoded."""

CSS = """
:root { color-scheme: light dark; font-family: system-ui, sans-serif; }
body { margin: 0 auto; max-width: 1400px; padding: 12px; }
h1 { font-size: 1.3rem; }
section { border-top: 1px solid #8884; padding: 8px 0; content-visibility: auto;
          contain-intrinsic-size: auto 260px; }
h2 { font-size: 1rem; word-break: break-all; margin: 4px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 8px; }
figure { margin: 0; padding: 4px; border: 1px solid #8884; border-radius: 6px; }
figure.query { border: 2px solid #3a7bd5; }
figure img { width: 100%; height: 140px; object-fit: contain; background: #8882; }
figure .pic { position: relative; display: block; width: fit-content; margin: 0 auto; }
figure .pic img { width: auto; max-width: 100%; height: auto; max-height: 140px; display: block; }
figure .pic svg { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
figure .pic rect { fill: none; stroke: #2ecc40; stroke-width: 2px;
                   vector-effect: non-scaling-stroke; }
figure.match { border: 2px solid #2ecc40; }
figcaption { font-size: .75rem; word-break: break-all; }
.missing { height: 140px; display: flex; align-items: center; justify-content: center;
           background: #d443; font-size: .8rem; }
.error { color: #c33; }
"""


@dataclass(frozen=True)
class Tile:
    path: str
    caption: str  # plain text, escaped on output
    query: bool = False
    at: float | None = None  # a video: the frame (seconds) the thumbnail shows
    box: Box | None = None  # a region drawn on the thumbnail (fractions): where a match is
    match: bool = False  # a match (verified or as close as a copy), not a similar image

    @property
    def key(self) -> TileKey:
        return self.path, self.at


@dataclass
class Section:
    heading: str
    tiles: list[Tile]
    note: str = ""


@dataclass
class Gallery:
    out: Path
    title: str
    sections: list[Section] = field(default_factory=list)

    @property
    def thumbs_dir(self) -> Path:
        return self.out.with_name(self.out.stem + "_files")

    def write(self, thumbnails: Thumbnails) -> None:
        """Thumbnails first, then the page, atomically."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.thumbs_dir.mkdir(exist_ok=True)
        keys = sorted({t.key for s in self.sections for t in s.tiles},
                      key=lambda k: (k[0], k[1] if k[1] is not None else -1.0))
        thumbs = thumbnails.make(keys, self.thumbs_dir)
        body = "".join(self._section(s, thumbs) for s in self.sections)
        page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'\">"
                f"<title>{_text(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{_text(self.title)}</h1>{body}</body></html>\n")
        atomic_write_text(self.out, page)

    def _section(self, s: Section, thumbs: Mapping[TileKey, str | None]) -> str:
        note = f'<p class="error">{_text(s.note)}</p>' if s.note else ""
        tiles = "".join(self._tile(t, thumbs[t.key]) for t in s.tiles)
        heading = f"<h2>{_text(s.heading)}</h2>"
        return f'<section>{heading}{note}<div class="grid">{tiles}</div></section>'

    def _tile(self, t: Tile, thumb: str | None) -> str:
        if thumb is None:
            picture = '<div class="missing">missing or unreadable</div>'
        else:
            # Bytes, not text: a name that is not UTF-8 still links to the right file.
            href = quote(os.fsencode(os.path.relpath(t.path, self.out.parent)))
            src = quote(f"{self.thumbs_dir.name}/{thumb}")
            picture = f'<a href="{href}"><img loading="lazy" src="{src}" alt=""></a>'
            if t.box is not None:  # the image at its own aspect, the box over it
                b = t.box
                rect = (f'<rect x="{b.x0:.4f}" y="{b.y0:.4f}" width="{b.x1 - b.x0:.4f}" '
                        f'height="{b.y1 - b.y0:.4f}"/>')
                picture = (f'<span class="pic">{picture}<svg viewBox="0 0 1 1" '
                           f'preserveAspectRatio="none">{rect}</svg></span>')
        css = ' class="query"' if t.query else (' class="match"' if t.match else "")
        return (f'<figure{css} title="{_text(t.path)}">{picture}<figcaption>'
                f"{_text(t.caption)}<br>{_text(os.path.basename(t.path))}</figcaption></figure>")


def _text(text: str) -> str:
    """HTML-escaped, with control characters and undecodable bytes shown as escapes."""
    return escape(safe_text(text))
