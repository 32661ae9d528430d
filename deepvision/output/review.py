"""What `dupes decide / apply / undo` print: one line per file acted on, a summary, or JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

from deepvision.output.console import safe_text
from deepvision.services.apply import ApplyReport, UndoReport
from deepvision.services.dupes import Member
from deepvision.services.journal import Step
from deepvision.services.review_session import Page

if TYPE_CHECKING:  # a record the services hand over; output/ imports nothing from store/
    from deepvision.store.decisions import Decision

_VERBS = {"trash": "trash", "move-to": "move", "hardlink": "hardlink", "symlink": "symlink",
          "delete": "delete"}


def decision_text(d: Decision) -> str:
    kept = ", ".join(sorted(d.kept_paths))
    what = f"keep {kept}" if kept else str(d.verdict)
    out = f" ({len(d.out)} member(s) taken out)" if d.out else ""
    return safe_text(f"group {d.group_id}: {what}{out}")


def step_text(action: str, step: Step) -> str:
    where = {"move-to": f" -> {step.dest}", "hardlink": f" -> {step.keeper}",
             "symlink": f" -> {step.keeper}"}.get(action, "")
    copy = "" if step.exact or action in ("trash", "move-to") else \
        "  (not identical to its keeper: kept in the journal's folder for undo)"
    return safe_text(f"{_VERBS[action]} {step.path}{where}  [group {step.group}, keeps "
                     f"{step.keeper}]{copy}")


def apply_text(r: ApplyReport) -> str:
    first = "would first complete" if r.dry_run else "completed"
    lines = [f"{first} interrupted journal {name}" for name in r.resumed]
    if r.resumed and not r.dry_run:
        lines.append(f"{r.resumed_done} file(s) done to complete them")
    if r.decided:
        lines.append(f"decided {r.decided} group(s) by the --keep rules")
    lines.extend(step_text(r.action, s) for s in r.steps)
    lines.extend(safe_text(f"skipped: {why}") for why in r.skipped)
    if r.dry_run:
        lines.append(f"dry run: {len(r.steps)} file(s) would be changed, nothing was")
    else:
        lines.append(f"{r.done} of {len(r.steps)} file(s) done" +
                     (f"; journal {r.journal} (undo: deepvision dupes undo)" if r.journal
                      else ""))
    return "\n".join(lines)


def apply_json(r: ApplyReport) -> str:
    doc = asdict(r)
    doc["steps"] = [{**asdict(s), "exact": s.exact} for s in r.steps]
    return json.dumps(doc, indent=2)


def undo_text(r: UndoReport) -> str:
    lines = [f"restored {r.restored} file(s) from {r.journal}"]
    if r.reindex:
        lines.append(f"{len(r.reindex)} restored file(s) are not in the index any more (their "
                     "vectors went with them): run `deepvision index` to embed them again")
    lines.extend(safe_text(f"problem: {p}") for p in r.problems)
    return "\n".join(lines)


def page_document(page: Page) -> dict:
    """`GET /api/dupes` (for the review page): one page of groups, each member with what the
    page shows beside it (file id for the thumbnail, size, date, resolution, how it relates to
    the group's first member, and the region of it that matches the first)."""
    def member(group: str, m: Member) -> dict:
        info = page.members.get(m.path)
        region = page.regions.get((group, m.path))
        return {"path": m.path, "score": round(m.score, 6), "timestamp": m.timestamp,
                "kind": str(m.kind),
                "file_id": info.file_id if info else None,
                "size": info.size if info else None,
                "mtime_ns": info.mtime_ns if info else None,
                "width": info.width if info else None, "height": info.height if info else None,
                "region": region.as_list() if region else None}

    return {"offset": page.offset, "total": page.total, "hidden": page.hidden,
            "threshold": page.threshold, "updating": page.updating,
            "groups": [{"id": g.id, "state": g.state, "tier": str(g.tier), "keeper": g.keeper,
                        "new_members": list(g.new_members), "size": g.size,
                        "files": [member(g.id, m) for m in g.members]}
                       for g in page.groups]}
