"""The apply journal: what `dupes apply` is about to do, written before it does it.

One file per run, `<index>/journals/apply-<time>.jsonl`. Its first line is the whole plan (every
step, with the file's size, mtime, mode and content hash as checked), written atomically
(atomic.py) before the first file is touched. Each step then appends `begun` before it touches
its file and `done` after the file and the catalog are updated; `undo` appends `undone`. A line
is appended with one write and fsynced, so after a kill -9 the journal ends with a whole line
(a torn last line, which only a power cut could leave, is ignored). A step left `begun` is
settled by looking at the disk: every action can tell from the file itself whether it happened.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepvision.atomic import atomic_write_text
from deepvision.errors import UsageError

JOURNALS = "journals"
VERSION = 1
PENDING, BEGUN, DONE, UNDONE = "pending", "begun", "done", "undone"
SKIPPED = "skipped"  # not touched: the file changed since it was checked
FAILED = "failed"  # begun, then an error: undo settles it from the disk
TOUCHED = (BEGUN, DONE, FAILED)  # the steps undo looks at
FINISHED, REVERTED = "finished", "reverted"  # the journal as a whole


@dataclass(frozen=True)
class Step:
    """One file acted on, and the keeper it gives way to."""

    i: int
    group: str
    path: str
    hash: str
    size: int
    mtime_ns: int
    mode: int
    keeper: str
    keeper_hash: str
    dest: str | None = None  # move-to: its new place; else where a non-identical copy is kept

    @property
    def exact(self) -> bool:
        """Byte-identical to the keeper: undo can recreate it from the keeper's bytes."""
        return self.hash == self.keeper_hash


@dataclass
class Journal:
    path: Path
    action: str
    target: str | None
    steps: list[Step]
    states: dict[int, str]
    dests: dict[int, str]  # where a step's file went (trash: found after the move)
    whole: str | None = None  # finished / reverted

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def files_dir(self) -> Path:
        """Where non-identical copies wait (hardlink, symlink, delete) so undo can restore."""
        return self.path.with_suffix(".files")

    def state(self, i: int) -> str:
        return self.states.get(i, PENDING)

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)  # one write: a kill leaves the line whole or absent
            os.fsync(fd)
        finally:
            os.close(fd)
        self._note(record)

    def mark(self, step: Step, state: str, **extra: Any) -> None:
        self.append({"i": step.i, "state": state, **extra})

    def _note(self, record: dict[str, Any]) -> None:
        if "i" in record:
            self.states[int(record["i"])] = str(record["state"])
            if record.get("dest"):
                self.dests[int(record["i"])] = str(record["dest"])
        elif record.get("journal") in (FINISHED, REVERTED):
            self.whole = str(record["journal"])


def journal_dir(index_dir: Path) -> Path:
    return index_dir / JOURNALS


def new_path(index_dir: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    return journal_dir(index_dir) / f"apply-{stamp}.jsonl"


def create(path: Path, action: str, target: str | None, steps: list[Step]) -> Journal:
    """Write the plan (atomically) before anything is touched."""
    index_dir = path.parent.parent
    path.parent.mkdir(exist_ok=True)
    head = {"deepvision_journal": VERSION, "action": action, "target": target,
            "index": str(index_dir), "steps": [asdict(s) for s in steps]}
    atomic_write_text(path, json.dumps(head) + "\n")
    journal = Journal(path, action, target, steps, {}, {})
    for s in steps:
        if s.dest and action != "move-to":
            journal.files_dir.mkdir(exist_ok=True)
            break
    return journal


def load(path: Path) -> Journal:
    try:
        lines = path.read_bytes().split(b"\n")
        head = json.loads(lines[0])
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read journal {path}: {exc}") from None
    if head.get("deepvision_journal") != VERSION:
        raise UsageError(f"{path} is not a deepvision apply journal")
    journal = Journal(path, head["action"], head.get("target"),
                      [Step(**s) for s in head["steps"]], {}, {})
    for raw in lines[1:]:
        try:
            journal._note(json.loads(raw))
        except ValueError:
            continue  # empty, or torn by a power cut: the step is settled from the disk
    return journal


def journals(index_dir: Path) -> list[Path]:
    """This index's journals, oldest first (the names sort by time)."""
    folder = journal_dir(index_dir)
    return sorted(folder.glob("apply-*.jsonl")) if folder.is_dir() else []


def unfinished(index_dir: Path) -> list[Journal]:
    return [j for j in map(load, journals(index_dir)) if j.whole is None]
