"""Local-feature evidence of indexed pictures, kept beside the index: one sqlite file.

    indexes/<name>/local-features.sqlite   content hash -> Evidence bytes (features.Evidence)

A cache of what the files hold, keyed like the catalog's vectors by content hash (a rename or
a byte-identical copy shares it, a rebuild keeps it) and stamped with FEATURE_VERSION (another
version's rows are recomputed). `index` fills it for new pictures; a search fills what is
missing from the files themselves, so an index made before verification existed works as it
is. Losing the file loses nothing: it is recomputed. Readers and writers may be several
processes (a cron `index`, a `serve`): sqlite's WAL lets them share it, and a writer that
cannot write (a read-only index folder) keeps its results in memory for the process.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from deepvision.match.features import FEATURE_VERSION, Evidence

FILE = "local-features.sqlite"
SCHEMA = ("CREATE TABLE IF NOT EXISTS evidence (hash TEXT PRIMARY KEY, version INTEGER NOT "
          "NULL, data BLOB NOT NULL)")
MEMORY_LIMIT = 4096  # evidence held per process when the file cannot be written


class FeatureStore:
    """Evidence by content hash. Thread-safe: one connection, used under a lock."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / FILE
        self._lock = threading.Lock()
        self._memory: dict[str, Evidence] = {}
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
        except sqlite3.Error:  # a read-only folder, a damaged file: work from memory
            self._db = None

    def get(self, hashes: Iterable[str]) -> dict[str, Evidence]:
        wanted = sorted(set(hashes))
        out = {h: self._memory[h] for h in wanted if h in self._memory}
        todo = [h for h in wanted if h not in out]
        if self._db is None or not todo:
            return out
        with self._lock:
            for start in range(0, len(todo), 500):
                part = todo[start:start + 500]
                rows = self._read(part)
                out.update((h, Evidence.from_bytes(d)) for h, v, d in rows
                           if v == FEATURE_VERSION)
        return out

    def _read(self, part: list[str]) -> list[tuple[str, int, bytes]]:
        assert self._db is not None
        try:
            return self._db.execute(
                f"SELECT hash, version, data FROM evidence WHERE hash IN "
                f"({','.join('?' * len(part))})", part).fetchall()
        except sqlite3.Error:  # damaged: recomputed from the files
            return []

    def put(self, items: dict[str, Evidence]) -> None:
        if not items:
            return
        rows = [(h, FEATURE_VERSION, e.to_bytes()) for h, e in items.items()]
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.executemany("INSERT OR REPLACE INTO evidence VALUES (?, ?, ?)",
                                         rows)
                    self._db.execute("COMMIT")
                    return
                except sqlite3.Error:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
            if len(self._memory) < MEMORY_LIMIT:
                self._memory.update(items)

    def missing(self, hashes: Iterable[str]) -> list[str]:
        """The hashes with no evidence of this FEATURE_VERSION (keys only: nothing decoded)."""
        wanted = sorted(set(hashes))
        if self._db is None:
            return [h for h in wanted if h not in self._memory]
        have: set[str] = set()
        with self._lock:
            for start in range(0, len(wanted), 500):
                part = wanted[start:start + 500]
                try:
                    have.update(h for (h,) in self._db.execute(
                        f"SELECT hash FROM evidence WHERE version = ? AND hash IN "
                        f"({','.join('?' * len(part))})", [FEATURE_VERSION, *part]))
                except sqlite3.Error:
                    break
        return [h for h in wanted if h not in have]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
