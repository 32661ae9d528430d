"""`--help` that reads well in an 80-column terminal.

The CLI uses Click's plain help layout (Typer's rich one boxes three columns and cuts option
names and words with "…" at 80 columns). Click wraps the option texts with textwrap, which
also breaks at hyphens: `efficientnet-` / `lite0`, `--allow-mass-` / `delete`. The command
classes here wrap at spaces only, so every name can be read (and copied) whole.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

from typer.core import TyperCommand, TyperGroup

_BaseContext = TyperCommand.context_class  # Click's Context (Typer ships its own copy)
_BaseFormatter = _BaseContext.formatter_class


class HelpFormatter(_BaseFormatter):  # type: ignore[misc,valid-type]
    """Click's definition lists (options, commands), wrapped at spaces only."""

    def write_dl(self, rows: Sequence[tuple[str, str]], col_max: int = 30,
                 col_spacing: int = 2) -> None:
        rows = list(rows)
        first = min(max((len(term) for term, _ in rows), default=0), col_max)
        indent = self.current_indent + first + col_spacing
        wrap = textwrap.TextWrapper(max(self.width - indent, 20), break_on_hyphens=False,
                                    break_long_words=False)
        for term, text in rows:
            lines = wrap.wrap(text)
            head = " " * self.current_indent + term
            if lines and len(term) <= first:  # the text starts beside its option
                head = head.ljust(indent) + lines.pop(0)
            self.write(head.rstrip() + "\n")
            for line in lines:
                self.write(" " * indent + line + "\n")


class _Context(_BaseContext):  # type: ignore[misc,valid-type]
    formatter_class = HelpFormatter


class Command(TyperCommand):
    context_class = _Context

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """Arguments, then options, as Typer lists them, without Typer's type placeholder
        after an argument's name (`DIR <list[Path]>`): its help says what it takes."""
        sections: dict[str, list[tuple[str, str]]] = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name in sections:
                term, text = record
                if param.param_type_name == "argument":
                    term = term.split(" <")[0] + ("..." if param.nargs != 1 else "")
                sections[param.param_type_name].append((term, text))
        for title, rows in (("Arguments", sections["argument"]),
                            ("Options", sections["option"])):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class Group(TyperGroup):
    context_class = _Context
