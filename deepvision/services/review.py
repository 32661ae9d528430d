"""Duplicate review: stable group ids, keeper rules, decisions, and the listing the CLI and the
page share.

A group's id is the first 12 hex digits of the smallest content hash among its members. Once a
decision is recorded, the group keeps the decision's id: a later `dupes` matches the group to
the decision by content hashes (the one sharing most of them), so a member joining the group
(even one with a smaller hash) never changes its id, and the hashes the decision does not know
mark the group as grown. Without a decision the id is a pure function of the members; it changes
only when a member with a smaller hash joins before anyone decided.

States: new (never decided), later (deferred), open (a member was taken out, the rest still
waits), grown (decided, and new members joined since), resolved (keep or not-duplicates, no
new member: hidden unless asked for).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from deepvision.errors import NotFoundError, UsageError
from deepvision.filters import Filter
from deepvision.services.dupes import DEFAULT_THRESHOLD, DupesResult, Group, find_dupes
from deepvision.store.catalog import Catalog, FileRow
from deepvision.store.decisions import DecidedFile, Decision, DecisionStore, Verdict, file_rows
from deepvision.store.indexstore import IndexStore

ID_DIGITS = 12
NEW, LATER, OPEN, GROWN, RESOLVED = "new", "later", "open", "grown", "resolved"
STATES = (NEW, LATER, OPEN, GROWN, RESOLVED)
RULE_NAMES = ("largest", "highest-resolution", "oldest", "newest", "shortest-path", "in:FOLDER")
# Used when no --keep is given: all from the catalog, so proposing costs no file reads.
DEFAULT_RULES = ("largest", "oldest", "shortest-path")


# ---- keeper rules ------------------------------------------------------------------------------

RuleKey = Callable[[FileRow], tuple[float, ...] | float | str]


def parse_rules(rules: Sequence[str]) -> tuple[str, ...]:
    """Validate --keep rules (before any heavy work); in:FOLDER gets an absolute folder."""
    out = []
    for rule in rules:
        if rule.startswith("in:") and len(rule) > 3:
            out.append("in:" + os.path.abspath(rule[3:]))
        elif rule in RULE_NAMES[:-1]:
            out.append(rule)
        else:
            raise UsageError(f"--keep {rule!r}: a rule is one of {', '.join(RULE_NAMES)}")
    return tuple(out)


def _resolution(path: str) -> int:
    """Pixels, from the header only; 0 for what Pillow cannot open (a video)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width * im.height)
    except Exception:  # any unreadable file simply ranks last
        return 0


def _rule_key(rule: str) -> RuleKey:
    """Smaller sorts first, so the keeper is the minimum."""
    if rule.startswith("in:"):
        folder = rule[3:].rstrip("/") + "/"
        return lambda r: 0 if r.path.startswith(folder) else 1
    keys: dict[str, RuleKey] = {
        "largest": lambda r: -r.size,
        "highest-resolution": lambda r: -_resolution(r.path),
        "oldest": lambda r: r.mtime_ns,
        "newest": lambda r: -r.mtime_ns,
        "shortest-path": lambda r: (len(r.path),),
    }
    return keys[rule]


def propose_keeper(rows: Sequence[FileRow], rules: Sequence[str] | Keeper) -> str | None:
    """The member the rules pick: the first rule decides, the next ones break its ties, the
    path breaks the last tie (so the proposal is deterministic). rules: names, or the
    keeper_key of them (built once for many groups)."""
    if not rows:
        return None
    key = rules if callable(rules) else keeper_key(rules)
    return min(rows, key=key).path


Keeper = Callable[[FileRow], tuple]


def keeper_key(rules: Sequence[str]) -> Keeper:
    keys = [_rule_key(r) for r in rules]
    return lambda row: (*(k(row) for k in keys), row.path)


# ---- matching groups to decisions ---------------------------------------------------------------


def group_id(hashes: Sequence[str]) -> str:
    return min(hashes)[:ID_DIGITS]


@dataclass(frozen=True)
class Reviewed:
    """A group as the review sees it: the listing's group plus the catalog rows of its members
    and the decision it matched."""

    group: Group
    rows: dict[str, FileRow]  # path -> row (members the catalog still holds)
    decision: Decision | None

    @property
    def hashes(self) -> list[str]:
        return sorted({r.hash for r in self.rows.values() if r.hash})


class Decisions:
    """The current decisions, indexed by the hashes they were made on."""

    def __init__(self, decisions: dict[str, Decision]) -> None:
        self.by_id = decisions
        self.by_hash: dict[str, list[Decision]] = {}
        for d in decisions.values():
            for h in d.hashes:
                self.by_hash.setdefault(h, []).append(d)

    def match(self, hashes: Sequence[str]) -> Decision | None:
        """The decision sharing most hashes with a group (ties: the latest)."""
        overlap: dict[str, int] = {}
        for h in hashes:
            for d in self.by_hash.get(h, []):
                overlap[d.group_id] = overlap.get(d.group_id, 0) + 1
        if not overlap:
            return None
        best = max(overlap, key=lambda gid: (overlap[gid], self.by_id[gid].seq))
        return self.by_id[best]


def annotate(result: DupesResult, catalog: Catalog, rules: Sequence[str] = DEFAULT_RULES,
             show_all: bool = False, rows: dict[str, FileRow] | None = None
             ) -> tuple[DupesResult, list[Reviewed]]:
    """Ids, states and keepers for every group; resolved ones left out unless show_all.
    rows: the members' catalog rows, when the caller has them (else read here)."""
    decisions = Decisions(DecisionStore(catalog).current())
    if rows is None:
        rows = member_rows(result, catalog)
    shown: list[Reviewed] = []
    hidden = 0
    key = keeper_key(rules)
    for g in result.groups:
        reviewed = _review(g, rows, decisions, key)
        if reviewed is None:
            continue
        if reviewed.group.state == RESOLVED and not show_all:
            hidden += 1
            continue
        shown.append(reviewed)
    return replace(result, groups=[r.group for r in shown], hidden=hidden,
                   keep_rules=tuple(rules)), shown


def member_rows(result: DupesResult, catalog: Catalog) -> dict[str, FileRow]:
    return file_rows(catalog, (m.path for g in result.groups for m in g.members))


def _review(g: Group, rows: dict[str, FileRow], decisions: Decisions,
            rules: Keeper) -> Reviewed | None:
    mine = {m.path: rows[m.path] for m in g.members if m.path in rows and rows[m.path].hash}
    if len(mine) < 2:  # the catalog changed under the listing
        return None
    hashes = sorted({r.hash for r in mine.values() if r.hash})
    decision = decisions.match(hashes)
    left = len(mine)
    if decision is not None:  # members taken out of the group no longer belong to it...
        rest = {p: r for p, r in mine.items() if r.hash not in decision.out}
        left = len(rest)
        if left >= 2:  # ...unless too few remain: then `--all` shows the group whole
            mine = rest
    members = [m for m in g.members if m.path in mine]
    new = tuple(p for p, r in mine.items() if decision and r.hash not in decision.hashes)
    state = _state(decision, left, bool(new))
    keeper = _decided_keeper(decision, mine) if state in (RESOLVED, GROWN) else None
    group = replace(g, members=members, id=decision.group_id if decision else group_id(hashes),
                    state=state, keeper=keeper or propose_keeper(list(mine.values()), rules),
                    new_members=new)
    return Reviewed(group, mine, decision)


def _state(decision: Decision | None, n: int, grown: bool) -> str:
    if decision is None:
        return NEW
    if n < 2:
        return RESOLVED
    if grown:
        return GROWN
    if decision.verdict is Verdict.LATER:
        return LATER
    if decision.verdict is Verdict.NOT_DUPLICATES and decision.out:
        return OPEN  # one member was taken out; the others still wait for a verdict
    return RESOLVED


def _decided_keeper(decision: Decision | None, rows: dict[str, FileRow]) -> str | None:
    """The kept member: by its path, or (renamed since) the first with a kept content."""
    if decision is None or decision.verdict is not Verdict.KEEP:
        return None
    for path in sorted(rows):
        if path in decision.kept_paths:
            return path
    return next((p for p in sorted(rows) if rows[p].hash in decision.kept_hashes), None)


# ---- listing and deciding ----------------------------------------------------------------------


def review_dupes(store: IndexStore, threshold: float = DEFAULT_THRESHOLD,
                 rules: Sequence[str] = DEFAULT_RULES, show_all: bool = False,
                 similar: bool = False, verify: bool = True,
                 flt: Filter = Filter()) -> DupesResult:
    """`dupes`: the groups, without resolved ones (unless show_all), with ids and keepers;
    similar/verify/flt: as find_dupes."""
    return reviewed_groups(store, threshold, rules, show_all, similar, verify, flt)[0]


def reviewed_groups(store: IndexStore, threshold: float = DEFAULT_THRESHOLD,
                    rules: Sequence[str] = DEFAULT_RULES, show_all: bool = False,
                    similar: bool = False, verify: bool = True,
                    flt: Filter = Filter()) -> tuple[DupesResult, list[Reviewed]]:
    result = find_dupes(store, threshold, similar, verify, flt=flt)
    with store.open_read() as snap:
        return annotate(result, snap.catalog, rules or DEFAULT_RULES, show_all)


@dataclass(frozen=True)
class DecideRequest:
    group: str
    verdict: Verdict
    keep: tuple[str, ...] = ()  # paths (keep)
    member: str | None = None  # not-duplicates of this one member only
    threshold: float = DEFAULT_THRESHOLD


def decide(store: IndexStore, req: DecideRequest) -> Decision:
    """Record a verdict on the group `req.group` (as `dupes` lists it, resolved ones too)."""
    _, groups = reviewed_groups(store, req.threshold, show_all=True)
    found = next((r for r in groups if r.group.id == req.group), None)
    if found is None:
        raise NotFoundError(f"no group with id {req.group!r} at --threshold {req.threshold:g}; "
                         "list the groups and their ids with: deepvision dupes")
    decision = build_decision(found, req)
    return record_decisions(store, [decision])[0]


def build_decision(found: Reviewed, req: DecideRequest) -> Decision:
    keep = {os.path.abspath(p) for p in req.keep}
    unknown = keep - set(found.rows)
    if unknown:
        raise UsageError(f"--keep {sorted(unknown)[0]}: not a member of group {req.group}")
    if req.verdict is Verdict.KEEP and not keep:
        raise UsageError("--keep needs at least one of the group's files")
    out = tuple(found.decision.out) if found.decision else ()
    if req.member is not None:
        member = os.path.abspath(req.member)
        if member not in found.rows:
            raise UsageError(f"--member {member}: not a member of group {req.group}")
        out = tuple(sorted({*out, str(found.rows[member].hash)}))
    files = tuple(DecidedFile(r.path, str(r.hash), r.size, r.mtime_ns, r.path in keep)
                  for r in found.rows.values())
    known = set(found.decision.hashes) if found.decision else set()
    return Decision(found.group.id, req.verdict, tuple(sorted(known | set(found.hashes))),
                    files, out)


def record_decisions(store: IndexStore, decisions: Sequence[Decision],
                     wait: bool = True) -> list[Decision]:
    """Append decisions under the writer's lock (which also migrates an old catalog)."""
    with store.open_write(wait) as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        with catalog.write():
            return [DecisionStore(catalog).record(d) for d in decisions]


def undo_last_decision(store: IndexStore, wait: bool = True) -> Decision | None:
    with store.open_write(wait) as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        with catalog.write():
            return DecisionStore(catalog).undo_last()


def export_decisions(store: IndexStore) -> dict:
    with store.open_read() as snap:
        return DecisionStore(snap.catalog).export()


def import_decisions(store: IndexStore, doc: dict) -> int:
    with store.open_write(True) as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        with catalog.write():
            try:
                return DecisionStore(catalog).import_(doc)
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"cannot import decisions: {exc}") from None


def decisions_file(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read decisions from {path}: {exc}") from None
