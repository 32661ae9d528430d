"""Verification of a query's candidates: their evidence (stored, else from the files), checked
against the query's, and the ranking that puts verified matches first.

`Verifier` is what `Searcher`, `serve`, `eval` and `dupes` are given (injected): it owns the
FeatureStore of one index and how a candidate's file is read; the checks themselves are the
pure functions of verify.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

import numpy as np

from deepvision.match.features import (
    WORK_SIDE,
    Evidence,
    at_most,
    query_evidence,
    stored_evidence,
)
from deepvision.match.store import FeatureStore
from deepvision.match.verify import MIN_INLIERS, Outcome, verified_score, verify_evidence
from deepvision.progress import Reporter
from deepvision.store.catalog import FileRow
from deepvision.store.indexstore import IndexStore
from deepvision.types import Match, Verification

# Cosine similarity from which an unverified neighbour still counts as a match (a copy that
# verification could not decide on: too few keypoints on either side). The near-duplicate
# threshold of `dupes`, measured the same way (services/dupes.py DEFAULT_THRESHOLD).
MATCH_SCORE = 0.72
DEFAULT_TOP = 30  # candidates of the global search that are verified (search --verify-top)
# Only the first MIRROR_TOP candidates are also tried mirrored: a mirrored copy keeps its
# global vector close (the meme edit's mirror was found at rank 1 by the vectors alone in 98.6 %
# of the queries), and each mirrored try costs as much as the plain one.
MIRROR_TOP = 10
PIXEL_INLIERS = 2 * MIN_INLIERS  # ranking.strength of a whole-picture verification

Loader = Callable[[str], np.ndarray]  # a path -> its upright RGB pixels (H, W, 3 uint8)


def index_verifier(store: IndexStore) -> Verifier:
    """The Verifier of an index: its stored evidence (match.store), the files for the rest."""
    return Verifier(FeatureStore(store.dir))


def load_picture(path: str) -> np.ndarray:
    """A file's upright RGB pixels through the decode stage (its limits and reasons), JPEGs
    drafted down to what the features need."""
    from deepvision.pipeline.decode import load_rgb

    return at_most(np.asarray(load_rgb(path, draft_size=WORK_SIDE)))


class Verifier:
    """Checks candidates against queries. features: the index's FeatureStore (None: evidence
    is computed from the files every time); loader: reads a candidate's pixels."""

    def __init__(self, features: FeatureStore | None, loader: Loader = load_picture) -> None:
        self.features = features
        self.loader = loader

    def query(self, pixels: np.ndarray, side: int = WORK_SIDE) -> Evidence:
        return query_evidence(pixels, side)

    def evidence(self, rows: Iterable[FileRow]) -> dict[str, Evidence]:
        """Evidence per content hash of these indexed files: stored, else computed from the
        file when it is still the indexed one (same size and mtime) and stored for next time.
        A file that changed, vanished or cannot be decoded has none (verification skips it)."""
        rows = [r for r in rows if r.hash]
        have = self.features.get(r.hash for r in rows if r.hash) if self.features else {}
        made: dict[str, Evidence] = {}
        for row in rows:
            if row.hash in have or row.hash in made:
                continue
            ev = self.from_file(row)
            if ev is not None:
                made[row.hash] = ev  # type: ignore[index]
        if self.features is not None:
            self.features.put(made)
        return have | made

    def from_file(self, row: FileRow) -> Evidence | None:
        """The evidence of an indexed file, computed from it while it is still the indexed
        one; None otherwise."""
        return self._from_indexed(row, stored_evidence)

    def query_of(self, row: FileRow) -> Evidence | None:
        """An indexed file's evidence as a query's (many keypoints), from the file while it is
        still the indexed one; None otherwise. Not stored: dupes asks for it only when two
        stored evidences could not decide."""
        return self._from_indexed(row, query_evidence)

    def _from_indexed(self, row: FileRow,
                      make: Callable[[np.ndarray], Evidence]) -> Evidence | None:
        try:
            st = os.stat(row.path)
            if st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
                return None  # changed since it was indexed: not the picture the vector is of
            return make(self.loader(row.path))
        except Exception:  # any unreadable file (decode, OpenCV): no evidence, no verification
            return None

    def check(self, query: Evidence, cand: Evidence, mirror: bool = True) -> Outcome:
        return verify_evidence(query, cand, mirror=mirror)

    def rerank(self, query: Evidence, matches: Sequence[Match], rows: dict[int, FileRow],
               top: int = DEFAULT_TOP) -> list[Match]:
        """The first `top` image matches verified (a video frame is not: verified None), then
        verified matches first (strongest evidence first), the rest by score; ranks renumbered
        and `match` set."""
        checked = [m for m in matches[:top] if m.timestamp is None and m.file_id in rows]
        evidence = self.evidence(rows[m.file_id] for m in checked)  # type: ignore[index]
        out = []
        with _one_blas_thread():
            for i, m in enumerate(matches):
                row = rows.get(m.file_id) if m in checked else None  # type: ignore[arg-type]
                ev = evidence.get(row.hash) if row is not None and row.hash else None
                outcome = self.check(query, ev, i < MIRROR_TOP) if ev is not None else None
                out.append(self._verified(m, outcome))
        return ranked(out)

    @staticmethod
    def _verified(m: Match, outcome: Outcome | None) -> Match:
        if outcome is None or not outcome.decided:
            return replace(m, verified=None, verification=None, match=m.score >= MATCH_SCORE)
        v = outcome.verification
        return replace(m, verified=v is not None, verification=v, match=v is not None)


def _one_blas_thread() -> AbstractContextManager[object]:
    """Matching is many small matrix products: one BLAS thread does each in ~1 ms, where
    several threads on a busy 2-core machine took 7 ms (measured, bench/RESULTS.md #25)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def strength(v: Verification | None) -> float:
    """How strongly a verification confirms, on one scale for both methods: the keypoint
    score, or for a whole-picture (pixel) comparison the score of PIXEL_INLIERS inliers (a
    tiny picture that agrees is weaker evidence than many keypoints in one geometry)."""
    if v is None:
        return 0.0
    return v.score if v.method == "features" else verified_score(PIXEL_INLIERS)


def ranked(matches: Iterable[Match]) -> list[Match]:
    """Verified matches first, by the strength of their evidence, then by score; then the
    rest by score (ties by path, as the global search orders them)."""
    def key(m: Match) -> tuple[int, float, float, str]:
        return (0 if m.verified else 1, -strength(m.verification), -m.score, m.path)

    return [replace(m, rank=i) for i, m in enumerate(sorted(matches, key=key), 1)]


def unverified(matches: Iterable[Match]) -> list[Match]:
    """Matches verification did not check: `match` from the score alone (a match that was
    checked already keeps its verdict)."""
    return [m if m.verified is not None else replace(m, match=m.score >= MATCH_SCORE)
            for m in matches]


def fill(verifier: Verifier, rows: Iterable[FileRow], rep: Reporter, workers: int = 2,
         chunk: int = 256) -> int:
    """Compute and store the evidence of the indexed pictures that have none (after `index`
    has embedded them), on `workers` threads (OpenCV and the decoders release the GIL).
    Returns how many were computed; a file that cannot be read is skipped (a search reads it
    again, or not)."""
    from concurrent.futures import ThreadPoolExecutor

    if verifier.features is None:
        return 0
    rows = list(rows)
    missing = set(verifier.features.missing(r.hash for r in rows if r.hash))
    todo = [r for r in rows if r.hash in missing]
    done = 0
    with rep.progress(len(todo), "local features") as advance, \
            ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            made = {r.hash: ev for r, ev in zip(part, pool.map(verifier.from_file, part),
                                                strict=True) if ev is not None and r.hash}
            verifier.features.put(made)
            done += len(made)
            advance(len(part))
    return done


class FileEvidence:
    """Evidence of files by path, computed once each and held for the process (`eval`: a set
    has no index to store it in). A file that cannot be read has none."""

    def __init__(self, loader: Loader = load_picture) -> None:
        self.loader = loader
        self._stored: dict[str, Evidence | None] = {}

    def stored(self, path: str) -> Evidence | None:
        if path not in self._stored:
            try:
                self._stored[path] = stored_evidence(self.loader(path))
            except Exception:  # unreadable: unverified
                self._stored[path] = None
        return self._stored[path]

    def query(self, path: str) -> Evidence | None:
        try:
            return query_evidence(self.loader(path))
        except Exception:  # unreadable: unverified
            return None

    def reorder(self, query_path: str, paths: Sequence[str], scores: np.ndarray,
                top: int = DEFAULT_TOP) -> np.ndarray:
        """Positions of `paths` (ranked by score) in `search --verify`'s order: the first
        `top` checked against the query, verified ones first (strongest first), the rest
        as they were."""
        q = self.query(query_path)
        if q is None:
            return np.arange(len(paths))
        strength = np.zeros(len(paths))
        with _one_blas_thread():
            for i, path in enumerate(paths[:top]):
                cand = self.stored(path)
                found = verify_evidence(q, cand, mirror=i < MIRROR_TOP).verification \
                    if cand is not None else None
                strength[i] = found.score if found is not None else 0.0
        # verified first by strength, then by score (lexsort: last key is the primary one)
        return np.lexsort((-scores, -strength, strength <= 0))
