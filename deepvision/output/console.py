"""The terminal: a rich Reporter on stderr, and text made safe to print.

Results go to stdout (render.py); the model line, progress bars, summaries and errors go to
stderr. On a terminal every file name passes through `safe_text` first: a name may hold
terminal escape sequences (which would recolour or retitle the terminal) or bytes that are not
UTF-8. Results written to a file or a pipe carry each name exactly (`exact_stdout`), so that a
script reading them names files that exist.
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

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

from deepvision.progress import Advance
from deepvision.types import Failure

# C0 and C1 control characters and DEL: never sent to a terminal as they are.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """Control characters as \\xNN escapes, undecodable bytes (surrogate escapes) as \\xNN:
    what is printed is what the name contains, and nothing in it acts on the terminal."""
    if _has_surrogates(text):
        text = os.fsencode(text).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def display_path(path: str, exact: bool = False) -> str:
    """Relative to the current folder when below it (easier to read); safe to print unless
    exact (for a file or pipe: the name as it is)."""
    rel = os.path.relpath(path)
    shown = path if rel.startswith("..") else rel
    return shown if exact else safe_text(shown)


def shown_text(text: str, exact: bool) -> str:
    """A name in results: as it is for a file or pipe, escaped for a terminal."""
    return text if exact else safe_text(text)


def exact_stdout() -> bool:
    """Whether results go to a file or a pipe rather than a terminal: then they carry names
    exactly, and stdout writes a name that is not UTF-8 as its own bytes."""
    return not sys.stdout.isatty()


def write_out(text: str) -> None:
    """Results text on stdout as it is. Not click.echo: it strips ANSI sequences (parts of
    names) when stdout is not a terminal. Lone surrogates (undecodable bytes of a name) go
    out as the bytes they stand for."""
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        out.write(text)
    else:
        out.flush()
        buffer.write(text.encode("utf-8", "surrogateescape"))
    out.flush()


def markup(text: str) -> str:
    """Plain text for a rich markup string: safe, with its brackets escaped."""
    return escape(safe_text(text))


class ConsoleReporter:
    """Diagnostics and progress on stderr. quiet: errors only (for cron)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(markup(message))

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {markup(message)}")

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Advance]:
        """A progress bar with counts (files, and video frames once there are some) and rate;
        a no-op when quiet or with nothing to do."""
        if self.quiet or total == 0:
            yield _ignore
            return
        columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[frames]}{task.fields[rate]} files/s"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=self.err, transient=False) as bar:
            task = bar.add_task(label, total=total, rate="-", frames="")
            frames_done = 0

            def advance(n: int, frames: int = 0) -> None:
                nonlocal frames_done
                frames_done += frames
                bar.advance(task, n)
                # Overall rate: rich's own speed estimate needs several updates to show anything.
                elapsed = bar.tasks[0].elapsed or 0.0
                done = bar.tasks[0].completed
                bar.update(task, rate=f"{done / elapsed:.1f}" if elapsed > 0 else "-",
                           frames=f"{frames_done} video frames, " if frames_done else "")

            yield advance

    def failures(self, failures: Sequence[Failure], what: str = "skipped") -> None:
        """Grouped by reason, each file by name: printed even with --quiet (they need action)."""
        for reason, group in failures_by_reason(failures).items():
            self.err.print(f"[yellow]{what} ({reason}): {len(group)}[/]")
            for f in group:
                self.err.print(f"  {escape(display_path(f.path))}: {markup(f.message)}")


def _ignore(n: int, frames: int = 0) -> None:
    pass


def failures_by_reason(failures: Sequence[Failure]) -> dict[str, list[Failure]]:
    groups: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        groups[str(f.reason)].append(f)
    return dict(sorted(groups.items()))


def stdout_console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal:  # piped or captured: never fold a path across lines
        out = Console(highlight=False, width=100_000)
    return out
