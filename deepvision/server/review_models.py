"""The review routes' request and response documents (`/api/dupes…`, issue #27).

The page document is output/review.py's `page_document`; the decisions export is the same JSON
`deepvision dupes export` writes, so a review done in the browser imports on another machine.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from deepvision.server.models import DOCUMENTED, BoxList

Tier = Literal["exact", "copy", "similar"]
State = Literal["new", "later", "open", "grown", "resolved"]
Action = Literal["trash", "move-to", "hardlink", "symlink", "delete"]
Count = Annotated[int, Field(ge=0)]


class DupesFileDoc(BaseModel):
    model_config = DOCUMENTED
    path: str
    score: float = Field(description="cosine similarity to the group's first member")
    timestamp: Annotated[float, Field(ge=0)] | None = Field(
        description="a video: seconds into it of the frame that matched; null for an image")
    kind: Tier = Field(description="how it relates to the group's first member")
    file_id: int | None = Field(description="for /api/images/{id} and its thumbnail")
    size: Count | None = Field(description="bytes")
    mtime_ns: int | None
    width: Count | None = Field(description="pixels; 0 where the header cannot tell (a video)")
    height: Count | None
    region: BoxList | None = Field(
        description="the part of this file that matches the group's first member (verified "
                    "copies and similar shots); null: the whole file, or not verified")


class DupesGroupDoc(BaseModel):
    model_config = DOCUMENTED
    id: str = Field(pattern="^[0-9a-f]{1,32}$", description="what the decision routes take")
    state: State
    tier: Tier = Field(description="the loosest relation among its members")
    keeper: str | None = Field(description="the decided keeper, else the one the rules propose")
    new_members: list[str] = Field(description="members that joined since the decision")
    size: int = Field(ge=2)
    files: list[DupesFileDoc]


class DupesPageDoc(BaseModel):
    model_config = DOCUMENTED
    offset: Count
    total: Count = Field(description="groups listed (resolved ones only with all=true)")
    hidden: Count = Field(description="resolved groups left out")
    threshold: float
    updating: bool = Field(description="the index changed since the groups were found: these "
                           "are the earlier groups (files gone since left out) while the new "
                           "ones are found; ask again in a few seconds")
    groups: list[DupesGroupDoc]


class DecideBody(BaseModel):
    """A verdict on one group, as `deepvision dupes decide` takes it."""

    model_config = ConfigDict(strict=True)
    verdict: Literal["keep", "not-duplicates", "later"]
    keep: list[Annotated[str, Field(max_length=4096)]] = Field(
        [], max_length=10_000, description="keep: the members (paths) to keep")
    member: Annotated[str, Field(max_length=4096)] | None = Field(
        None, description="not-duplicates: take only this member (path) out of the group")


class DecisionDoc(BaseModel):
    model_config = DOCUMENTED
    id: str = Field(description="the group")
    verdict: Literal["keep", "not-duplicates", "later"]
    kept: list[str]
    out: Count = Field(description="members taken out of the group")
    decided_at: str


class UndoneDoc(BaseModel):
    model_config = DOCUMENTED
    undone: DecisionDoc | None = Field(description="the decision taken back; null: none left")


RULE = r"^(largest|highest-resolution|oldest|newest|shortest-path|in:/.+)$"


class _ApplyCommon(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rules: list[Annotated[str, Field(max_length=4096, pattern=RULE)]] = Field(
        [], max_length=10, description="first decide the undecided groups by these keeper rules "
        "(in:FOLDER with an absolute folder)")
    dry_run: bool = True
    plan: Annotated[str, Field(max_length=128)] | None = Field(
        None, description="with dry_run false: the dry run's `plan`")


class MoveBody(_ApplyCommon):
    action: Literal["move-to"]
    target: str = Field(min_length=2, max_length=4096, pattern="^/",
                        description="the folder the files move into (absolute)")


class InPlaceBody(_ApplyCommon):
    action: Literal["trash", "hardlink", "symlink", "delete"]


# `deepvision dupes apply`: a dry run unless `dry_run` is false, and then only with the `plan` of
# the dry run just shown (so what happens is what the user saw). move-to takes its folder.
ApplyBody = Annotated[MoveBody | InPlaceBody, Field(discriminator="action")]


class StepDoc(BaseModel):
    model_config = DOCUMENTED
    group: str
    path: str
    keeper: str
    dest: str | None
    exact: bool = Field(description="byte-identical to its keeper")


class ApplyDoc(BaseModel):
    model_config = DOCUMENTED
    action: Action
    dry_run: bool
    plan: str = Field(description="a digest of the steps: pass it back to carry them out")
    steps: list[StepDoc]
    done: Count
    skipped: list[str] = Field(description="files left alone, each with why")
    journal: str | None = Field(description="the journal's name: what apply/undo takes")
    decided: Count


class ApplyUndoBody(BaseModel):
    model_config = ConfigDict(strict=True)
    journal: Annotated[str, Field(max_length=255, pattern=r"^[^/\\]+$")] | None = Field(
        None, description="a journal's name (default: the latest not undone)")


class ApplyUndoDoc(BaseModel):
    model_config = DOCUMENTED
    journal: str
    restored: Count
    reindex: list[str] = Field(description="restored files to index again")
    problems: list[str]


# An export is read as leniently as fields are added: fields a later version adds are ignored.
# Strict, as every request body here: a 0 is not a false, a "1" not a 1 (what the schema says).
EXCHANGED = ConfigDict(extra="ignore", strict=True,
                       json_schema_extra={"additionalProperties": True})


def _whole(value: object) -> object:
    """JSON Schema's integer includes 3.0; strict pydantic would not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[int, BeforeValidator(_whole)]


class DecidedFileDoc(BaseModel):
    model_config = EXCHANGED
    path: str = Field(min_length=1)
    hash: str = Field(min_length=1, description="the file's content hash when it was decided")
    size: WholeNumber = Field(ge=0)
    mtime_ns: WholeNumber
    keep: bool = False


class ExportedDecisionDoc(BaseModel):
    model_config = EXCHANGED
    id: str = Field(pattern="^[0-9a-f]{1,32}$", description="the group's id")
    verdict: Literal["keep", "not-duplicates", "later"]
    hashes: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="the members' content hashes it was made on")
    files: list[DecidedFileDoc] = []
    out: list[str] = Field([], description="hashes taken out of the group")
    decided_at: str | None = None
    applied: str | None = Field(None, description="the apply journal that carried it out")


class DecisionsDoc(BaseModel):
    """`deepvision dupes export`'s document."""

    model_config = EXCHANGED
    deepvision_decisions: Literal[1] = Field(description="the export format's version")
    decisions: list[ExportedDecisionDoc]


class ImportedDoc(BaseModel):
    model_config = DOCUMENTED
    imported: Count
