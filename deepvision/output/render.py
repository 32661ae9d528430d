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
    return (f"{', '.join(parts)}{tail}; embedded {s.embedded} in {s.seconds:.1f} s "
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
        doc: dict[str, Any] = {"rank": m.rank, "path": m.path, "score": round(m.score, 6)}
        if with_ids:
            doc["id"] = m.file_id
        return doc

    return {"index": result.index, "model": result.model,
            "queries": [{"query": q.query, "kind": q.kind, "error": q.error,
                         "matches": [match(m) for m in q.matches]} for q in result.queries]}


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
            table.add_row(str(m.rank), f"{m.score:.4f}", escape(display_path(m.path)))
        if not q.matches:
            table.add_row("-", "-", "no match above --min-score")
        out.print(table)
        out.print()


def query_label(q: QueryResult) -> str:
    """How a query is named on screen: its path, or the text in quotes."""
    return f"text {safe_text(q.query)!r}" if q.kind == TEXT else display_path(q.query)


def search_csv(result: SearchResult) -> str:
    """One row per match: query, rank, path, score, error, kind (a failed query gets one row)."""
    rows: list[list[Any]] = [["query", "rank", "path", "score", "error", "kind"]]
    for q in result.queries:
        if q.error:
            rows.append([q.query, "", "", "", q.error, q.kind])
        rows.extend([q.query, m.rank, m.path, f"{m.score:.6f}", "", q.kind] for m in q.matches)
    return csv_text(rows)


def search_html(result: SearchResult, out: Path) -> None:
    from deepvision.output.html import Gallery, Section, Tile

    sections = [
        Section(q.query if q.kind == IMAGE else query_label(q),
                [*([Tile(q.query, "query", query=True)] if q.kind == IMAGE else []),
                 *(Tile(m.path, f"#{m.rank}  {m.score:.4f}") for m in q.matches)],
                note=q.error or "")
        for q in result.queries
    ]
    Gallery(out, f"deepvision search: {len(result.queries)} queries, model {result.model}",
            sections).write()


def dupes_json(result: DupesResult) -> str:
    return json.dumps({
        "index": result.index, "model": result.model, "threshold": result.threshold,
        "groups": [{"group": i, "size": g.size,
                    "files": [{"path": m.path, "score": round(m.score, 6)} for m in g.members]}
                   for i, g in enumerate(result.groups, 1)],
    }, indent=2)


def dupes_csv(result: DupesResult) -> str:
    rows: list[list[Any]] = [["group", "size", "path", "score"]]
    for i, g in enumerate(result.groups, 1):
        rows.extend([i, g.size, m.path, f"{m.score:.6f}"] for m in g.members)
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
            table.add_row(f"{m.score:.4f}", escape(display_path(m.path)))
        out.print(table)
        out.print()


def dupes_html(result: DupesResult, out: Path) -> None:
    from deepvision.output.html import Gallery, Section, Tile

    sections = [Section(f"group {i}: {g.size} files",
                        [Tile(m.path, f"{m.score:.4f}", query=(j == 0))
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
