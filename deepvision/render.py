"""Everything the user sees. Results go to stdout; progress and diagnostics go to stderr."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from deepvision.discover import Failure

if TYPE_CHECKING:
    from deepvision.dupes import DupesResult
    from deepvision.indexer import IndexSummary
    from deepvision.search import SearchResult


class Reporter:
    """Diagnostics on stderr. quiet: errors only (for cron)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(escape(message))

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}")

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Callable[[int], None]]:
        """A progress bar with counts and rate; a no-op when quiet or with nothing to do."""
        if self.quiet or total == 0:
            yield lambda n: None
            return
        columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} img/s"), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=self.err, transient=False) as bar:
            task = bar.add_task(label, total=total, rate="-")

            def advance(n: int) -> None:
                bar.advance(task, n)
                # Overall rate: rich's own speed estimate needs several updates to show anything.
                elapsed = bar.tasks[0].elapsed or 0.0
                done = bar.tasks[0].completed
                bar.update(task, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-")

            yield advance


def display_path(path: str) -> str:
    """Relative to the current folder when below it: easier to read in a terminal."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def failures_by_reason(failures: Sequence[Failure]) -> dict[str, list[Failure]]:
    groups: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        groups[f.reason].append(f)
    return dict(sorted(groups.items()))


def print_failures(rep: Reporter, failures: Sequence[Failure], what: str = "skipped") -> None:
    """Grouped by reason, each file by name: printed even with --quiet (they need action)."""
    for reason, group in failures_by_reason(failures).items():
        rep.err.print(f"[yellow]{what} ({reason}): {len(group)}[/]")
        for f in group:
            rep.err.print(f"  {escape(display_path(f.path))}: {escape(f.message)}")


def index_summary_text(s: IndexSummary) -> str:
    parts = [f"added {s.added}", f"updated {s.updated}", f"renamed {s.renamed}",
             f"removed {s.removed}", f"unchanged {s.unchanged}", f"failed {len(s.failures)}"]
    tail = f" ({s.still_failing} failing from earlier runs)" if s.still_failing else ""
    return (f"{', '.join(parts)}{tail}; embedded {s.embedded} in {s.seconds:.1f} s "
            f"({s.images_per_second:.1f} img/s); index holds {s.total_files} files")


def index_summary_json(s: IndexSummary) -> str:
    data = asdict(s)
    data["failures"] = [asdict(f) for f in s.failures]
    data["failed"] = len(s.failures)
    data["failed_by_reason"] = {r: len(g) for r, g in failures_by_reason(s.failures).items()}
    return json.dumps(data, indent=2)


def search_json(result: SearchResult) -> str:
    return json.dumps({
        "index": result.index,
        "model": result.model,
        "queries": [
            {"query": q.query, "error": q.error,
             "matches": [{"rank": m.rank, "path": m.path, "score": round(m.score, 6)}
                         for m in q.matches]}
            for q in result.queries
        ],
    }, indent=2)


def print_search_table(result: SearchResult) -> None:
    out = _stdout_console()
    for q in result.queries:
        title = escape(display_path(q.query))
        if q.error:
            out.print(f"[bold]{title}[/]: [red]{escape(q.error)}[/]")
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


def search_csv(result: SearchResult) -> str:
    """One row per match: query, rank, path, score, error (a failed query gets one row)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "rank", "path", "score", "error"])
    for q in result.queries:
        if q.error:
            w.writerow([q.query, "", "", "", q.error])
        for m in q.matches:
            w.writerow([q.query, m.rank, m.path, f"{m.score:.6f}", ""])
    return buf.getvalue()


def search_html(result: SearchResult, out: Path) -> None:
    from deepvision.html import Gallery, Section, Tile

    sections = [
        Section(q.query, [Tile(q.query, "query", query=True),
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
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["group", "size", "path", "score"])
    for i, g in enumerate(result.groups, 1):
        for m in g.members:
            w.writerow([i, g.size, m.path, f"{m.score:.6f}"])
    return buf.getvalue()


def print_dupes_table(result: DupesResult) -> None:
    out = _stdout_console()
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
    from deepvision.html import Gallery, Section, Tile

    sections = [Section(f"group {i}: {g.size} files",
                        [Tile(m.path, f"{m.score:.4f}", query=(j == 0))
                         for j, m in enumerate(g.members)])
                for i, g in enumerate(result.groups, 1)]
    Gallery(out, f"deepvision dupes: {len(result.groups)} groups above {result.threshold:g}",
            sections).write()


def _stdout_console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal:  # piped or captured: never fold a path across lines
        out = Console(highlight=False, width=100_000)
    return out
