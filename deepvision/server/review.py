"""The review routes of `serve` (issue #27): `/api/dupes…` for the page and for scripts, and the
page itself at `/review`.

They call the same services as `deepvision dupes decide / apply / undo / export / import`, so a
decision made in the browser is the CLI's decision. Files change only through
`POST /api/dupes/apply` with `dry_run: false` and the `plan` digest of the dry run the user saw;
every route sits behind the token when one is set (always, when bound beyond loopback).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Query
from fastapi import Path as PathParam

from deepvision.errors import (
    DeepVisionError,
    IndexLockedError,
    NotFoundError,
    PlanChangedError,
    UsageError,
)
from deepvision.output.review import page_document
from deepvision.server.models import errors
from deepvision.server.review_models import (
    ApplyBody,
    ApplyDoc,
    ApplyUndoBody,
    ApplyUndoDoc,
    DecideBody,
    DecisionDoc,
    DecisionsDoc,
    DupesPageDoc,
    ImportedDoc,
    MoveBody,
    UndoneDoc,
)
from deepvision.services import journal
from deepvision.services.apply import (
    ApplyReport,
    ApplyRequest,
    apply_decisions,
    plan_digest,
    undo_apply,
)
from deepvision.services.review import (
    DecideRequest,
    export_decisions,
    import_decisions,
    parse_rules,
)
from deepvision.services.review_session import ReviewSession
from deepvision.store.decisions import Decision, Verdict

PAGE_LIMIT = 200  # groups in one page at most: a page reads each member's image header
# An API error: (reason, message, status) -> the exception the app turns into its JSON error.
Fail = Callable[[str, str, int], Exception]
Sessions = Callable[[], ReviewSession]


def review_routes(session: Sessions, fail: Fail) -> APIRouter:
    """session: the ReviewSession to use, asked for on each request (made on first use)."""
    router = APIRouter(tags=["duplicate review"])
    _listing(router, session, fail)
    _deciding(router, session, fail)
    _applying(router, session, fail)
    _exchanging(router, session, fail)
    return router


def _guarded(fail: Fail, call: Callable[[], Any]) -> Any:
    """A service call, its errors as the API's: the index busy or the plan changed (409), a
    group or journal not there (404), a bad request (422), the index unreadable (503)."""
    try:
        return call()
    except IndexLockedError as exc:
        raise fail("locked", str(exc), 409) from None
    except NotFoundError as exc:
        raise fail("not-found", str(exc), 404) from None
    except PlanChangedError as exc:
        raise fail("plan-changed", str(exc), 409) from None
    except UsageError as exc:
        raise fail("bad-request", str(exc), 422) from None
    except DeepVisionError as exc:
        raise fail("index-unavailable", str(exc), 503) from None


def _listing(router: APIRouter, session: Sessions, fail: Fail) -> None:
    @router.get("/api/dupes", response_model=DupesPageDoc, responses=errors(422, 503),
                operation_id="dupes_page")
    def dupes_page(offset: int = Query(0, ge=0, le=10_000_000),
                   limit: int = Query(50, ge=1, le=PAGE_LIMIT),
                   show_all: bool = Query(False, alias="all",
                                          description="resolved groups too")) -> dict:
        """One page of duplicate groups, as `deepvision dupes` lists them (largest first)."""
        page = _guarded(fail, lambda: session().page(offset, limit, show_all))
        return page_document(page)


def _deciding(router: APIRouter, session: Sessions, fail: Fail) -> None:
    @router.post("/api/dupes/{group_id}/decision", response_model=DecisionDoc,
                 responses=errors(400, 404, 409, 422, 503), operation_id="decide")
    def decide(body: DecideBody,
               group_id: str = PathParam(pattern="^[0-9a-f]{1,32}$")) -> dict:
        """Record keep / not-duplicates / later on a group (`deepvision dupes decide`)."""
        req = DecideRequest(group_id, Verdict(body.verdict), tuple(body.keep), body.member,
                            session().threshold)
        return _decision_doc(_guarded(fail, lambda: session().decide(req)))

    @router.post("/api/dupes/undo", response_model=UndoneDoc, responses=errors(409, 422, 503),
                 operation_id="undo_decision")
    def undo_decision() -> dict:
        """Take back the latest decision."""
        gone = _guarded(fail, lambda: session().undo_last())
        return {"undone": _decision_doc(gone) if gone is not None else None}


def _applying(router: APIRouter, session: Sessions, fail: Fail) -> None:
    @router.post("/api/dupes/apply", response_model=ApplyDoc,
                 responses=errors(400, 409, 422, 503), operation_id="apply")
    def apply(body: ApplyBody) -> dict:
        """A dry run of `deepvision dupes apply` (the default); with `dry_run: false` and the
        dry run's `plan`, the same steps carried out, journaled for undo (409 `plan-changed`,
        and nothing done, when the plan is no longer that one)."""
        req = _request(body, fail, session().threshold)
        if not body.dry_run and body.plan is None:
            raise fail("plan-changed", "apply carries out a dry run's plan: ask for the dry "
                       "run first and pass its `plan`", 409)
        return _apply_doc(_guarded(fail, lambda: apply_decisions(session().store, req)))

    @router.post("/api/dupes/apply/undo", response_model=ApplyUndoDoc,
                 responses=errors(400, 404, 409, 422, 503), operation_id="undo_apply")
    def undo(body: ApplyUndoBody | None = Body(None)) -> dict:
        """Put back what an apply did (`deepvision dupes undo`)."""
        path = None
        if body is not None and body.journal is not None:
            path = journal.journal_dir(session().store.dir) / body.journal
            if not path.is_file():
                raise fail("not-found", f"no journal {body.journal!r}", 404)
        report = _guarded(fail, lambda: undo_apply(session().store, path))
        return {"journal": Path(report.journal).name, "restored": report.restored,
                "reindex": report.reindex, "problems": report.problems}


def _exchanging(router: APIRouter, session: Sessions, fail: Fail) -> None:
    @router.get("/api/dupes/decisions", response_model=DecisionsDoc, responses=errors(503),
                operation_id="export_decisions")
    def export() -> dict:
        """Every current decision (`deepvision dupes export`)."""
        return _guarded(fail, lambda: export_decisions(session().store))

    @router.post("/api/dupes/decisions", response_model=ImportedDoc,
                 responses=errors(400, 409, 422, 503), operation_id="import_decisions")
    def import_(doc: DecisionsDoc) -> dict:
        """Record the decisions of an export (`deepvision dupes import`)."""
        return {"imported": _guarded(fail, lambda: import_decisions(session().store,
                                                                      doc.model_dump()))}


def _request(body: ApplyBody, fail: Fail, threshold: float) -> ApplyRequest:
    rules = _guarded(fail, lambda: parse_rules(body.rules))
    target = Path(body.target) if isinstance(body, MoveBody) else None
    return ApplyRequest(body.action, target, rules, body.dry_run, threshold,
                        expect_plan=None if body.dry_run else body.plan)


def _apply_doc(report: ApplyReport) -> dict:
    return {"action": report.action, "dry_run": report.dry_run,
            "plan": plan_digest(report.action, report.resumed, report.steps),
            "steps": [{"group": s.group, "path": s.path, "keeper": s.keeper, "dest": s.dest,
                       "exact": s.exact} for s in report.steps],
            "done": report.done, "skipped": report.skipped,
            "journal": Path(report.journal).name if report.journal else None,
            "decided": report.decided}


def _decision_doc(d: Decision) -> dict:
    return {"id": d.group_id, "verdict": d.verdict.value, "kept": sorted(d.kept_paths),
            "out": len(d.out), "decided_at": d.decided_at}
