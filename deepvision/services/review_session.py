"""The review page's service (`serve`'s /review and /api/dupes): pages of groups with what the
page shows beside each member, over groups cached for one state of the catalog; decisions go
through services.review, the CLI's own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from deepvision.errors import NotFoundError
from deepvision.match.verifier import Verifier, index_verifier
from deepvision.services.dupes import DEFAULT_THRESHOLD, DupesResult, Group, find_dupes
from deepvision.services.review import (
    DEFAULT_RULES,
    DecideRequest,
    Reviewed,
    annotate,
    build_decision,
    member_rows,
    record_decisions,
    undo_last_decision,
)
from deepvision.store.catalog import Catalog, FileRow
from deepvision.store.decisions import Decision
from deepvision.store.indexstore import IndexStore
from deepvision.types import Box, Tier


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """What the page shows beside a member's thumbnail."""

    file_id: int  # what serve's image endpoints take
    size: int
    mtime_ns: int
    width: int  # 0 when the header cannot be read (a video)
    height: int


@dataclass(frozen=True)
class Page:
    groups: list[Group]
    offset: int
    total: int  # groups listed (resolved ones left out unless show_all)
    hidden: int  # resolved groups left out
    members: dict[str, MemberInfo]  # path -> details, for the members of this page's groups
    # (group id, path) -> the region of that member which matches the group's first member,
    # for members that are a copy or a similar shot and whose match verified (fractions).
    regions: dict[tuple[str, str], Box] = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    updating: bool = False  # the groups are of an earlier index; newer ones are being found


def member_info(catalog: Catalog, paths: Sequence[str]) -> dict[str, MemberInfo]:
    """Ids, sizes and dates from the catalog, width and height from each image's header: only
    for one page's members, so a page never opens thousands of files."""
    from PIL import Image

    out: dict[str, MemberInfo] = {}
    uniq = sorted(set(paths))
    for start in range(0, len(uniq), 500):
        part = uniq[start:start + 500]
        marks = ",".join("?" * len(part))
        for fid, path, size, mtime_ns in catalog.db.execute(
                f"SELECT rowid, path, size, mtime_ns FROM files WHERE status = 'ok' AND path "
                f"IN ({marks})", part):
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except Exception:  # a video, or a file gone since: no resolution to show
                width = height = 0
            out[path] = MemberInfo(int(fid), int(size), int(mtime_ns), width, height)
    return out


Key = tuple[str, int, int]  # the catalog file, its vectors' generation, its files' revision


@dataclass(frozen=True)
class Found:
    """Groups as found for one Key, with their members' catalog rows."""

    key: Key
    groups: DupesResult
    rows: dict[str, FileRow]


class ReviewSession:
    """What `serve`'s review routes call. The groups are computed once per catalog generation
    (the range search over every vector is the expensive part); when the index changes (a
    cron run, an apply), pages keep coming from the previous groups, marked `updating`, while
    the new ones are found in the background. Decisions and catalog rows are read fresh on
    every page, so a decision, or a file gone, shows at once. Safe to share between threads."""

    def __init__(self, store: IndexStore, threshold: float = DEFAULT_THRESHOLD,
                 rules: Sequence[str] = DEFAULT_RULES, similar: bool = False,
                 verifier: Verifier | None = None) -> None:
        self.store, self.threshold, self.rules = store, threshold, tuple(rules) or DEFAULT_RULES
        self.similar = similar
        self._verifier = verifier
        self._cached: Found | None = None
        self._lock = threading.Lock()  # one range search at a time, not one per request

    def _key(self) -> Key:
        with self.store.open_read() as snap:
            return (snap.manifest.catalog, snap.catalog.generation, snap.catalog.file_revision)

    def _groups(self) -> tuple[DupesResult, dict[str, FileRow] | None, bool]:
        """The groups; their members' rows while the files are as when the groups were found
        (None: read them afresh); and whether the groups are of an earlier index."""
        key, cached = self._key(), self._cached
        if cached is None:
            cached = self._refresh(key)
        elif cached.key != key:
            self._refresh_later(key)
            return cached.groups, None, True
        return cached.groups, cached.rows, False

    def _refresh(self, key: Key) -> Found:
        with self._lock:
            if self._cached is None or self._cached.key != key:
                groups = find_dupes(self.store, self.threshold, self.similar,
                                    verifier=self._verifier)
                with self.store.open_read() as snap:
                    self._cached = Found(key, groups, member_rows(groups, snap.catalog))
            return self._cached

    def _refresh_later(self, key: Key) -> None:
        if self._lock.locked():
            return  # a search runs already; the next page after it asks again if needed
        threading.Thread(target=self._refresh, args=(key,), name="review-groups",
                         daemon=True).start()

    def warm(self) -> None:
        """Start finding the groups, so that the first page does not wait for all of it (the
        page route calls this before its script asks for a page)."""
        key = self._key()
        if self._cached is None or self._cached.key != key:
            self._refresh_later(key)

    def page(self, offset: int = 0, limit: int = 50, show_all: bool = False) -> Page:
        raw, rows, updating = self._groups()
        with self.store.open_read() as snap:
            result, reviewed = annotate(raw, snap.catalog, self.rules, show_all, rows)
            chosen = reviewed[offset:offset + limit]
            groups = [r.group for r in chosen]
            info = member_info(snap.catalog, [m.path for g in groups for m in g.members])
        return Page(groups, offset, len(result.groups), result.hidden, info,
                    self._regions(chosen), self.threshold, updating)

    def _regions(self, chosen: Sequence[Reviewed]) -> dict[tuple[str, str], Box]:
        """Where each copy or similar member matches its group's first member, from the
        stored evidence (the files only where an old index has none)."""
        pairs = [(r, m.path) for r in chosen for m in r.group.members[1:]
                 if m.kind is not Tier.EXACT and m.timestamp is None]
        if not pairs:
            return {}
        verifier = self._verifier or self._index_verifier()
        wanted = [r.rows[p] for r, p in pairs if p in r.rows]
        wanted += [r.rows[r.group.members[0].path] for r, _ in pairs
                   if r.group.members[0].path in r.rows]
        evidence = verifier.evidence(wanted)
        out: dict[tuple[str, str], Box] = {}
        for r, path in pairs:
            first, member = r.rows.get(r.group.members[0].path), r.rows.get(path)
            a = evidence.get(first.hash) if first and first.hash else None
            b = evidence.get(member.hash) if member and member.hash else None
            outcome = verifier.check(a, b) if a is not None and b is not None else None
            if outcome is not None and outcome.verification is not None:
                out[(r.group.id, path)] = outcome.verification.match_box
        return out

    def _index_verifier(self) -> Verifier:
        self._verifier = index_verifier(self.store)
        return self._verifier

    def decide(self, req: DecideRequest) -> Decision:
        raw, rows, _ = self._groups()
        with self.store.open_read() as snap:
            _, groups = annotate(raw, snap.catalog, self.rules, True, rows)
        found = next((r for r in groups if r.group.id == req.group), None)
        if found is None:
            raise NotFoundError(f"no group with id {req.group!r}")
        return record_decisions(self.store, [build_decision(found, req)], wait=False)[0]

    def undo_last(self) -> Decision | None:
        return undo_last_decision(self.store, wait=False)
