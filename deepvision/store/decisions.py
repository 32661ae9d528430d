"""The review's decisions, in the catalog (version 5): what the user said about a group.

A decision is keyed by the group's id and by the content hashes of the members it was made on,
never by paths alone: a renamed or re-indexed file keeps its hash, so the decision still finds
it; a file that joins a decided group later has a hash the decision does not know, and the group
comes back as grown. Decisions are an append-only history (`seq`): the current decision of a
group is its latest row, and undoing the last decision deletes that row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from deepvision.store.catalog import Catalog, FileRow
from deepvision.store.manifest import now_iso

EXPORT_VERSION = 1


class Verdict(str, Enum):
    KEEP = "keep"
    NOT_DUPLICATES = "not-duplicates"
    LATER = "later"

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True, slots=True)
class DecidedFile:
    """A member as it was when the decision was made."""

    path: str
    hash: str
    size: int
    mtime_ns: int
    keep: bool = False


@dataclass(frozen=True)
class Decision:
    group_id: str
    verdict: Verdict
    hashes: tuple[str, ...]  # the members' content hashes it was made on, sorted, distinct
    files: tuple[DecidedFile, ...] = ()
    out: tuple[str, ...] = ()  # hashes taken out of the group ("not a duplicate of the rest")
    decided_at: str = field(default_factory=now_iso)
    seq: int = 0
    applied: str | None = None  # the journal that carried it out

    @property
    def kept_paths(self) -> set[str]:
        return {f.path for f in self.files if f.keep}

    @property
    def kept_hashes(self) -> set[str]:
        return {f.hash for f in self.files if f.keep}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.group_id, "verdict": self.verdict.value, "hashes": list(self.hashes),
                "files": [{"path": f.path, "hash": f.hash, "size": f.size,
                           "mtime_ns": f.mtime_ns, "keep": f.keep} for f in self.files],
                "out": list(self.out), "decided_at": self.decided_at, "applied": self.applied}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Decision:
        files = tuple(DecidedFile(str(f["path"]), str(f["hash"]), int(f["size"]),
                                  int(f["mtime_ns"]), bool(f.get("keep", False)))
                      for f in data.get("files", []))
        return Decision(str(data["id"]), Verdict(data["verdict"]),
                        tuple(sorted(set(map(str, data["hashes"])))), files,
                        tuple(map(str, data.get("out", []))),
                        str(data.get("decided_at") or now_iso()), 0, data.get("applied"))


class DecisionStore:
    """Decisions in one catalog. Reads work on any catalog (one a writer has not migrated yet
    holds no decisions); writes go inside the caller's `catalog.write()` (the writer's lock)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._db = catalog.db

    def available(self) -> bool:
        return "decisions" in self.catalog.table_names()

    def current(self) -> dict[str, Decision]:
        """The latest decision of every group, by group id."""
        if not self.available():
            return {}
        rows = self._db.execute(
            "SELECT d.* FROM decisions d JOIN (SELECT group_id, MAX(seq) AS seq FROM decisions "
            "GROUP BY group_id) m ON d.seq = m.seq ORDER BY d.seq")
        return {d.group_id: d for d in map(_decision, rows)}

    def history(self) -> list[Decision]:
        if not self.available():
            return []
        return [_decision(r) for r in self._db.execute("SELECT * FROM decisions ORDER BY seq")]

    def record(self, decision: Decision) -> Decision:
        """Append a decision (inside catalog.write()); it becomes the group's current one."""
        cur = self._db.execute(
            "INSERT INTO decisions (group_id, verdict, hashes, files, out, decided_at, applied) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (decision.group_id, decision.verdict.value, json.dumps(list(decision.hashes)),
             json.dumps([_file_list(f) for f in decision.files]), json.dumps(list(decision.out)),
             decision.decided_at, decision.applied))
        self._db.executemany("INSERT OR IGNORE INTO decision_hashes VALUES (?, ?)",
                             ((h, decision.group_id) for h in decision.hashes))
        return replace(decision, seq=int(cur.lastrowid or 0))

    def undo_last(self) -> Decision | None:
        """Forget the latest decision (inside catalog.write()); the group's earlier one, if
        any, is current again. Returns what was forgotten."""
        row = self._db.execute("SELECT * FROM decisions ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        gone = _decision(row)
        self._db.execute("DELETE FROM decisions WHERE seq = ?", (gone.seq,))
        self._db.execute("DELETE FROM decision_hashes WHERE group_id = ?", (gone.group_id,))
        for (hashes,) in self._db.execute("SELECT hashes FROM decisions WHERE group_id = ?",
                                          (gone.group_id,)).fetchall():
            self._db.executemany("INSERT OR IGNORE INTO decision_hashes VALUES (?, ?)",
                                 ((h, gone.group_id) for h in json.loads(hashes)))
        return gone

    def mark_applied(self, group_id: str, journal: str) -> None:
        self._db.execute("UPDATE decisions SET applied = ? WHERE seq = (SELECT MAX(seq) FROM "
                         "decisions WHERE group_id = ?)", (journal, group_id))

    def export(self) -> dict[str, Any]:
        """The current decisions as a JSON document (`dupes export`)."""
        return {"deepvision_decisions": EXPORT_VERSION,
                "decisions": [d.to_dict() for d in self.current().values()]}

    def import_(self, doc: dict[str, Any]) -> int:
        """Record every decision of an exported document (inside catalog.write())."""
        if doc.get("deepvision_decisions") != EXPORT_VERSION:
            raise ValueError("not a deepvision decisions export (version "
                             f"{EXPORT_VERSION} expected)")
        decisions = [Decision.from_dict(d) for d in doc.get("decisions", [])]
        for decision in decisions:
            self.record(decision)
        return len(decisions)


def _file_list(f: DecidedFile) -> list[Any]:
    return [f.path, f.hash, f.size, f.mtime_ns, f.keep]


def _decision(row: tuple[Any, ...]) -> Decision:
    seq, group_id, verdict, hashes, files, out, decided_at, applied = row
    return Decision(group_id, Verdict(verdict), tuple(json.loads(hashes)),
                    tuple(DecidedFile(p, h, int(s), int(m), bool(k))
                          for p, h, s, m, k in json.loads(files)),
                    tuple(json.loads(out)), decided_at, int(seq), applied)


def file_rows(catalog: Catalog, paths: Iterable[str]) -> dict[str, FileRow]:
    """The indexed (status ok) rows of `paths`."""
    uniq = sorted(set(paths))
    out: dict[str, FileRow] = {}
    for start in range(0, len(uniq), 500):  # sqlite's bound-parameter limit
        part = uniq[start:start + 500]
        marks = ",".join("?" * len(part))
        for row in catalog.db.execute(
                f"SELECT * FROM files WHERE status = 'ok' AND path IN ({marks})", part):
            out[row[0]] = FileRow(*row)
    return out


def rows_with_hashes(catalog: Catalog, hashes: Iterable[str]) -> list[FileRow]:
    """The indexed rows holding any of these contents, by path."""
    uniq = sorted(set(hashes))
    rows: list[FileRow] = []
    for start in range(0, len(uniq), 500):
        part = uniq[start:start + 500]
        marks = ",".join("?" * len(part))
        rows.extend(FileRow(*r) for r in catalog.db.execute(
            f"SELECT * FROM files WHERE status = 'ok' AND hash IN ({marks})", part))
    return sorted(rows, key=lambda r: r.path)


def carry_over(old: Catalog, new: Catalog) -> int:
    """Copy the decision history into a fresh catalog (`rebuild`): decisions are keyed by
    content, so they hold for the rebuilt index as they did for the old one. Inside
    new.write(); returns how many rows came over."""
    source = DecisionStore(old)
    history = source.history()
    target = DecisionStore(new)
    for d in history:
        target.record(d)
    return len(history)
