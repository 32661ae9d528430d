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
    shown_text,
    stdout_console,
    write_out,
)
from deepvision.output.html import Gallery, Section, Thumbnails, Tile
from deepvision.services.dupes import DupesResult, Group, Member
from deepvision.services.search import IMAGE, TEXT, QueryResult, SearchResult
from deepvision.services.sync import IndexSummary, RestructureSummary
from deepvision.types import Match


def index_summary_text(s: IndexSummary) -> str:
    parts = [f"added {s.added}", f"updated {s.updated}", f"renamed {s.renamed}",
             f"removed {s.removed}", f"unchanged {s.unchanged}", f"failed {len(s.failures)}"]
    tail = f" ({s.still_failing} failing from earlier runs)" if s.still_failing else ""
    frames = f" ({s.frames_embedded} video frames)" if s.frames_embedded else ""
    embedded = f"embedded {s.embedded}{frames}"
    if s.embed_seconds:  # the rate the progress bar showed: files through the network per s
        embedded += f" in {s.embed_seconds:.1f} s ({s.files_per_second:.1f} files/s)"
    return (f"{', '.join(parts)}{tail}; {embedded}; {s.seconds:.1f} s in all; index holds "
            f"{s.total_files} files")


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


def print_search_table(result: SearchResult, exact: bool = False) -> None:
    """Rank, score and path per match; exact (a file or pipe): plain text with the names as
    they are, else a rich table with the names escaped."""
    if exact:
        write_out("".join(_plain_search(q) for q in result.queries))
        return
    out = stdout_console()
    for q in result.queries:
        title = escape(query_label(q))
        if q.error:
            out.print(f"[bold]{title}[/]: [red]{markup(q.error)}[/]")
            continue
        table = Table(title=f"{title}  ({match_count(q)})", title_justify="left",
                      show_edge=False, pad_edge=False)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("match")
        table.add_column("path", overflow="fold")
        for m in q.matches:
            table.add_row(str(m.rank), f"{m.score:.4f}", match_mark(m),
                          escape(at_time(display_path(m.path), m)))
        if not q.matches:
            table.add_row("-", "-", "no match above --min-score")
        out.print(table)
        out.print()


def _plain_search(q: QueryResult) -> str:
    title = query_label(q, exact=True)
    if q.error:
        return f"{title}: {q.error}\n"
    rows = [[str(m.rank), f"{m.score:.4f}", match_mark(m),
             at_time(display_path(m.path, exact=True), m)]
            for m in q.matches] or [["-", "-", "", "no match above --min-score"]]
    return plain_table(f"{title}  ({match_count(q)})", ["rank", "score", "match", "path"], rows)


def match_count(q: QueryResult) -> str:
    """'2 matches, 8 other similar images': the line between copies and the rest."""
    n = sum(m.match for m in q.matches)
    return f"{n} match{'es' if n != 1 else ''}, {len(q.matches) - n} other similar"


def plain_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table for a file or a pipe, laid out as the terminal's: columns right-aligned but the
    last (a name, written as it is: never padded, folded or escaped)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: Sequence[str]) -> str:
        return " │ ".join([*(c.rjust(w) for c, w in zip(cells, widths, strict=False)), cells[-1]])

    rule = "━╇━".join("━" * w for w in [*widths, len(header[-1])])
    return "\n".join([title, line(header), rule, *map(line, rows)]) + "\n\n"


def query_label(q: QueryResult, exact: bool = False) -> str:
    """How a query is named: its path, or the text in quotes."""
    if q.kind == TEXT:
        return f"text {shown_text(q.query, exact)!r}"
    return display_path(q.query, exact)


def search_csv(result: SearchResult, exact: bool = True) -> str:
    """One row per match: query, rank, path, score, error, kind, then the video times in
    seconds (empty for images) of the matched frame and of the query frame (a failed query gets
    one row). exact: names as they are (for a file or pipe), else escaped (a terminal)."""
    rows: list[list[Any]] = [["query", "rank", "path", "score", "error", "kind", "timestamp",
                              "query_timestamp"]]
    for q in result.queries:
        if q.error:
            rows.append([q.query, "", "", "", q.error, q.kind, "", ""])
        rows.extend([q.query, m.rank, m.path, f"{m.score:.6f}", "", q.kind,
                     _csv_seconds(m.timestamp), _csv_seconds(m.query_timestamp)]
                    for m in q.matches)
    return csv_text(rows, exact)


def _csv_seconds(t: float | None) -> str:
    return "" if t is None else f"{t:.3f}"


def match_mark(m: Match) -> str:
    """How a result row says it is a match: a verified copy, a copy by its score alone, or
    nothing (another similar image)."""
    if m.verified:
        return "✓ verified"
    return "match" if m.match else ""


def search_html(result: SearchResult, out: Path, thumbnails: Thumbnails) -> None:
    """The gallery of a search: each query, then its matches (the verified box drawn)."""
    def query_tiles(q: Any) -> list[Tile]:
        if q.kind != IMAGE:
            return []
        if not thumbnails.is_video(q.query):
            # where the first verified match sits in the query
            first = next((m.verification for m in q.matches if m.verification), None)
            return [Tile(q.query, "query", query=True,
                         box=first.query_box if first is not None else None)]
        # A video query shows the frame of its best pair (or its start).
        at = q.matches[0].query_timestamp if q.matches else None
        at = at if at is not None else 0.0
        return [Tile(q.query, f"query @ {clock(at)}", query=True, at=at)]

    def match_tile(m: Match) -> Tile:
        when = "" if m.timestamp is None else f"  @ {clock(m.timestamp)}"
        mark = match_mark(m)
        return Tile(m.path, f"#{m.rank}  {m.score:.4f}{when}" + (f"  {mark}" if mark else ""),
                    at=m.timestamp, match=m.match,
                    box=m.verification.match_box if m.verification else None)

    sections = [Section(q.query if q.kind == IMAGE else query_label(q),
                        [*query_tiles(q), *map(match_tile, q.matches)], note=q.error or "")
                for q in result.queries]
    Gallery(out, f"deepvision search: {len(result.queries)} queries, model {result.model}",
            sections).write(thumbnails)


def dupes_json(result: DupesResult) -> str:
    return json.dumps({
        "index": result.index, "model": result.model, "threshold": result.threshold,
        "similar": result.similar,
        "hidden": result.hidden, "keep_rules": list(result.keep_rules),
        "groups": [{"group": i, "id": g.id, "state": g.state, "keeper": g.keeper,
                    "new_members": list(g.new_members), "size": g.size, "tier": str(g.tier),
                    "files": [{"path": m.path, "score": round(m.score, 6),
                               "timestamp": _seconds(m.timestamp), "kind": str(m.kind)}
                              for m in g.members]}
                   for i, g in enumerate(result.groups, 1)],
    }, indent=2)


def dupes_csv(result: DupesResult, exact: bool = True) -> str:
    rows: list[list[Any]] = [["group", "size", "path", "score", "timestamp", "id", "state",
                              "keeper", "kind"]]
    for i, g in enumerate(result.groups, 1):
        rows.extend([i, g.size, m.path, f"{m.score:.6f}", _csv_seconds(m.timestamp), g.id,
                     g.state, "yes" if m.path == g.keeper else "", m.kind] for m in g.members)
    return csv_text(rows, exact)


def print_dupes_table(result: DupesResult, exact: bool = False) -> None:
    """Each group's files with their scores; exact as in print_search_table."""
    if exact:
        write_out(_plain_dupes(result))
        return
    out = stdout_console()
    if not result.groups:
        out.print(f"no near-duplicates above {result.threshold:g}")
    for i, g in enumerate(result.groups, 1):
        table = Table(title=_group_title(i, g), title_justify="left", show_edge=False,
                      pad_edge=False)
        table.add_column("score", justify="right")
        table.add_column("kind")
        table.add_column("keep")
        table.add_column("path", overflow="fold")
        for m in g.members:
            when = "" if m.timestamp is None else f" @ {clock(m.timestamp)}"
            table.add_row(f"{m.score:.4f}", str(m.kind), _keep_mark(g, m),
                          escape(display_path(m.path) + when))
        out.print(table)
        out.print()
    if result.hidden:
        out.print(f"{result.hidden} resolved group(s) not shown (--all shows them)")


def _group_title(i: int, g: Group) -> str:
    grown = f", {len(g.new_members)} new since the decision" if g.new_members else ""
    return f"group {i} [{g.id}] {g.state}{grown}: {g.size} files ({g.tier})"


def _keep_mark(g: Group, m: Member) -> str:
    return "keep" if m.path == g.keeper else ("new" if m.path in g.new_members else "")


def _plain_dupes(result: DupesResult) -> str:
    if not result.groups:
        text = f"no near-duplicates above {result.threshold:g}\n"
    else:
        text = "".join(plain_table(
            _group_title(i, g), ["score", "kind", "keep", "path"],
            [[f"{m.score:.4f}", str(m.kind), _keep_mark(g, m),
              display_path(m.path, exact=True) + (
                  "" if m.timestamp is None else f" @ {clock(m.timestamp)}")]
             for m in g.members])
            for i, g in enumerate(result.groups, 1))
    hidden = (f"{result.hidden} resolved group(s) not shown (--all shows them)\n"
              if result.hidden else "")
    return text + hidden


def dupes_html(result: DupesResult, out: Path, thumbnails: Thumbnails) -> None:
    """The gallery of dupes: one section per group, its keeper marked."""
    def caption(g: Group, m: Member) -> str:
        when = "" if m.timestamp is None else f"  @ {clock(m.timestamp)}"
        return f"{m.kind}  {m.score:.4f}{when}" + ("  keep" if m.path == g.keeper else "")

    sections = [Section(f"group {i} [{g.id}] {g.state}: {g.size} files, {g.tier}",
                        [Tile(m.path, caption(g, m), query=(m.path == g.keeper), at=m.timestamp)
                         for m in g.members])
                for i, g in enumerate(result.groups, 1)]
    Gallery(out, f"deepvision dupes: {len(result.groups)} groups above {result.threshold:g}",
            sections).write(thumbnails)


def csv_text(rows: Sequence[Sequence[Any]], exact: bool = True) -> str:
    """RFC 4180 fields with \\n line ends. Python's writer leaves a bare \\r unquoted when the
    line end is \\n (a reader then splits the row), so such rows are written fully quoted.
    exact: every field as it is (a name that is not UTF-8 keeps its bytes, as surrogate
    escapes that write_out turns back into them); else escaped for a terminal."""
    buf = io.StringIO()
    minimal = csv.writer(buf, lineterminator="\n")
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        cells = [shown_text(str(c), exact) for c in row]
        (quoted if any("\r" in c for c in cells) else minimal).writerow(cells)
    return buf.getvalue()


def restructure_text(done: RestructureSummary) -> str:
    note = f"; {done.note}" if done.note else ""
    return (f"rebuilt {done.index_type} structure ({done.index_factory}) over {done.vectors} "
            f"stored vectors in {done.seconds:.1f} s, without the model{note}")


def restructure_json(done: RestructureSummary) -> str:
    return json.dumps(asdict(done), indent=2)


def info_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


def info_text(data: dict[str, Any], exact: bool = False) -> str:
    """`info` as aligned `key: value` lines; folders one per line, then failures. A key with
    no value (no descriptor note) is left out rather than shown as None. Names as they are
    when exact (a file or pipe), else escaped."""
    shown = {k: v for k, v in data.items() if k != "failures" and v is not None}
    width = max(map(len, shown))
    lines = []
    for key, value in shown.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = "\n".join([""] + [" " * (width + 2) + shown_text(str(v), exact)
                                      for v in value]) if value else "-"
        lines.append(f"{key:>{width}}: {value}")
    lines.extend(f"  {shown_text(f['path'], exact)}: {f['reason']}: "
                 f"{shown_text(f['message'], exact)}" for f in data.get("failures", []))
    return "\n".join(lines)
