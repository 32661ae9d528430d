"""Issue #25's quality figures through the real CLI: strong-edit sets and near-duplicate pools.

    python bench/verify_quality.py strong SET [--work DIR] [--json OUT] [--top-k 10]
                                   [--index-args "..."] [SEARCH FLAGS ...]
    python bench/verify_quality.py dupes POOL [--work DIR] [--json OUT] [--count-similar]
                                   [--index-args "..."] [DUPES FLAGS ...]

strong: SET is built by `scripts/make_evalset.py --strong` (any set in `deepvision eval`'s folder
layout works). Its database (the originals, the natural pairs and the distractors, as
`eval --protocol originals` reads it) is linked into WORK/db and indexed with
`python -m deepvision index`; every edited copy is a query of one
`python -m deepvision search ... --format json --top-k K`, with the unknown flags passed on
(`--no-verify`, `--verify-top 30`, ...). Printed: R@1, R@5 and mAP within the top K per edit kind
and overall (the metrics of services/eval_metrics.py), and, where the matches carry a verified box,
the share of truth boxes (evalset.json "truth") found with IoU >= 0.8.

dupes: POOL is built by `scripts/make_evalset.py --dupes-pool`: POOL/pool is indexed and
`python -m deepvision dupes --format json` (unknown flags passed on, e.g. `--similar`) groups
it. Every two members of a group are a linked pair; where members carry a `kind`
(exact / copy / similar), a pair is a copy link only when neither member is `similar`, unless
--count-similar. Printed: pair precision and recall of the copy pairs of POOL/truth.json, and
how many similar-shot pairs were linked as copies and grouped in any tier.

--checkout DIR runs the deepvision of another source tree (a branch with the verifier) against
these sets. WORK (default: a temporary folder) keeps the index and the raw JSON of the CLI; with
--reuse an index already in WORK is searched again (to compare search flags without
re-indexing).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from _common import command_line, machine

from deepvision.services.eval_metrics import (
    QueryScore,
    average_precision,
    precision_at_k,
    recall_at_k,
    summarise,
)
from deepvision.services.eval_set import load_evalset
from deepvision.services.evaluate import database_mask

KS = (1, 5, 10)
BOX_IOU = 0.8  # the acceptance bar for a verified box against the truth
COPY_KINDS = {"exact", "copy"}


HERE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Cli:
    """Runs `python -m deepvision` from `checkout` (its package first on the path)."""

    checkout: Path = HERE

    def __call__(self, args: Sequence[str], stdout: Path | None = None) -> float:
        """Run `deepvision ARGS`, stdout to a file; seconds taken."""
        return run_cli(self.checkout, args, stdout)


def run_cli(checkout: Path, args: Sequence[str], stdout: Path | None) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(checkout), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    with open(stdout or os.devnull, "w", encoding="utf-8") as out:
        # cwd: `python -m` puts the working folder first on the path, before PYTHONPATH.
        done = subprocess.run([sys.executable, "-m", "deepvision", *args], stdout=out, env=env,
                              cwd=checkout, check=False)
    # search/dupes exit 3 (partial) when a file failed: the JSON is still complete.
    if done.returncode not in (0, 3):
        raise SystemExit(f"`deepvision {shlex.join(args[:3])} ...` exited {done.returncode}")
    return time.perf_counter() - start


def index(cli: Cli, folder: Path, work: Path, extra: Sequence[str], reuse: bool) -> float:
    if reuse and (work / "index").is_dir():
        return 0.0
    return cli(["index", str(folder), "--index-dir", str(work / "index"), "--quiet", *extra])


# ---- strong-edit sets ----------------------------------------------------------------------


def link_database(source: Path, work: Path) -> tuple[dict[str, str | None], list[str]]:
    """WORK/db: a link per database file. Returns link path -> group, and the queries."""
    items = load_evalset(source).items
    mask = database_mask(items, "originals")
    assert mask is not None
    db = work / "db"
    db.mkdir(parents=True, exist_ok=True)
    groups: dict[str, str | None] = {}
    for i, item in enumerate(it for it, keep in zip(items, mask, strict=True) if keep):
        link = db / f"{i:05d}_{os.path.basename(item.path)}"  # unique even if names repeat
        if not link.is_symlink():
            link.symlink_to(os.path.abspath(item.path))
        groups[str(link)] = item.group
    queries = [it.path for it, keep in zip(items, mask, strict=True)
               if not keep and it.group is not None]
    return groups, queries


def score_query(query: str, group: str, matches: list[dict[str, Any]],
                groups: dict[str, str | None], relevant: int) -> QueryScore:
    """One query's ranked list, scored as services/eval_metrics.py scores a full ranking (misses
    past the top-k count as misses)."""
    hits = [groups.get(os.path.abspath(m["path"])) == group for m in matches]
    edit = Path(query).stem.rpartition("__")[2] or None
    return QueryScore(
        path=query, group=group, edit=edit, relevant=relevant,
        ap=average_precision(hits, relevant) if relevant else 0.0,
        recall={k: recall_at_k(hits, k) for k in KS},
        precision={k: precision_at_k(hits, k) for k in KS},
        first_hit=hits.index(True) + 1 if any(hits) else None,
        top_path=matches[0]["path"] if matches else "",
        top_score=float(matches[0]["score"]) if matches else float("nan"))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_box(match: dict[str, Any], of: str) -> list[float] | None:
    """The verified box of a match: in the query (of="query") or in the indexed image."""
    key = "query_box" if of == "query" else "match_box"
    found = match.get(key) or (match.get("verification") or {}).get(key)
    return list(found) if found else None


def box_scores(source: Path, queries: dict[str, dict[str, Any]],
               groups: dict[str, str | None]) -> dict[str, dict[str, float]]:
    """Per edit with a truth box: how many rank-1 correct matches carry a box, and how many
    of those reach IoU >= BOX_IOU."""
    info = json.loads((source / "evalset.json").read_text(encoding="utf-8"))
    out: dict[str, list[float]] = {}
    for rel, truth in info.get("truth", {}).items():
        q = queries.get(str(source / rel))
        if not q or not q["matches"]:
            continue
        top = q["matches"][0]
        group = Path(rel).parts[0]
        if groups.get(os.path.abspath(top["path"])) != group:
            continue
        box = match_box(top, truth["of"])
        out.setdefault(Path(rel).stem.rpartition("__")[2], []).append(
            -1.0 if box is None else iou(box, truth["box"]))
    return {e: {"found": len(v), "with_box": sum(x >= 0 for x in v),
                f"iou>={BOX_IOU}": sum(x >= BOX_IOU for x in v)} for e, v in sorted(out.items())}


def run_strong(cli: Cli, source: Path, work: Path, top_k: int, index_args: Sequence[str],
               search_args: Sequence[str], reuse: bool) -> dict[str, Any]:
    groups, queries = link_database(source, work)
    index_s = index(cli, work / "db", work, index_args, reuse)
    raw = work / "search.json"
    search_s = cli(["search", *queries, "--index-dir", str(work / "index"), "--format", "json",
                    "--top-k", str(top_k), "--quiet", *search_args], raw)
    doc = json.loads(raw.read_text(encoding="utf-8"))
    by_query = {os.path.abspath(q["query"]): q for q in doc["queries"]}
    qgroups = {it.path: it.group for it in load_evalset(source).items}
    relevant = {g: sum(1 for v in groups.values() if v == g) for g in set(groups.values())}
    scores = [score_query(q, str(qgroups[q]), by_query.get(os.path.abspath(q), {}).get(
        "matches", []), groups, relevant.get(qgroups[q], 0)) for q in queries]
    edits = sorted({s.edit or "" for s in scores})
    return {"set": str(source), "queries": len(queries), "database": len(groups),
            "index_seconds": round(index_s, 1), "search_seconds": round(search_s, 1),
            "overall": asdict(summarise("overall", scores, KS)),
            "by_edit": [asdict(summarise(e, [s for s in scores if (s.edit or "") == e], KS))
                        for e in edits],
            "boxes": box_scores(source, by_query, groups),
            "misses": [{"query": s.path, "top": s.top_path, "first_hit": s.first_hit}
                       for s in scores if s.first_hit != 1]}


def print_strong(result: dict[str, Any]) -> None:
    print(f"{result['set']}: {result['queries']} queries, {result['database']} indexed "
          f"(index {result['index_seconds']} s, search {result['search_seconds']} s)")
    print("| edit | queries | R@1 | R@5 | mAP |\n| --- | ---: | ---: | ---: | ---: |")
    for s in [*result["by_edit"], result["overall"]]:
        print(f"| {s['name']} | {s['queries']} | {s['recall'][1]:.3f} | {s['recall'][5]:.3f} "
              f"| {s['mean_ap']:.3f} |")
    for edit, b in result["boxes"].items():
        print(f"box {edit}: {b['with_box']} of {b['found']} found at rank 1 carry a box, "
              f"{b[f'iou>={BOX_IOU}']} with IoU >= {BOX_IOU}")


# ---- near-duplicate pools --------------------------------------------------------------------


def linked_pairs(doc: dict[str, Any], count_similar: bool) -> tuple[set[frozenset[str]], int]:
    """The pairs `dupes` links (file names), and the size of its largest group."""
    pairs: set[frozenset[str]] = set()
    largest = 0
    for group in doc["groups"]:
        members = [m for m in group["files"]
                   if count_similar or m.get("kind") not in ("similar",)]
        largest = max(largest, len(group["files"]))
        names = [os.path.basename(m["path"]) for m in members]
        pairs.update(frozenset(p) for p in combinations(names, 2))
    return pairs, largest


def pair_set(pairs: Iterable[Sequence[str]]) -> set[frozenset[str]]:
    return {frozenset(p) for p in pairs}


def run_dupes(cli: Cli, pool: Path, work: Path, index_args: Sequence[str],
              dupes_args: Sequence[str], reuse: bool, count_similar: bool) -> dict[str, Any]:
    truth = json.loads((pool / "truth.json").read_text(encoding="utf-8"))
    index_s = index(cli, pool / "pool", work, index_args, reuse)
    raw = work / "dupes.json"
    dupes_s = cli(["dupes", "--index-dir", str(work / "index"), "--format", "json", "--quiet",
                   *dupes_args], raw)
    doc = json.loads(raw.read_text(encoding="utf-8"))
    linked, largest = linked_pairs(doc, count_similar)
    grouped, _ = linked_pairs(doc, True)  # any tier: with --similar, the similar tier's recall
    copies, similar = pair_set(truth["copies"]), pair_set(truth["similar"])
    right = linked & copies
    return {"pool": str(pool), "images": truth["images"], "copy_pairs": len(copies),
            "similar_pairs": len(similar), "linked_pairs": len(linked),
            "precision": len(right) / len(linked) if linked else 1.0,
            "recall": len(right) / len(copies) if copies else 1.0,
            "similar_linked": len(linked & similar), "similar_grouped": len(grouped & similar),
            "largest_group": largest,
            "index_seconds": round(index_s, 1), "dupes_seconds": round(dupes_s, 1),
            "missed": sorted(sorted(p) for p in copies - linked),
            "wrong": sorted(sorted(p) for p in linked - copies)[:50]}


def print_dupes(r: dict[str, Any]) -> None:
    print(f"{r['pool']}: {r['images']} images, {r['copy_pairs']} copy pairs, "
          f"{r['similar_pairs']} similar pairs (index {r['index_seconds']} s)")
    print(f"linked {r['linked_pairs']} pairs: precision {r['precision']:.3f}, "
          f"recall {r['recall']:.3f}; similar-shot pairs linked {r['similar_linked']} "
          f"(in any tier {r['similar_grouped']}); largest group {r['largest_group']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("mode", choices=("strong", "dupes"))
    ap.add_argument("source", type=Path, help="the set (strong) or the pool (dupes)")
    ap.add_argument("--work", type=Path, default=None, help="keep index and raw JSON here")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--index-args", default="", help="extra `index` flags, one string")
    ap.add_argument("--reuse", action="store_true", help="search an index already in --work")
    ap.add_argument("--checkout", type=Path, default=None,
                    help="run the deepvision of this source tree (default: this one's), e.g. "
                         "a branch with the verifier against this harness and these sets")
    ap.add_argument("--count-similar", action="store_true",
                    help="dupes: count pairs with a `similar` member as links too")
    args, passed = ap.parse_known_args(argv)
    cli = Cli((args.checkout or HERE).resolve())
    work = (args.work or Path(tempfile.mkdtemp(prefix="verify-quality-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.source = args.source.resolve()  # the CLI runs in the checkout's folder
    extra = shlex.split(args.index_args)
    if args.mode == "strong":
        result = run_strong(cli, args.source, work, args.top_k, extra, passed, args.reuse)
        print_strong(result)
    else:
        result = run_dupes(cli, args.source, work, extra, passed, args.reuse, args.count_similar)
        print_dupes(result)
    result |= {"command": command_line(), "machine": machine(), "passed_flags": passed,
               "checkout": str(cli.checkout)}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
