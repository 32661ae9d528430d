"""Duplicate review at 10,000 groups (issue 27): time to the first page of groups.

Builds a real index through the IndexStore writer: `--groups` groups of 2-3 byte-identical
files and half as many again files without a copy, `--dim`-d vectors (synthetic paths, nothing
on disk: the listing reads the catalog only, and without files there is no local-feature
evidence, so only exact copies group). Then, the way `serve`'s review routes do
(services.review_session.ReviewSession):
- cold: the first page in a fresh session (the range search over every vector that finds the
  groups, then ids, states and keepers for all groups);
- warm: a page once the groups are cached for the catalog's files and vectors (decisions are
  read fresh on every page, so a decision just made shows);
- the same after `--decided` decisions were recorded (a review well under way);
- GET /api/dupes through the ASGI app, warm and right after the index changed;
- `dupes` as the CLI lists them all (find + annotate, no rendering).

    python bench/review.py [--groups 10000] [--dim 64] [--decided 3000] [--out bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import command_line, cpu_name, publish

from deepvision.output import review_page
from deepvision.services.review import (
    DecideRequest,
    build_decision,
    record_decisions,
    review_dupes,
    reviewed_groups,
)
from deepvision.services.review_session import ReviewSession
from deepvision.store.decisions import Verdict
from deepvision.store.indexstore import IndexStore
from deepvision.store.manifest import Manifest

THRESHOLD = 0.9
PAGE = review_page.PAGE  # what /review asks for


def build(root: Path, groups: int, dim: int) -> IndexStore:
    store = IndexStore(root)
    rng = np.random.default_rng(27)
    manifest = Manifest(name="default", model="bench-stub", weights="none",
                        weights_origin="bench", weights_path="", dim=dim,
                        catalog="catalog-00000027.sqlite")
    with store.open_write() as writer:
        catalog = writer.begin(manifest, fresh=True)
        with catalog.write():
            # Each group: 2-3 byte-identical files (one content, one vector; without files on
            # disk there is no local-feature evidence, so only exact copies group). Then as
            # many files again without a copy, so the range search covers 2.5 vectors a group.
            for g in range(groups):
                add(catalog, rng, dim, f"g{g:06d}", 2 + g % 2)
            for s in range(groups * 3 // 2):
                add(catalog, rng, dim, f"solo{s:06d}", 1)
        writer.finish()
    return store


def add(catalog, rng: np.random.Generator, dim: int, name: str, copies: int) -> None:
    vec = rng.standard_normal(dim)
    # content hashes look random, as xxh3's do (group ids are their first digits)
    digest = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    vid = catalog.add_vector(digest, vec / np.linalg.norm(vec))
    for m in range(copies):
        catalog.upsert_file(f"/photos/{name[-6:-3]}/{name}_{m}.jpg", 100_000,
                            1_700_000_000_000_000_000 + m, digest, vid)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def decide_some(store: IndexStore, n: int) -> None:
    _, groups = reviewed_groups(store, THRESHOLD)
    verdicts = [Verdict.KEEP, Verdict.NOT_DUPLICATES, Verdict.LATER]
    decisions = [build_decision(r, DecideRequest(r.group.id, verdicts[i % 3],
                                                 (r.group.keeper,) if i % 3 == 0 else ()))
                 for i, r in enumerate(groups[:n])]
    record_decisions(store, decisions)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--decided", type=int, default=3000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dv-review-"))
    try:
        t_build, store = timed(lambda: build(work, args.groups, args.dim))
        rows = measure(store, args.decided)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    publish(report(args, t_build, rows), args.out)


def measure(store: IndexStore, decided: int) -> list[tuple[str, float, str]]:
    session = ReviewSession(store, THRESHOLD)
    cold, page = timed(lambda: session.page(0, PAGE))
    warm = min(timed(lambda: session.page(0, PAGE))[0] for _ in range(3))
    deep = min(timed(lambda: session.page(5000, PAGE))[0] for _ in range(3))
    rows = [("first page, cold (groups found, then listed)", cold,
             f"{page.total:,} groups listed"),
            ("first page, warm (groups cached)", warm, f"{PAGE} groups"),
            ("page at offset 5,000, warm", deep, f"{PAGE} groups")]
    t_decide, _ = timed(lambda: decide_some(store, decided))
    after = min(timed(lambda: session.page(0, PAGE))[0] for _ in range(3))
    hidden = session.page(0, PAGE).hidden
    rows += [(f"record {decided:,} decisions (one transaction)", t_decide,
              "includes finding the groups once more to build them"),
             (f"first page, warm, {decided:,} decided", after, f"{hidden:,} resolved hidden")]
    rows += measure_http(store, session)
    t_cli, result = timed(lambda: review_dupes(store, THRESHOLD))
    rows.append(("`dupes` listing, every group (CLI, no rendering)", t_cli,
                 f"{len(result.groups):,} groups"))
    return rows


def measure_http(store: IndexStore, session: ReviewSession) -> list[tuple[str, float, str]]:
    """The page's own request, GET /api/dupes, through the ASGI app (routing, the response
    model's validation, JSON): warm, then right after the index changed (the earlier groups
    are served, marked updating, while the new ones are found in the background)."""
    import fastapi
    from fastapi.testclient import TestClient

    from deepvision.server.app import ApiError, error_handlers
    from deepvision.server.review import review_routes

    app = fastapi.FastAPI()
    error_handlers(app)
    app.include_router(review_routes(lambda: session, ApiError))
    url = f"/api/dupes?limit={PAGE}"
    with TestClient(app) as client:
        warm = min(timed(lambda: client.get(url))[0] for _ in range(3))
        add_one_copy(store)
        changed, answer = timed(lambda: client.get(url))
        updating = answer.json()["updating"]  # type: ignore[attr-defined]
        deadline = time.monotonic() + 600
        while client.get(url).json()["updating"] and time.monotonic() < deadline:
            time.sleep(0.5)
    return [(f"GET /api/dupes?limit={PAGE}, warm", warm, "HTTP, in process"),
            ("GET /api/dupes right after the index changed", changed,
             f"updating={updating}: the earlier groups, new ones found in the background")]


def add_one_copy(store: IndexStore) -> None:
    """One more file row (a copy of a group's first member): what a cron run adds."""
    with store.open_write() as writer:
        catalog = writer.begin(store.read_manifest(), fresh=False)
        with catalog.write():
            row = next(catalog.picture_rows())
            catalog.upsert_file(row.path + ".copy.jpg", row.size, row.mtime_ns, row.hash,
                                row.vector_id)
        writer.finish()


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def report(args: argparse.Namespace, t_build: float, rows: list[tuple[str, float, str]]) -> str:
    lines = [f"## Duplicate review (bench/review.py) — {time.strftime('%Y-%m-%d')}", "",
             f"`{command_line()}`", "",
             f"Machine: {cpu_name()}; {args.groups:,} groups of 2-3 byte-identical files and "
             f"{args.groups * 3 // 2:,} files without a copy ({args.groups * 4:,} files, "
             f"{args.groups * 5 // 2:,} vectors), {args.dim}-d vectors, flat FAISS, threshold "
             f"{THRESHOLD}; index built in {t_build:.1f} s. Page: {PAGE} groups. Load average "
             f"(1 min) at the end: {_load()} (other jobs share the machine).", "",
             "| what | seconds | note |", "| --- | ---: | --- |"]
    lines += [f"| {what} | {sec:.3f} | {note} |" for what, sec, note in rows]
    warm = rows[1][1]
    lines += ["", f"Goal: first page <= 1 s: warm {warm:.3f} s, "
              f"{'met' if warm <= 1 else 'NOT met'}; cold {rows[0][1]:.2f} s (the range search "
              "over every vector: once when the review page is first opened, which starts it "
              "before the page asks; after the index changes, pages come from the earlier "
              "groups, marked updating, while the search runs in the background)."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
