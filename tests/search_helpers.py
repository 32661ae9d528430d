"""Helpers for the stub-backbone search tests (query turns, query zoom): index a folder with a
stub model in-process, and read each query's first match through `search --format json`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def index_folder(cli: Callable, folder: Path, idx: Path, model: str) -> None:
    done = cli("index", folder, "--index-dir", idx, "--model", model, "--quiet",
               "--workers", "0")
    assert done.exit_code == 0, done.stderr


def first_matches(cli: Callable, queries: Path, idx: Path, *flags: str) -> dict[str, str]:
    """{query stem: stem of its first match} for every query file."""
    done = cli("search", queries, "--index-dir", idx, "--format", "json", "-k", "1",
               "--workers", "0", *flags)
    assert done.exit_code == 0, done.stderr
    return {Path(q["query"]).stem: Path(q["matches"][0]["path"]).stem
            for q in json.loads(done.stdout)["queries"]}
