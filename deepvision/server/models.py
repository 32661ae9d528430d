"""The service's response documents as pydantic models: FastAPI validates every response
against them and publishes them in /openapi.json, so the schema is what the server does.

The search document is the one `search --format json` prints (output/schemas/search.schema.json;
tests/test_serve_contract.py checks the two agree) plus each match's file `id`. The `info` and
`index` documents are taken from their JSON Schema files as they are: one source for both.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

Fraction = Annotated[float, Field(ge=0, le=1)]
BoxList = Annotated[list[Fraction], Field(min_length=4, max_length=4,
                                          description="x0, y0, x1, y1 as fractions of the "
                                          "image's upright width and height")]
PointList = Annotated[list[Fraction], Field(min_length=4, max_length=4,
                                            description="qx, qy, mx, my (fractions)")]
# Keys of a match that the verification (#25) adds: optional, so a document without them is one.
VERIFY_KEYS = ("match", "verified", "inliers", "verified_score", "query_box", "match_box",
               "points")


@cache
def file_schema(name: str) -> dict[str, Any]:
    """output/schemas/NAME.schema.json, less the keys that name the file itself."""
    text = resources.files("deepvision.output").joinpath(f"schemas/{name}.schema.json")
    doc = json.loads(text.read_text(encoding="utf-8"))
    return {k: v for k, v in doc.items() if k not in ("$schema", "$id")}


# The service builds only the fields it documents (extra="forbid" catches a typo at once), and
# the published schema lets clients meet fields added later (additionalProperties: true), as the
# JSON Schemas in output/schemas/ promise: fields are only ever added.
DOCUMENTED = ConfigDict(extra="forbid", json_schema_extra={"additionalProperties": True})


class ErrorDoc(BaseModel):
    """Every error: a stable reason for programs, a sentence for people."""

    error: str = Field(description="the reason, e.g. not-an-image, too-large, not-found")
    message: str


class HealthDoc(BaseModel):
    model_config = DOCUMENTED
    status: Literal["ok"]
    generation: int = Field(ge=0, description="the index's committed generation")


class GpsDoc(BaseModel):
    model_config = DOCUMENTED
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class MatchDoc(BaseModel):
    model_config = DOCUMENTED
    rank: int = Field(ge=1)
    path: str
    score: float = Field(ge=-1.001, le=1.001, description="cosine similarity")
    timestamp: Annotated[float, Field(ge=0)] | None = Field(
        description="seconds into the matched video of its best frame; null for an image")
    query_timestamp: Annotated[float, Field(ge=0)] | SkipJsonSchema[None] = Field(
        None, description="only for a video query: seconds into the query video")
    id: int | SkipJsonSchema[None] = Field(
        None, description="the indexed file's id, for /api/images/{id} and its thumbnail")
    match: bool | SkipJsonSchema[None] = Field(
        None, description="a copy of the query (or of a part of it), not just a similar image")
    verified: bool | None = Field(
        None, description="local features + RANSAC confirmed it; null: not checked")
    inliers: Annotated[int, Field(ge=0)] | None = None
    verified_score: Fraction | None = None
    query_box: BoxList | None = Field(None, description="the matched region in the query")
    match_box: BoxList | None = Field(None, description="the matched region in this image")
    points: list[PointList] | None = Field(None, description="a sample of matched points")
    taken: str | None = Field(None, description="when it was taken (ISO 8601), if known")
    camera: str | None = Field(None, description="the camera's make and model, if known")
    gps: GpsDoc | None = Field(None, description="where it was taken, if known")
    width: Annotated[int, Field(ge=1)] | None = Field(None, description="pixels, as shown")
    height: Annotated[int, Field(ge=1)] | None = Field(None, description="pixels, as shown")


class QueryDoc(BaseModel):
    model_config = DOCUMENTED
    query: str
    kind: Literal["image", "text"]
    error: str | None
    matches: list[MatchDoc]


class SearchDoc(BaseModel):
    """What `search --format json` prints for one query, with file ids."""

    model_config = DOCUMENTED
    index: str = Field(description="absolute path of the index folder")
    model: str
    queries: list[QueryDoc]


def _from_file(name: str) -> Any:
    return WithJsonSchema(file_schema(name), mode="serialization")


InfoDoc = Annotated[dict[str, Any], _from_file("info")]
IndexSummary = Annotated[dict[str, Any], _from_file("index")]


class JobDoc(BaseModel):
    model_config = DOCUMENTED
    job: str
    state: Literal["running", "done", "failed", "cancelled"]
    done: int = Field(ge=0)
    total: int = Field(ge=0)
    summary: IndexSummary | None = Field(description="the `index --json` document, at the end")
    error: str | None


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status answered with an ErrorDoc."""
    return {status: {"model": ErrorDoc, "description": DESCRIPTIONS[status]}
            for status in statuses}


DESCRIPTIONS = {
    400: "a request the server cannot read (a malformed form, no image field)",
    401: "no token, or a wrong one",
    403: "a path outside the --allow-path folders",
    404: "no such file or job",
    409: "another index run holds the lock",
    410: "the indexed file is no longer the file that was indexed",
    413: "the upload is over --max-upload-mb",
    422: "invalid parameters, or an image that cannot be searched (the reason says why)",
    503: "the index cannot be read now, or the decode budget is spent (see Retry-After)",
}
