"""`index` and `rebuild`: make an index match the folders, doing only the work changes require.

A run: discover files -> compare size/mtime with the catalog -> hash what changed -> link known
content (renames, duplicates, touched files) without the model -> embed only new content, in
committed chunks -> save the FAISS file. Killed at any point, the catalog holds every committed
chunk and the next run resumes from there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepvision import models
from deepvision.catalog import Catalog, FileRow, as_stored
from deepvision.devicedecode import decoding_note, make_decoder
from deepvision.discover import Discovery, Failure, FileRecord, Filters, discover
from deepvision.embed import EmbedOptions, embed_with, pick_device
from deepvision.errors import IncompatibleIndexError, NoImagesError, UsageError
from deepvision.index import (
    PQ_MIN_VECTORS,
    RETRAIN_GROWTH,
    IndexPlan,
    VectorIndex,
    plan_index,
)
from deepvision.render import Reporter
from deepvision.storage import (
    Location,
    Manifest,
    build_from_catalog,
    load_vectors,
    new_catalog_name,
    read_manifest,
    remove_stale_files,
    save_vectors,
    write_manifest,
    writer_lock,
)


@dataclass(frozen=True)
class IndexRequest:
    roots: tuple[Path, ...]
    location: Location
    model: str = models.AUTO
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    filters: Filters = Filters()
    retry_failed: bool = False
    commit_every: int = 1000
    wait: bool = False
    index_type: str | None = None  # None: keep the index's own (a new index: auto)
    descriptor: models.Descriptor | None = None  # None: keep the index's own (new: default)
    max_memory: int | None = None  # bytes for the FAISS structure; None: keep / half the RAM


@dataclass
class IndexSummary:
    index: str
    model: str
    device: str | None  # None: nothing needed the model
    decoder: str | None = None  # JPEG decoder used; None: nothing needed the model
    added: int = 0
    updated: int = 0
    renamed: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0  # images that went through the network this run
    failures: list[Failure] = field(default_factory=list)  # new this run
    still_failing: int = 0  # failed earlier, unchanged since, not retried
    ignored: int = 0  # non-image files seen
    total_files: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0


@dataclass
class _Plan:
    # (file, content hash, vector id, kind of change)
    links: list[tuple[FileRecord, str, int, str]] = field(default_factory=list)
    embed: dict[str, list[FileRecord]] = field(default_factory=dict)  # hash -> files with it
    gone: list[FileRow] = field(default_factory=list)
    failed: list[tuple[FileRecord, Failure]] = field(default_factory=list)  # hashing failures


def run_index(req: IndexRequest, rep: Reporter, rebuild: bool = False) -> IndexSummary:
    start = time.perf_counter()
    loc = req.location
    with writer_lock(loc, req.wait):
        existing = read_manifest(loc) if loc.exists() else None
        fresh = rebuild or existing is None
        roots = _roots(req, existing, loc)
        manifest = None if fresh else existing
        found = discover(roots, req.filters)
        if fresh and not found.files and not found.failures:
            raise NoImagesError(f"no image files found in {', '.join(map(str, roots))} "
                                "(looked for .jpg .png .webp .heic .avif .tif .bmp .gif)")
        if manifest is None:
            manifest = _new_manifest(req, loc, rep)
        else:
            _check_compatible(req, manifest, loc)
        if req.index_type is not None:
            plan_index(req.index_type, 0, manifest.dim)  # an unknown type fails before any work
            manifest.index_type = req.index_type
        if req.max_memory is not None:
            manifest.max_memory = req.max_memory
        catalog = Catalog(loc.dir / manifest.catalog)
        try:
            if fresh and not rebuild:
                write_manifest(loc, manifest)  # a new index is searchable from its first commit
            summary = _update(req, manifest, catalog, roots, found, rep)
            with catalog.write():
                for root in roots:
                    catalog.add_root(str(root))
            write_manifest(loc, manifest)  # for rebuild: the atomic switch to the new catalog
            remove_stale_files(loc, manifest, catalog)
            summary.total_files = catalog.counts()["files"]
        finally:
            catalog.close()
    summary.seconds = time.perf_counter() - start
    summary.images_per_second = summary.embedded / summary.seconds if summary.seconds else 0.0
    return summary


def _roots(req: IndexRequest, manifest: Manifest | None, loc: Location) -> list[Path]:
    if req.roots:
        return [Path(os.path.abspath(r)) for r in req.roots]
    if manifest is not None:  # `rebuild` with no folder: the folders this index was built from
        catalog = Catalog(loc.dir / manifest.catalog, readonly=True)
        try:
            recorded = [Path(r) for r in catalog.roots()]
        finally:
            catalog.close()
        missing = [str(r) for r in recorded if not r.is_dir()]
        if missing:  # an unmounted disk must not turn into an empty index
            raise UsageError(f"recorded folder {missing[0]} is missing (unmounted or moved?); "
                             "pass the folders to index explicitly: deepvision rebuild DIR")
        if recorded:
            return recorded
    raise NoImagesError("no folder given and the index records none; pass DIR")


def _new_manifest(req: IndexRequest, loc: Location, rep: Reporter) -> Manifest:
    spec, weights, notice = models.resolve(req.model, req.weights)
    if notice:
        rep.info(notice)
    descriptor = req.descriptor or models.Descriptor()
    return Manifest(name=loc.name, model=spec.name, weights=weights.identity,
                    weights_origin=weights.origin, weights_path=str(weights.path), dim=spec.dim,
                    catalog=new_catalog_name(), descriptor=descriptor.to_dict())


def _check_compatible(req: IndexRequest, manifest: Manifest, loc: Location) -> None:
    hint = f"to switch, run: deepvision rebuild DIR --name {loc.name}"
    if req.model not in (models.AUTO, manifest.model):
        raise IncompatibleIndexError(
            f"index {loc.name!r} was built with model {manifest.model}, not {req.model}; "
            f"{hint} --model {req.model}")
    if req.descriptor is not None and req.descriptor.to_dict() != manifest.descriptor:
        old = models.Descriptor.from_dict(manifest.descriptor).label
        raise IncompatibleIndexError(
            f"index {loc.name!r} was built with descriptor {old}, not {req.descriptor.label}; "
            f"{hint} with the new --pooling/--flip/--scales")
    if req.weights is not None:
        identity = models.file_identity(req.weights)
        if identity != manifest.weights:
            raise IncompatibleIndexError(
                f"--weights {req.weights} ({identity}) differ from the weights index "
                f"{loc.name!r} was built with ({manifest.weights}); {hint} --weights FILE")


def _update(req: IndexRequest, manifest: Manifest, catalog: Catalog, roots: Sequence[Path],
            found: Discovery, rep: Reporter) -> IndexSummary:
    summary = IndexSummary(index=os.path.abspath(req.location.dir), model=manifest.model,
                           device=None, ignored=found.ignored)
    known: dict[str, FileRow] = {}
    for root in roots:
        known.update(catalog.files_under(str(root)))
    plan = _plan(req, catalog, known, found, summary)
    vectors = _Vectors(catalog, manifest, req.location)
    _apply_links(plan, known, catalog, vectors, summary)
    if plan.embed:
        _embed_new(req, manifest, catalog, vectors, plan, known, rep, summary)
    else:
        rep.info(f"model {manifest.model}: no new or changed images, model not loaded")
    vectors.finish()
    kind = manifest.plan.kind
    if manifest.index_type not in ("auto", kind):
        rep.info(f"index type {manifest.index_type} needs more vectors to train (ivfpq: "
                 f"{PQ_MIN_VECTORS}); using exact {kind} search until the index has them")
    return summary


def _plan(req: IndexRequest, catalog: Catalog, known: dict[str, FileRow], found: Discovery,
          summary: IndexSummary) -> _Plan:
    plan = _Plan()
    changed: list[FileRecord] = []
    seen = set()
    for rec in found.files:
        seen.add(rec.path)
        row = known.get(rec.path)
        if _unchanged(row, rec, req.retry_failed):
            summary.unchanged += row.status == "ok"
            summary.still_failing += row.status == "failed"
        else:
            changed.append(rec)
    for failure, rec in _recordable(found.failures, summary):
        seen.add(rec.path)
        if _unchanged(known.get(rec.path), rec, req.retry_failed):
            summary.still_failing += 1
        else:
            plan.failed.append((rec, failure))
    plan.gone = [row for path, row in known.items() if path not in seen]
    hashed = hash_files(changed)
    by_hash = catalog.vector_ids_for(h for _, h, _ in hashed if h)
    gone_hashes = {row.hash for row in plan.gone if row.status == "ok"}
    for rec, digest, failure in hashed:
        if failure is not None:
            if failure.reason == "vanished":
                summary.failures.append(failure)
            else:
                plan.failed.append((rec, failure))
            continue
        row = known.get(rec.path)
        if digest in by_hash:
            plan.links.append((rec, digest, by_hash[digest], _link_kind(row, digest, gone_hashes)))
        else:
            plan.embed.setdefault(digest, []).append(rec)
    return plan


def _unchanged(row: FileRow | None, rec: FileRecord, retry_failed: bool) -> bool:
    return (row is not None and row.size == rec.size and row.mtime_ns == rec.mtime_ns
            and (row.status == "ok" or not retry_failed))


def _recordable(failures: list[Failure],
                summary: IndexSummary) -> Iterable[tuple[Failure, FileRecord]]:
    """Discovery failures that belong to a file (a broken link, a RAW photo) are recorded in the
    catalog like decode failures, so they are reported once, not every night."""
    for failure in failures:
        try:
            st = os.lstat(failure.path)
        except OSError:
            st = None
        if st is None or failure.reason not in ("broken-symlink", "unsupported-format"):
            summary.failures.append(failure)
            continue
        yield failure, FileRecord(failure.path, st.st_size, st.st_mtime_ns)


def _link_kind(row: FileRow | None, digest: str, gone_hashes: set[str]) -> str:
    if row is not None and row.status == "ok":
        return "unchanged" if row.hash == digest else "updated"
    # New here (or only ever failed here): a rename if a file with this content just went.
    return "renamed" if digest in gone_hashes else "added"


def hash_files(files: list[FileRecord]) -> list[tuple[FileRecord, str, Failure | None]]:
    """Content hashes (xxh3-128) in a thread pool: file reads and xxhash release the GIL."""
    if not files:
        return []
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(hash_one, files))


def hash_one(rec: FileRecord) -> tuple[FileRecord, str, Failure | None]:
    import xxhash

    h = xxhash.xxh3_128()
    try:
        with open(rec.path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except FileNotFoundError:
        return rec, "", Failure(rec.path, "vanished", "file disappeared before it was read")
    except PermissionError:
        return rec, "", Failure(rec.path, "permission-denied",
                                "permission denied: make the file readable")
    except OSError as exc:
        return rec, "", Failure(rec.path, "io-error", f"read error: {exc.strerror}")
    return rec, h.hexdigest(), None


class _Vectors:
    """The in-memory FAISS state, loaded only when something actually changes.

    Changes a structure cannot take in place (removal from HNSW) and a structure that no longer
    fits the collection (auto: flat -> IVF; IVF grown 4x since training) are handled at the end
    of the run by rebuilding from the stored vectors, without the model."""

    def __init__(self, catalog: Catalog, manifest: Manifest, loc: Location) -> None:
        self.catalog, self.manifest, self.loc = catalog, manifest, loc
        self._index: VectorIndex | None = None
        self.dirty = False
        self.rebuild = False

    def load(self) -> VectorIndex | None:
        if self._index is None and not self.rebuild:
            with self.catalog.snapshot():
                self._index = load_vectors(self.catalog, self.manifest, self.loc.dir)
        return None if self.rebuild else self._index

    def add(self, ids: list[int], vecs: np.ndarray) -> None:
        index = self.load()
        if ids and index is not None:
            index.add(np.asarray(ids, np.int64), vecs)
            self.dirty = True

    def remove(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        index = self.load()
        if not ids or index is None:
            return
        if index.plan.removes_in_place:
            index.remove(ids)
            self.dirty = True
        else:
            self.rebuild = True

    def finish(self) -> None:
        """Save the FAISS file if anything changed, restructuring first if the plan says so."""
        n = self.catalog.vector_count()
        current = self._index.plan if self._index is not None else self.manifest.plan
        wanted = desired_plan(self.manifest, current, n)
        stale = self.catalog.get_meta("faiss_generation") != str(self.catalog.generation)
        if self.rebuild or wanted != current:
            with self.catalog.snapshot():
                self._index = build_from_catalog(self.catalog, self.manifest.dim, wanted)
            self.rebuild = False
        elif not (self.dirty or stale):
            return
        index = self.load()
        assert index is not None
        save_vectors(self.catalog, index, self.loc.dir)
        self.manifest.index_plan = index.plan.to_dict()


def desired_plan(manifest: Manifest, current: IndexPlan, n: int) -> IndexPlan:
    """Keep the current structure unless the requested type now calls for another one, or an
    IVF index has grown or shrunk 4x since it was trained (its lists no longer fit)."""
    wanted = plan_index(manifest.index_type, n, manifest.dim, manifest.max_memory or None)
    if wanted.kind != current.kind:
        return wanted
    if current.needs_training:
        low, high = current.trained_on / RETRAIN_GROWTH, current.trained_on * RETRAIN_GROWTH
        return current if low <= n <= high else wanted
    return current


def _apply_links(plan: _Plan, known: dict[str, FileRow], catalog: Catalog, vectors: _Vectors,
                 summary: IndexSummary) -> None:
    """Everything that needs no model, in one transaction."""
    if not (plan.links or plan.gone or plan.failed):
        return
    vectors.load()  # before the transaction: FAISS must not already hold what it commits
    renamed_hashes = {h for _, h, _, kind in plan.links if kind == "renamed"}
    with catalog.write():
        orphans = [row.vector_id for row in plan.gone if row.vector_id is not None]
        for rec, digest, vid, kind in plan.links:
            row = known.get(rec.path)
            if row is not None and row.vector_id is not None and row.vector_id != vid:
                orphans.append(row.vector_id)
            catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, digest, vid)
            setattr(summary, kind, getattr(summary, kind) + 1)
        for rec, failure in plan.failed:
            row = known.get(rec.path)
            if row is not None and row.vector_id is not None:
                orphans.append(row.vector_id)
            catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, None, None, "failed",
                                failure.reason, failure.message)
            summary.failures.append(failure)
        catalog.delete_files(row.path for row in plan.gone)
        summary.removed += sum(1 for row in plan.gone
                               if row.status == "failed" or row.hash not in renamed_hashes)
        dropped = catalog.drop_orphans(orphans)
    vectors.remove(dropped)


def _embed_new(req: IndexRequest, manifest: Manifest, catalog: Catalog, vectors: _Vectors,
               plan: _Plan, known: dict[str, FileRow], rep: Reporter,
               summary: IndexSummary) -> None:
    spec = models.get_spec(manifest.model)
    weights = models.weights_for_index(manifest.model, manifest.weights, manifest.weights_path,
                                       req.weights)
    device = pick_device(req.embed.device)
    decoder = make_decoder(req.embed.decoder, device)
    summary.device = str(device)
    summary.decoder = decoder.name if decoder is not None else "pil"
    rep.info(f"model {spec.name} ({weights.origin}) on {device}: embedding {len(plan.embed)} "
             f"new or changed images; {decoding_note(decoder, req.embed.decoder, device)}")
    model = models.load_model(spec, weights, device,
                              models.Descriptor.from_dict(manifest.descriptor),
                              compile=req.embed.compile)
    hashes = list(plan.embed)
    firsts = [plan.embed[h][0].path for h in hashes]
    pending: list[tuple[str, np.ndarray | None, Failure | None]] = []
    with rep.progress(len(hashes), "embedding") as advance:
        for batch in embed_with(model, firsts, device, req.embed, decoder):
            pairs = zip(batch.items, batch.vectors, strict=True)
            pending.extend((hashes[i], v, None) for i, v in pairs)
            pending.extend((hashes[i], None, f) for i, f in batch.failures)
            advance(len(batch.items) + len(batch.failures))
            if len(pending) >= req.commit_every:
                _commit(pending, plan, known, catalog, vectors, summary)
                pending = []
        _commit(pending, plan, known, catalog, vectors, summary)


def _commit(pending: list[tuple[str, np.ndarray | None, Failure | None]], plan: _Plan,
            known: dict[str, FileRow], catalog: Catalog, vectors: _Vectors,
            summary: IndexSummary) -> None:
    """One chunk of embeddings (and decode failures) in one transaction."""
    if not pending:
        return
    new_ids: list[int] = []
    new_vecs: list[np.ndarray] = []
    orphans: list[int] = []
    vectors.load()  # before the transaction: FAISS must not already hold what it commits
    with catalog.write():
        for digest, vec, failure in pending:
            vid = None
            if vec is not None:
                vid = catalog.add_vector(digest, vec)
                new_ids.append(vid)
                new_vecs.append(vec)
                summary.embedded += 1
            for rec in plan.embed[digest]:
                _record(catalog, rec, digest, vid, failure, known.get(rec.path), orphans, summary)
        dropped = catalog.drop_orphans(orphans)
    vectors.remove(dropped)
    if new_vecs:
        vectors.add(new_ids, as_stored(np.stack(new_vecs)))


def _record(catalog: Catalog, rec: FileRecord, digest: str, vid: int | None,
            failure: Failure | None, row: FileRow | None, orphans: list[int],
            summary: IndexSummary) -> None:
    if failure is not None and failure.reason == "vanished":
        summary.failures.append(Failure(rec.path, failure.reason, failure.message))
        return  # nothing to record: the next run sees it gone (or back)
    if row is not None and row.vector_id is not None:
        orphans.append(row.vector_id)
    if failure is not None:
        catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, digest, None, "failed",
                            failure.reason, failure.message)
        summary.failures.append(Failure(rec.path, failure.reason, failure.message))
        return
    catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, digest, vid)
    if row is None or row.status != "ok":  # a file that only ever failed is new to the index
        summary.added += 1
    else:
        summary.updated += 1


@dataclass
class RestructureSummary:
    index: str
    index_type: str
    index_factory: str
    vectors: int
    seconds: float


def restructure(loc: Location, index_type: str | None, max_memory: int | None,
                wait: bool = False) -> RestructureSummary:
    """Rebuild only the FAISS structure from the stored vectors: no decoding, no model."""
    start = time.perf_counter()
    with writer_lock(loc, wait):
        manifest = read_manifest(loc)
        if index_type is not None:
            manifest.index_type = index_type
        if max_memory is not None:
            manifest.max_memory = max_memory
        catalog = Catalog(loc.dir / manifest.catalog)
        try:
            n = catalog.vector_count()
            plan = plan_index(manifest.index_type, n, manifest.dim, manifest.max_memory or None)
            with catalog.snapshot():
                index = build_from_catalog(catalog, manifest.dim, plan)
            save_vectors(catalog, index, loc.dir)
            manifest.index_plan = index.plan.to_dict()
            write_manifest(loc, manifest)
            remove_stale_files(loc, manifest, catalog)
        finally:
            catalog.close()
    return RestructureSummary(os.path.abspath(loc.dir), index.plan.kind, index.plan.factory, n,
                              time.perf_counter() - start)
