"""`dupes apply` and `dupes undo`: carry out the keep decisions on the files, journaled, with the
index's catalog updated in the same run through the IndexStore writer.

Safety rules, each checked where it can still stop the step:
- a file is touched only if its size, mtime and content hash are still what the catalog (and
  the decision) recorded; otherwise it is skipped with a message;
- a group's keeper must be there, unchanged, or nothing of that group is touched, so the last
  member is never removed; a file kept by one decision is never removed by another;
- hardlinks across filesystems are refused before anything starts;
- every step is journaled (journal.py) before it touches a file; a rerun first completes an
  interrupted journal, and `undo` puts back what a journal did, whether it finished or not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepvision.errors import NotFoundError, PlanChangedError, UsageError
from deepvision.services import fileops, journal
from deepvision.services.dupes import DEFAULT_THRESHOLD
from deepvision.services.fileops import REMOVING, StepError
from deepvision.services.journal import Journal, Step
from deepvision.services.review import (
    NEW,
    DecideRequest,
    build_decision,
    reviewed_groups,
)
from deepvision.store.catalog import Catalog, FileRow
from deepvision.store.decisions import Decision, DecisionStore, Verdict, rows_with_hashes
from deepvision.store.indexstore import IndexStore, Writer


@dataclass(frozen=True)
class ApplyRequest:
    action: str
    target: Path | None = None  # move-to DIR
    rules: tuple[str, ...] = ()  # --keep: first decide the undecided groups by these rules
    dry_run: bool = False
    threshold: float = DEFAULT_THRESHOLD
    wait: bool = False
    # Apply only if the plan is still the one a dry run showed (its plan_digest); else
    # PlanChangedError, before anything changes.
    expect_plan: str | None = None


@dataclass
class ApplyReport:
    action: str
    dry_run: bool
    steps: list[Step] = field(default_factory=list)
    done: int = 0  # of steps
    skipped: list[str] = field(default_factory=list)  # why a file was left alone
    journal: str | None = None
    resumed: list[str] = field(default_factory=list)  # interrupted journals completed first
    resumed_done: int = 0  # their steps done by this run
    decided: int = 0  # groups decided by the --keep rules


@dataclass
class UndoReport:
    journal: str
    restored: int = 0
    reindex: list[str] = field(default_factory=list)  # restored, but their vectors were dropped
    problems: list[str] = field(default_factory=list)


def check_request(req: ApplyRequest) -> None:
    """Before any work: a known action, and move-to's folder."""
    if req.action not in fileops.ACTIONS:
        raise UsageError(f"--action {req.action!r}: one of {', '.join(fileops.ACTIONS)}")
    if (req.action == "move-to") != (req.target is not None):
        raise UsageError("--action move-to takes a folder (--to DIR), the others none")


# ---- planning --------------------------------------------------------------------------------


def plan(catalog: Catalog, decisions: Iterable[Decision], req: ApplyRequest,
         backup_dir: Path | None) -> tuple[list[Step], list[str]]:
    """The steps the keep decisions call for, each file checked against the disk now."""
    steps: list[Step] = []
    skipped: list[str] = []
    groups = []
    for d in decisions:
        if d.verdict is Verdict.KEEP:
            members = rows_with_hashes(catalog, set(d.hashes) - set(d.out))
            groups.append((d, members, _keepers(d, members)))
    # A file some decision keeps is never removed by another (groups that grew into each other).
    keepers = {r.path for _, _, kept in groups for r in kept}
    removed: set[str] = set()
    for d, members, kept in groups:
        problem = _keeper_problem(d, kept)
        if problem:
            skipped.append(problem)
            continue
        for row in members:
            if row in kept or row.path in removed:
                continue
            if row.path in keepers:
                skipped.append(f"{row.path}: kept by another decision; left alone")
                continue
            keeper = next((k for k in kept if k.hash == row.hash), kept[0])
            step, why = _step(len(steps), d, row, keeper, req, backup_dir)
            if why:
                skipped.append(why)
            elif step is not None:
                steps.append(step)
                removed.add(row.path)
    return steps, skipped


def _keepers(d: Decision, members: list[FileRow]) -> list[FileRow]:
    """The kept members: by path, or (renamed since) one file per kept content."""
    by_path = [r for r in members if r.path in d.kept_paths]
    found = {r.hash for r in by_path}
    for row in members:
        if row.hash in d.kept_hashes and row.hash not in found:
            by_path.append(row)
            found.add(row.hash)
    return by_path


def _keeper_problem(d: Decision, kept: list[FileRow]) -> str | None:
    if not kept:
        return f"group {d.group_id}: no kept file is left; nothing of it is touched"
    for row in kept:
        if not fileops.untouched(row.path, row.size, row.mtime_ns) \
                or fileops.content_hash(row.path) != row.hash:
            return (f"group {d.group_id}: its keeper {row.path} changed or is gone since it "
                    "was indexed; nothing of the group is touched (run `deepvision index`, "
                    "then review it again)")
    return None


def _step(i: int, d: Decision, row: FileRow, keeper: FileRow, req: ApplyRequest,
          backup_dir: Path | None) -> tuple[Step | None, str | None]:
    if req.action in ("hardlink", "symlink") and fileops.linked(
            _bare(row, keeper), req.action):
        return None, None  # done by an earlier apply
    decided = next((f for f in d.files if f.path == row.path), None)
    if decided is not None and (decided.size, decided.mtime_ns) != (row.size, row.mtime_ns):
        return None, f"{row.path}: changed since the decision; skipped"
    try:
        st = os.lstat(row.path)
    except OSError:
        return None, f"{row.path}: gone since it was indexed; skipped"
    if not fileops.untouched(row.path, row.size, row.mtime_ns) \
            or fileops.content_hash(row.path) != row.hash:
        return None, (f"{row.path}: changed since it was indexed (size, mtime or content); "
                      "skipped")
    return Step(i, d.group_id, row.path, str(row.hash), row.size, row.mtime_ns, st.st_mode,
                keeper.path, str(keeper.hash), _dest(i, row, keeper, req, backup_dir)), None


def _bare(row: FileRow, keeper: FileRow) -> Step:
    return Step(0, "", row.path, str(row.hash), row.size, row.mtime_ns, 0, keeper.path,
                str(keeper.hash))


def _dest(i: int, row: FileRow, keeper: FileRow, req: ApplyRequest,
          backup_dir: Path | None) -> str | None:
    if req.action == "move-to":
        assert req.target is not None  # mirrors the absolute path: no two files collide
        return os.path.join(os.path.abspath(req.target), row.path.lstrip("/"))
    if req.action == "trash" or row.hash == keeper.hash or backup_dir is None:
        return None
    return str(backup_dir / f"{i}-{os.path.basename(row.path)}")


def _cross_filesystem(steps: Sequence[Step]) -> None:
    far = [s for s in steps if not fileops.same_filesystem(s.path, s.keeper)]
    if far:
        raise UsageError(
            f"cannot hardlink {far[0].path} to its keeper {far[0].keeper}: they are on "
            f"different filesystems, and a hardlink cannot cross them ({len(far)} such "
            "file(s)); no file was changed: use --action symlink or move-to")


# ---- running ---------------------------------------------------------------------------------


def apply_decisions(store: IndexStore, req: ApplyRequest) -> ApplyReport:
    """`dupes apply`: complete interrupted journals, then carry out the keep decisions."""
    check_request(req)
    proposed = _proposals(store, req) if req.rules else []
    report = ApplyReport(req.action, req.dry_run, decided=len(proposed))
    if req.dry_run:
        with store.open_read() as snap:
            report.steps, report.skipped, report.resumed = _dry(snap.catalog, store, proposed,
                                                                req)
        return report
    with store.open_write(req.wait) as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        if req.expect_plan is not None:  # under the lock: nothing can change it in between
            steps, _, resumed = _dry(catalog, store, proposed, req)
            if plan_digest(req.action, resumed, steps) != req.expect_plan:
                raise PlanChangedError("the files or decisions changed since the dry run: "
                                       "look at the new dry run before applying")
        decisions = DecisionStore(catalog)
        with catalog.write():
            for d in proposed:
                decisions.record(d)
        _resume(writer, catalog, store, report)
        path = journal.new_path(store.dir)
        steps, report.skipped = plan(catalog, decisions.current().values(), req,
                                     path.with_suffix(".files"))
        if req.action == "hardlink":
            _cross_filesystem(steps)
        report.steps = steps
        if steps:
            done = journal.create(path, req.action, _target(req), steps)
            report.journal = str(done.path)
            report.done = run_journal(writer, catalog, done, report, recheck=False)
            _mark_applied(catalog, steps, done.name)
        writer.finish()
    return report


def _dry(catalog: Catalog, store: IndexStore, proposed: list[Decision], req: ApplyRequest
         ) -> tuple[list[Step], list[str], list[str]]:
    """What a run would do on this catalog: its steps, what it leaves alone and why, and the
    interrupted journals it would complete first."""
    current = DecisionStore(catalog).current()
    current.update({d.group_id: d for d in proposed})
    steps, skipped = plan(catalog, current.values(), req, None)
    return steps, skipped, [j.name for j in journal.unfinished(store.dir)]


def plan_digest(action: str, resumed: Sequence[str], steps: Sequence[Step]) -> str:
    """A digest of what a run does: the files, their contents and their keepers (not where a
    non-identical copy is kept for undo, which only the real run names). The review page
    shows a dry run and applies only with its digest (ApplyRequest.expect_plan)."""
    rows = [(s.group, s.path, s.hash, s.keeper, s.keeper_hash) for s in steps]
    text = json.dumps([action, list(resumed), rows], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _resume(writer: Writer, catalog: Catalog, store: IndexStore, report: ApplyReport) -> None:
    """Complete the journals a killed apply left; one a killed undo left is undo's to finish
    (completing it would redo what the user asked to take back)."""
    for old in journal.unfinished(store.dir):
        if any(s == journal.UNDONE for s in old.states.values()):
            report.skipped.append(f"journal {old.path} was being undone when it stopped; "
                                  f"finish that with: deepvision dupes undo {old.path}")
            continue
        report.resumed_done += run_journal(writer, catalog, old, report, recheck=True)
        report.resumed.append(old.name)


def _target(req: ApplyRequest) -> str | None:
    return os.path.abspath(req.target) if req.target is not None else None


def _proposals(store: IndexStore, req: ApplyRequest) -> list[Decision]:
    """Keep decisions for the groups nobody decided yet, by the --keep rules."""
    _, groups = reviewed_groups(store, req.threshold, req.rules)
    return [build_decision(r, DecideRequest(r.group.id, Verdict.KEEP, (r.group.keeper,)))
            for r in groups if r.group.state == NEW and r.group.keeper]


def _mark_applied(catalog: Catalog, steps: Sequence[Step], name: str) -> None:
    with catalog.write():
        decisions = DecisionStore(catalog)
        for group in sorted({s.group for s in steps}):
            decisions.mark_applied(group, name)


def run_journal(writer: Writer, catalog: Catalog, j: Journal, report: ApplyReport,
                recheck: bool) -> int:
    """Every step not done yet; recheck: a resumed journal's pending files are hashed again
    (time has passed since its plan). Returns how many steps this call did."""
    done = 0
    for step in j.steps:
        state = j.state(step.i)
        if state in (journal.DONE, journal.SKIPPED, journal.UNDONE):
            continue
        if state == journal.PENDING:
            why = _changed(step, recheck)
            if why:
                j.mark(step, journal.SKIPPED, message=why)
                report.skipped.append(why)
                continue
            j.mark(step, journal.BEGUN)
        try:
            dest = fileops.do(j, step)
        except (StepError, OSError) as exc:
            j.mark(step, journal.FAILED, message=str(exc))
            report.skipped.append(f"{step.path}: {exc}")
            continue
        _catalog_after(writer, catalog, step, j.action)
        j.mark(step, journal.DONE, dest=dest)
        done += 1
    j.append({"journal": journal.FINISHED})
    return done


def _changed(step: Step, full: bool) -> str | None:
    if not fileops.untouched(step.path, step.size, step.mtime_ns) or \
            (full and fileops.content_hash(step.path) != step.hash):
        return f"{step.path}: changed since it was checked; skipped"
    if not os.path.isfile(step.keeper) or (full and
                                           fileops.content_hash(step.keeper) != step.keeper_hash):
        return f"{step.path}: its keeper {step.keeper} changed or is gone; skipped"
    return None


def _catalog_after(writer: Writer, catalog: Catalog, step: Step, action: str) -> None:
    """A removed file leaves the catalog (its vectors too when no other file has them); a
    linked one stays, now holding the keeper's content and vectors."""
    assert writer.cache is not None
    writer.cache.load()  # before the transaction: FAISS must not already hold what it commits
    with catalog.write():
        if action in REMOVING:
            catalog.delete_files([step.path])
        else:
            st = os.stat(step.path)
            vid = catalog.contents_for([step.keeper_hash]).get(step.keeper_hash)
            catalog.upsert_file(step.path, st.st_size, st.st_mtime_ns, step.keeper_hash, vid)
        dropped = catalog.drop_orphans([step.hash])
    writer.cache.remove(dropped)


# ---- undo ------------------------------------------------------------------------------------


def undo_apply(store: IndexStore, path: Path | None = None, wait: bool = False) -> UndoReport:
    """`dupes undo [JOURNAL]`: put back every file the journal (default: the latest one not
    undone yet) touched, last first, and the catalog rows with them."""
    with store.open_write(wait) as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        j = journal.load(path) if path else _latest(store)
        report = UndoReport(str(j.path))
        for step in reversed(j.steps):
            if j.state(step.i) in journal.TOUCHED:
                _undo_step(writer, catalog, j, step, report)
        if not report.problems:
            j.append({"journal": journal.REVERTED})
            if j.files_dir.is_dir() and not any(j.files_dir.iterdir()):
                shutil.rmtree(j.files_dir)
        writer.finish()
    return report


def _latest(store: IndexStore) -> Journal:
    for path in reversed(journal.journals(store.dir)):
        j = journal.load(path)
        if j.whole != journal.REVERTED:
            return j
    raise NotFoundError(f"no apply journal to undo in {journal.journal_dir(store.dir)}")


def _undo_step(writer: Writer, catalog: Catalog, j: Journal, step: Step,
               report: UndoReport) -> None:
    try:
        restored = fileops.undo(j, step)
    except (StepError, OSError) as exc:
        report.problems.append(str(exc))
        return
    if restored:
        report.restored += 1
    if not _catalog_restored(writer, catalog, step):
        report.reindex.append(step.path)
    j.mark(step, journal.UNDONE)


def _catalog_restored(writer: Writer, catalog: Catalog, step: Step) -> bool:
    """The file's row back, when its content's vectors are still stored (a byte-identical
    copy: the keeper holds them); else the row goes, and `index` embeds the file again."""
    assert writer.cache is not None
    st = os.stat(step.path)
    found = catalog.contents_for([step.hash])
    writer.cache.load()
    with catalog.write():
        if step.hash in found:
            catalog.upsert_file(step.path, st.st_size, st.st_mtime_ns, step.hash,
                                found[step.hash])
        else:
            catalog.delete_files([step.path])
        dropped = catalog.drop_orphans([step.keeper_hash])
    writer.cache.remove(dropped)
    return step.hash in found
