"""Results as the user asked for them: tables on the terminal, JSON, CSV, HTML galleries.

Every renderer takes a service's typed result and returns text (or writes a file); the JSON
documents are the stable, schema-checked ones (schemas/). Nothing here computes anything.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from deepvision.output.console import (
    display_path,
    failures_by_reason,
    markup,
    safe_text,
    stdout_console,
)
from deepvision.services.dupes import DupesResult
from deepvision.services.search import IMAGE, TEXT, QueryResult, SearchResult
from deepvision.services.sync import IndexSummary, RestructureSummary
from deepvision.types import Match


def index_summary_text(s: IndexSummary) -> str:
    parts = [f"added {s.added}", f"updated {s.updated}", f"renamed {s.renamed}",
             f"removed {s.removed}", f"unchanged {s.unchanged}", f"failed {len(s.failures)}"]
    tail = f" ({s.still_failing} failing from earlier runs)" if s.still_failing else ""
    frames = f" ({s.frames_embedded} video frames)" if s.frames_embedded else ""
    return (f"{', '.join(parts)}{tail}; embedded {s.embedded}{frames} in {s.seconds:.1f} s "
            f"({s.images_per_second:.1f} img/s); index holds {s.total_files} files")


def index_summary_document(s: IndexSummary) -> dict[str, Any]:
    """`index --json` (schemas/index.schema.json)."""
    data = asdict(s)
    data["failures"] = [asdict(f) for f in s.failures]
    data["failed"] = len(s.failures)
    data["failed_by_reason"] = {r: len(g) for r, g in failures_by_reason(s.failures).items()}
    return data


def index_summary_json(s: IndexSummary) -> str:
    return json.dumps(index_summary_document(s), indent=2)


def search_document(result: SearchResult, with_ids: bool = False) -> dict[str, Any]:
    """`search --format json` (schemas/search.schema.json); with_ids: each match also carries
    the file id that `serve`'s image endpoints take."""
    def match(m: Match) -> dict[str, Any]:
        doc: dict[str, Any] = {"rank": m.rank, "path": m.path, "score": round(m.score, 6),
                               "timestamp": _seconds(m.timestamp)}
        if m.query_timestamp is not None:
            doc["query_timestamp"] = _seconds(m.query_timestamp)
        if with_ids:
            doc["id"] = m.file_id
        return doc | verification_fields(m) | match_metadata(m)

    return {"index": result.index, "model": result.model,
            "queries": [{"query": q.query, "kind": q.kind, "error": q.error,
                         "matches": [match(m) for m in q.matches]} for q in result.queries]}


def verification_fields(m: Match) -> dict[str, Any]:
    """Why a match is one (issue #25): `match` (a copy of the query or of a part of it, as
    opposed to another similar image), whether local features verified it, the inliers, the
    matched box in the query and in the indexed image (fractions x0, y0, x1, y1) and a sample
    of the matched points (qx, qy, mx, my)."""
    v = m.verification
    return {"match": m.match, "verified": m.verified,
            "inliers": v.inliers if v else None,
            "verified_score": round(v.score, 4) if v else None,
            "query_box": v.query_box.as_list() if v else None,
            "match_box": v.match_box.as_list() if v else None,
            "points": [[round(c, 4) for c in p] for p in v.points] if v else None}


def match_metadata(m: Match) -> dict[str, Any]:
    """A match's file metadata in the search JSON (#28): null where it is not known."""
    meta = m.meta
    if meta is None:
        return {"taken": None, "camera": None, "gps": None, "width": None, "height": None}
    gps = None if meta.lat is None or meta.lon is None else {"lat": meta.lat, "lon": meta.lon}
    return {"taken": meta.taken, "camera": meta.camera, "gps": gps, "width": meta.width,
            "height": meta.height}


def _seconds(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def clock(t: float) -> str:
    """83.4 -> '01:23.4'; an hour or more: '1:02:03.4'."""
    tenths = round(t * 10)
    minutes, secs = divmod(tenths / 10, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{minutes:02d}:{secs:04.1f}"
    return f"{hours}:{text}" if hours else text


def at_time(path: str, m: Match) -> str:
    """`clip.mp4 @ 01:23.4` for a video frame (and the query frame it matched, for a video
    query); the path alone for an image."""
    text = path if m.timestamp is None else f"{path} @ {clock(m.timestamp)}"
    return text if m.query_timestamp is None else f"{text} (query @ {clock(m.query_timestamp)})"


def search_json(result: SearchResult) -> str:
    return json.dumps(search_document(result), indent=2)


def print_search_table(result: SearchResult) -> None:
    out = stdout_console()
    for q in result.queries:
        title = escape(query_label(q))
        if q.error:
            out.print(f"[bold]{title}[/]: [red]{markup(q.error)}[/]")
            continue
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for m in q.matches:
            table.add_row(str(m.rank), f"{m.score:.4f}", escape(at_time(display_path(m.path), m)))
        if not q.matches:
            table.add_row("-", "-", "no match above --min-score")
        out.print(table)
        out.print()


def query_label(q: QueryResult) -> str:
    """How a query is named on screen: its path, or the text in quotes."""
    return f"text {safe_text(q.query)!r}" if q.kind == TEXT else display_path(q.query)


def search_csv(result: SearchResult) -> str:
    """One row per match: query, rank, path, score, error, kind, then the video times in
    seconds (empty for images) of the matched frame and of the query frame (a failed query gets
    one row)."""
    rows: list[list[Any]] = [["query", "rank", "path", "score", "error", "kind", "timestamp",
                              "query_timestamp"]]
    for q in result.queries:
        if q.error:
            rows.append([q.query, "", "", "", q.error, q.kind, "", ""])
        rows.extend([q.query, m.rank, m.path, f"{m.score:.6f}", "", q.kind,
                     _csv_seconds(m.timestamp), _csv_seconds(m.query_timestamp)]
                    for m in q.matches)
    return csv_text(rows)


def _csv_seconds(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"


def search_html(result: SearchResult, out: Path) -> None:
    from deepvision.output.html import Gallery, Section, Tile
    from deepvision.pipeline.discover import looks_like_video

    def query_tiles(q: Any) -> list[Tile]:
        if q.kind != IMAGE:
            return []
        if not looks_like_video(q.query):
            return [Tile(q.query, "query", query=True)]
        # A video query shows the frame of its best pair (or its start).
        at = q.matches[0].query_timestamp if q.matches else None
        at = at if at is not None else 0.0
        return [Tile(q.query, f"query @ {clock(at)}", query=True, at=at)]

    def match_tile(m: Match) -> Tile:
        when = "" if m.timestamp is None else f"  @ {clock(m.timestamp)}"
        return Tile(m.path, f"#{m.rank}  {m.score:.4f}{when}", at=m.timestamp)

    sections = [Section(q.query if q.kind == IMAGE else query_label(q),
                        [*query_tiles(q), *map(match_tile, q.matches)], note=q.error or "")
                for q in result.queries]
    Gallery(out, f"deepvision search: {len(result.queries)} queries, model {result.model}",
            sections).write()


def dupes_json(result: DupesResult) -> str:
    return json.dumps({
        "index": result.index, "model": result.model, "threshold": result.threshold,
        "groups": [{"group": i, "size": g.size,
                    "files": [{"path": m.path, "score": round(m.score, 6),
                               "timestamp": _seconds(m.timestamp)} for m in g.members]}
                   for i, g in enumerate(result.groups, 1)],
    }, indent=2)


def dupes_csv(result: DupesResult) -> str:
    rows: list[list[Any]] = [["group", "size", "path", "score", "timestamp"]]
    for i, g in enumerate(result.groups, 1):
        rows.extend([i, g.size, m.path, f"{m.score:.6f}", _csv_seconds(m.timestamp)]
                    for m in g.members)
    return csv_text(rows)


def print_dupes_table(result: DupesResult) -> None:
    out = stdout_console()
    if not result.groups:
        out.print(f"no near-duplicates above {result.threshold:g}")
    for i, g in enumerate(result.groups, 1):
        table = Table(title=f"group {i}: {g.size} files", title_justify="left",
                      show_edge=False, pad_edge=False)
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for m in g.members:
            when = "" if m.timestamp is None else f" @ {clock(m.timestamp)}"
            table.add_row(f"{m.score:.4f}", escape(display_path(m.path) + when))
        out.print(table)
        out.print()


def dupes_html(result: DupesResult, out: Path) -> None:
    from deepvision.output.html import Gallery, Section, Tile

    sections = [Section(f"group {i}: {g.size} files",
                        [Tile(m.path, f"{m.score:.4f}" + ("" if m.timestamp is None
                                                          else f"  @ {clock(m.timestamp)}"),
                              query=(j == 0), at=m.timestamp)
                         for j, m in enumerate(g.members)])
                for i, g in enumerate(result.groups, 1)]
    Gallery(out, f"deepvision dupes: {len(result.groups)} groups above {result.threshold:g}",
            sections).write()


def csv_text(rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 fields with \\n line ends. Python's writer leaves a bare \\r unquoted when the
    line end is \\n (a reader then splits the row), so such rows are written fully quoted.
    A name that is not UTF-8 appears with backslash escapes (CSV is text)."""
    buf = io.StringIO()
    minimal = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [_csv_cell(c) for c in row]
        (quoted if any("\r" in c for c in cells) else minimal).writerow(cells)
    return buf.getvalue()


def _csv_cell(value: Any) -> str:
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return safe_text(text)


def restructure_text(done: RestructureSummary) -> str:
    return (f"rebuilt {done.index_type} structure ({done.index_factory}) over {done.vectors} "
            f"stored vectors in {done.seconds:.1f} s, without the model")


def restructure_json(done: RestructureSummary) -> str:
    return json.dumps(asdict(done), indent=2)


def info_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def info_text(data: dict[str, Any]) -> str:
    """`info` as aligned `key: value` lines; folders one per line, then failures."""
    lines = []
    for key, value in data.items():
        if key == "failures":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "\n".join([""] + [f"{'':>18}{safe_text(str(v))}" for v in value]) \
                if value else "-"
        lines.append(f"{key:>16}: {value}")
    lines.extend(f"  {safe_text(f['path'])}: {f['reason']}: {safe_text(f['message'])}"
                 for f in data.get("failures", []))
    return "\n".join(lines)
