"""`eval --synthetic DIR`: how well deepvision finds edited copies of the user's own photos,
and which `dupes --threshold` keeps a target precision on them.

A sample of DIR's images becomes the originals; each gets the edited copies of edits.ROBUST_EDITS
(or, with `--edits strong|all`, issue #25's STRONG_EDITS: a 25 % crop, inside a web page, a photo
of a screen, occlusion, an 80-px thumbnail, stacked edits), written to a scratch folder, deleted
afterwards unless kept; other images of DIR, up to `distractors` of them, are the rest of the
database. The eval then runs with the `originals` protocol (each copy searches the originals and
the distractors, as `search` against an index of the library would), and the pairwise scores of
the stored vectors give the calibration: the lowest threshold at which the pairs `dupes` would
link are at least `target_precision` true copies. Distractors that are themselves copies of each
other count as false pairs, so the suggestion errs on the strict side.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepvision.errors import NoImagesError, UsageError
from deepvision.pipeline.decode import DecodeError, load_rgb
from deepvision.pipeline.discover import discover
from deepvision.progress import Reporter
from deepvision.services import edits
from deepvision.services.eval_set import EDIT_SEPARATOR, ORIGINAL_EDIT, EvalItem, EvalSet
from deepvision.services.evaluate import EvalRequest, EvalResult, evaluate_set
from deepvision.types import Failure

if TYPE_CHECKING:
    from deepvision.pipeline.embedder import Embedder

COPY_MAX_SIDE = 1024  # copies are made from the photo at most this large: fast, still > 224 px
COPY_QUALITY = 90  # JPEG quality of the copies (the low-quality edit keeps its own)


@dataclass(frozen=True)
class SyntheticRequest:
    source: Path  # the user's folder
    eval: EvalRequest  # model, descriptor, embedding options; its source and protocol are ours
    sample: int = 40  # photos that get edited copies
    distractors: int = 300  # other photos of the folder in the database (0: none)
    seed: int = 0  # which photos are sampled
    target_precision: float = 0.99
    keep: Path | None = None  # write the copies here and keep them (None: a temp folder)
    edits: str = "robust"  # which edits the copies get: a key of edits.EDIT_SETS


@dataclass(frozen=True)
class Calibration:
    """The `dupes --threshold` suggestion: at `threshold`, `precision` of the pairs above it are
    an original and its copy (or two copies of one photo), and they are `recall` of all such
    pairs. threshold is None when no threshold reaches the target."""

    target_precision: float
    threshold: float | None
    precision: float
    recall: float
    recall_by_edit: dict[str, float]  # original-copy pairs above the threshold, per edit
    true_pairs: int
    other_pairs: int
    # The copy/similar boundary on these photos (match.tiers), for the pairs above the
    # threshold: per edit, the share of original-copy pairs `dupes` calls `copy`; and how
    # many pairs of two different photos it calls `copy` (0 is right). Empty when the
    # threshold is None or the copies were not checked.
    copy_tier_by_edit: dict[str, float] = field(default_factory=dict)
    other_pairs_called_copy: int = 0


@dataclass
class SyntheticResult:
    eval: EvalResult
    calibration: Calibration
    sampled: int
    copies_dir: str | None  # where the copies were kept, or None (deleted)
    failures: list[Failure] = field(default_factory=list)


def run_synthetic(req: SyntheticRequest, rep: Reporter,
                  embedder: Embedder | None = None) -> SyntheticResult:
    """Sample, copy, evaluate, calibrate. embedder: an Embedder to reuse (tests inject a stub)."""
    if not req.source.is_dir():
        raise UsageError(f"--synthetic {req.source}: not a folder")
    if not 0.0 < req.target_precision < 1.0:
        raise UsageError("--target-precision must be between 0 and 1 (e.g. 0.99)")
    if req.edits not in edits.EDIT_SETS:
        raise UsageError(f"--edits {req.edits!r}: choose one of {', '.join(edits.EDIT_SETS)}")
    found = discover([req.source])
    if not found.files:
        raise NoImagesError(f"no images found in {req.source}")
    order = np.random.default_rng(req.seed).permutation(len(found.files))
    picked = [found.files[i].path for i in order]
    workdir = Path(req.keep) if req.keep else Path(tempfile.mkdtemp(prefix="deepvision-synth-"))
    try:
        evalset, sampled = _make_set(picked, req, workdir, rep)
        result = evaluate_set(evalset, replace(req.eval, source=req.source,
                                               protocol="originals"), rep, embedder)
        calibration = calibrate(result, req.target_precision)
        if calibration.threshold is not None:  # the copies are still on disk here
            calibration = tier_calibration(result, calibration)
    finally:
        if not req.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return SyntheticResult(result, calibration, sampled,
                           str(workdir.resolve()) if req.keep else None,
                           [*found.failures, *evalset.failures])


def _make_set(paths: list[str], req: SyntheticRequest, workdir: Path,
              rep: Reporter) -> tuple[EvalSet, int]:
    """The first `sample` readable photos with their copies, then up to `distractors` more."""
    items: list[EvalItem] = []
    failures: list[Failure] = []
    rest = iter(paths)
    sampled = 0
    with rep.progress(req.sample, "making edited copies") as advance:
        while sampled < req.sample:  # checked before taking a path: none is skipped
            path = next(rest, None)
            if path is None:
                break
            try:
                made = _copies(path, workdir / f"g{sampled:04d}", edits.EDIT_SETS[req.edits])
            except DecodeError as exc:
                failures.append(Failure(path, exc.reason, exc.message))
                continue
            group = os.path.relpath(path, req.source)  # the per-group lines name the photo
            items.extend(EvalItem(p, group) for p in made)
            sampled += 1
            advance(1)
    if sampled == 0:
        raise NoImagesError(f"none of the images in {req.source} could be read "
                            f"(e.g. {failures[0].path}: {failures[0].message})")
    items.extend(EvalItem(p, None) for _, p in zip(range(req.distractors), rest, strict=False))
    return EvalSet(tuple(items), tuple(failures)), sampled


def _copies(path: str, folder: Path, kinds: Mapping[str, edits.Edit]) -> list[str]:
    """The photo (linked as <stem>__original.<ext>, its pixels untouched) and its copies."""
    img = load_rgb(path)
    img.thumbnail((COPY_MAX_SIDE, COPY_MAX_SIDE))
    folder.mkdir(parents=True)
    stem = "photo"  # the user's file name may hold the separator itself
    original = folder / f"{stem}{EDIT_SEPARATOR}{ORIGINAL_EDIT}{os.path.splitext(path)[1]}"
    os.symlink(os.path.abspath(path), original)
    out = [str(original)]
    for name, edit in kinds.items():
        copy = edit(img)
        target = folder / f"{stem}{EDIT_SEPARATOR}{name}.jpg"
        if getattr(copy, "format", None) == "JPEG":  # a low-quality edit: keep its tables
            copy.save(target, "JPEG", quality="keep")
        else:
            copy.convert("RGB").save(target, "JPEG", quality=COPY_QUALITY)
        out.append(str(target))
    return out


def calibrate(result: EvalResult, target: float) -> Calibration:
    """The lowest pair score at which at least `target` of the pairs scoring that much or more
    are true copies, from the stored vectors (what `dupes` compares; no query-time turns)."""
    assert result.vectors is not None
    vectors, paths = result.vectors, result.paths
    groups = np.array([g or "" for g in result.item_groups])
    iu, ju = np.triu_indices(len(paths), 1)
    scores = np.einsum("ij,ij->i", vectors[iu], vectors[ju])
    true = (groups[iu] == groups[ju]) & (groups[iu] != "")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(true[order])
    precision = tp / np.arange(1, len(order) + 1)
    ok = np.flatnonzero(precision >= target)
    n_true = int(true.sum())
    if not len(ok) or not n_true:
        return Calibration(target, None, 0.0, 0.0, {}, n_true, int((~true).sum()))
    last = int(ok[-1])
    threshold = float(scores[order[last]])
    return Calibration(target, round(threshold, 4), float(precision[last]),
                       float(tp[last] / n_true), _recall_by_edit(result, groups, threshold),
                       n_true, int((~true).sum()))


def _recall_by_edit(result: EvalResult, groups: np.ndarray, threshold: float) -> dict[str, float]:
    """Per edit: the share of copies whose score with their original reaches the threshold."""
    vectors, paths = result.vectors, result.paths
    assert vectors is not None
    original = {g: i for i, (g, p) in enumerate(zip(groups, paths, strict=True))
                if g and p.rsplit(EDIT_SEPARATOR, 1)[-1].startswith(ORIGINAL_EDIT + ".")}
    hits: dict[str, list[bool]] = {}
    for i, (g, p) in enumerate(zip(groups, paths, strict=True)):
        if not g or g not in original or i == original[g]:
            continue
        edit = os.path.splitext(p.rsplit(EDIT_SEPARATOR, 1)[-1])[0]
        hits.setdefault(edit, []).append(float(vectors[i] @ vectors[original[g]]) >= threshold)
    return {e: float(np.mean(v)) for e, v in sorted(hits.items())}


def tier_calibration(result: EvalResult, c: Calibration) -> Calibration:
    """The copy/similar boundary measured on the user's photos: every pair above the dupes
    threshold put in its tier, as `dupes` would (match.tiers, evidence from the files)."""
    from deepvision.match.tiers import GreySquares, tier
    from deepvision.match.verifier import FileEvidence
    from deepvision.types import Tier

    assert result.vectors is not None and c.threshold is not None
    vectors, paths = result.vectors, result.paths
    groups = [g or "" for g in result.item_groups]
    files = FileEvidence()
    grey = GreySquares(files.loader)

    copies: dict[str, list[bool]] = {}
    others = 0
    iu, ju = np.triu_indices(len(paths), 1)
    linked = np.einsum("ij,ij->i", vectors[iu], vectors[ju]) >= c.threshold
    for i, j in zip(iu[linked].tolist(), ju[linked].tolist(), strict=True):
        ea, eb = files.stored(paths[i]), files.stored(paths[j])
        kind = Tier.SIMILAR if ea is None or eb is None else tier(
            ea, eb, partial(grey, paths[i]), partial(grey, paths[j]))[0]
        if groups[i] and groups[i] == groups[j]:
            edit = _pair_edit(paths[i], paths[j])
            if edit is not None:
                copies.setdefault(edit, []).append(kind == Tier.COPY)
        else:
            others += kind == Tier.COPY
    return replace(c, copy_tier_by_edit={e: float(np.mean(v)) for e, v in sorted(copies.items())},
                   other_pairs_called_copy=others)


def _pair_edit(a: str, b: str) -> str | None:
    """The edit of an original-copy pair (None for two copies of one photo)."""
    names = [os.path.splitext(p.rsplit(EDIT_SEPARATOR, 1)[-1])[0] for p in (a, b)]
    if ORIGINAL_EDIT not in names:
        return None
    return next(n for n in names if n != ORIGINAL_EDIT) if names != [ORIGINAL_EDIT] * 2 else None
