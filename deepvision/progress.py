"""How services report progress and diagnostics without knowing who listens.

Services take a `Reporter`; the CLI passes one that draws on the terminal (output/console.py),
a library caller or a test passes `Silent()` or its own. Nothing here imports rich.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Advance(Protocol):
    def __call__(self, n: int, frames: int = 0) -> None:
        """n more files done; `frames` of the vectors they gave were sampled video frames."""


class Reporter(Protocol):
    def info(self, message: str) -> None:
        """One line for the user (the model in use, a notice)."""

    def progress(self, total: int, label: str) -> AbstractContextManager[Advance]:
        """A unit of work with a known size; the context yields the function to advance it."""


class Silent:
    """A Reporter that says nothing."""

    def info(self, message: str) -> None:
        pass

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Advance]:
        yield _ignore


def _ignore(n: int, frames: int = 0) -> None:
    pass
