"""`index` and `rebuild`: make an index match the folders, doing only the work changes require.

A run: discover files -> compare size/mtime with the catalog -> hash what changed -> link known
content (renames, duplicates, touched files) without the model -> embed only new content, in
committed chunks -> save the FAISS file. Killed at any point, the catalog holds every committed
chunk and the next run resumes from there.
"""

# Long module: IndexRun is one run under one writer lock, its steps (discover, compare, hash,
# link, embed, commit, metadata) sharing the plan and the writer; `restructure`
# (rebuild --from-vectors) is the same lock and summary without the model.

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from deepvision.errors import (
    CorruptIndexError,
    IncompatibleIndexError,
    MassDeleteError,
    NoImagesError,
    UsageError,
    WeightsUnavailableError,
)
from deepvision.models import registry as models
from deepvision.models.descriptor import Descriptor
from deepvision.models.weights import file_identity
from deepvision.pipeline.discover import Discovery, Filters, discover
from deepvision.pipeline.embedder import EmbedOptions, report_notes
from deepvision.pipeline.hashing import Hasher, hash_files
from deepvision.pipeline.metadata import read_metadata
from deepvision.pipeline.video import VideoOptions
from deepvision.progress import Reporter
from deepvision.services.embedding import EmbedderFactory, index_embedder
from deepvision.store.catalog import Catalog, FileRow, as_stored
from deepvision.store.faiss_index import plan_index, plan_note
from deepvision.store.indexstore import IndexStore, Writer, new_catalog_name
from deepvision.store.manifest import Manifest
from deepvision.types import Change, Failure, FileRecord, Reason, Status

# Metadata reads are small header reads that mostly wait on the disk (or a network mount).
METADATA_THREADS = 8
# Discovery failures that belong to one file are recorded like decode failures, so they are
# reported once, not every night.
RECORDED_DISCOVERY = (Reason.BROKEN_SYMLINK, Reason.UNSUPPORTED_FORMAT, Reason.BAD_FILENAME,
                      Reason.SPECIAL_FILE)


@dataclass(frozen=True)
class IndexRequest:
    roots: tuple[Path, ...]
    store: IndexStore
    model: str = models.AUTO
    weights: Path | None = None
    embed: EmbedOptions = EmbedOptions()
    filters: Filters = Filters()
    retry_failed: bool = False
    commit_every: int = 1000
    wait: bool = False
    index_type: str | None = None  # None: keep the index's own (a new index: auto)
    descriptor: Descriptor | None = None  # None: keep the index's own (new: default)
    max_memory: int | None = None  # bytes for the FAISS structure; None: keep / half the RAM
    rebuild: bool = False  # re-extract everything into a fresh catalog, then switch
    allow_mass_delete: bool = False  # drop the files of a recorded folder that is now empty
    video: VideoOptions = VideoOptions()  # how video files are sampled
    ray: str | None = None  # embed on this Ray cluster (services.distributed); None: here
    # Compute the local-feature evidence of new pictures (match/; what `search --verify` and
    # `dupes` check); False: searches compute it from the files when they need it.
    local_features: bool = True


@dataclass
class IndexSummary:
    index: str
    model: str
    device: str | None  # None: nothing needed the model
    decoder: str | None = None  # JPEG decoder used; None: nothing needed the model
    backend: str | None = None  # what ran the network (torch, onnxruntime, openvino)
    engine: str = "local"  # where the network ran: "local" (this process) or "ray"
    cluster: str | None = None  # --ray: the cluster and its embedding actors
    added: int = 0
    updated: int = 0
    renamed: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0  # files (images and videos) that went through the network this run
    frames_embedded: int = 0  # of those, vectors of sampled video frames
    metadata_read: int = 0  # files whose metadata (date, camera, place, size) was read this run
    failures: list[Failure] = field(default_factory=list)  # new this run
    still_failing: int = 0  # failed earlier, unchanged since, not retried
    ignored: int = 0  # non-image files seen
    total_files: int = 0
    seconds: float = 0.0  # the whole run
    images_per_second: float = 0.0  # embedded / seconds: the whole run, model loading and all
    embed_seconds: float = 0.0  # the embedding stage alone (what the progress bar times)
    files_per_second: float = 0.0  # files through the network / embed_seconds: the bar's rate
    local_features: int = 0  # pictures whose local-feature evidence this run computed

    def count(self, change: Change, n: int = 1) -> None:
        setattr(self, change.value, getattr(self, change.value) + n)


@dataclass(frozen=True)
class Link:
    """A changed or new file whose content is already indexed: no model needed."""

    record: FileRecord
    digest: str
    vector_id: int | None  # an image's vector; None for a video (its frames go by hash)
    change: Change


@dataclass(frozen=True)
class Embedded:
    """What the network made of one new content hash: its vectors (one for an image, one per
    sampled frame of a video, times[i] for vectors[i]) or a failure."""

    digest: str
    vectors: np.ndarray | None
    times: tuple[float | None, ...] = ()
    failure: Failure | None = None


@dataclass
class Plan:
    links: list[Link] = field(default_factory=list)
    embed: dict[str, list[FileRecord]] = field(default_factory=dict)  # hash -> files with it
    gone: list[FileRow] = field(default_factory=list)
    failed: list[tuple[FileRecord, Failure]] = field(default_factory=list)  # recorded failures


def catalog_key(path: str) -> str:
    """The text a path is stored under: itself, or for a name that is not UTF-8 its bytes with
    backslash escapes (sqlite stores UTF-8 text only; such files are only ever recorded as
    failed, so that they are reported once)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


class IndexRun:
    """One `index` or `rebuild` run. Collaborators are injected: `hasher` (content hashes) and
    `embedders` (builds the Embedder, only once something needs embedding)."""

    def __init__(self, req: IndexRequest, rep: Reporter, hasher: Hasher = hash_files,
                 embedders: EmbedderFactory = index_embedder) -> None:
        self.req = req
        self.rep = rep
        self.hasher = hasher
        self.embedders = embedders

    def run(self) -> IndexSummary:
        start = time.perf_counter()
        store = self.req.store
        with store.open_write(self.req.wait) as writer:
            summary = self._run(writer)
        summary.seconds = time.perf_counter() - start
        summary.images_per_second = summary.embedded / summary.seconds if summary.seconds else 0.0
        return summary

    def _run(self, writer: Writer) -> IndexSummary:
        req = self.req
        existing = self._existing(writer)
        roots = self._roots(writer, existing)
        found = discover(roots, req.filters)
        fresh = req.rebuild or existing is None
        empty = _empty_roots(roots, found)
        # A new index takes no empty folder (nothing is written); `rebuild` needs one with images.
        if empty and fresh and (not req.rebuild or len(empty) == len(roots)):
            raise NoImagesError(_no_images(empty if req.rebuild else empty[:1]))
        manifest = self._manifest(existing, fresh)
        catalog = writer.begin(manifest, fresh)
        if not fresh:
            self._check_empty(catalog, empty)
        elif existing is not None:
            self._carry_decisions(writer, existing, catalog)
        for note in (manifest.preprocessing_note(), manifest.descriptor_note()):
            if note:
                self.rep.info(note)
        summary = self._update(writer, catalog, roots, found)
        with catalog.write():
            for root in roots:
                catalog.add_root(str(root))
        plan = writer.finish()  # for rebuild: the atomic switch to the new catalog
        note = plan_note(writer.manifest.index_type, plan) if writer.manifest else None
        if note:
            self.rep.info(note)
        if req.local_features:
            summary.local_features = self._local_features(catalog)
        summary.total_files = catalog.counts()["files"]
        return summary

    def _carry_decisions(self, writer: Writer, old: Manifest, catalog: Catalog) -> None:
        """`rebuild`: the review's decisions (keyed by content) come over to the new catalog."""
        from deepvision.store.decisions import carry_over

        if old.catalog == catalog.path.name:
            return
        previous = writer.store.open_catalog(old, readonly=True)
        try:
            with catalog.write():
                carry_over(previous, catalog)
        finally:
            previous.close()

    def _local_features(self, catalog: Catalog) -> int:
        """Evidence for the pictures that have none yet (new ones; all of an index made before
        verification existed), after the vectors are committed: a run killed here has lost
        nothing, and the next run or a search computes the rest."""
        from deepvision.match.store import FeatureStore
        from deepvision.match.verifier import Verifier, fill

        store = FeatureStore(self.req.store.dir)
        try:
            workers = self.req.embed.workers if self.req.embed.workers > 0 else \
                min(4, os.cpu_count() or 1)
            return fill(Verifier(store), catalog.picture_rows(), self.rep, workers)
        finally:
            store.close()

    def _existing(self, writer: Writer) -> Manifest | None:
        """The live manifest. For `rebuild`, unreadable state is set aside, not fatal: the run
        starts over from the folders (which must then be given)."""
        try:
            existing = writer.existing()
            if existing is not None and self.req.rebuild:
                writer.store.open_catalog(existing, readonly=True).close()
            return existing
        except CorruptIndexError as exc:
            if not self.req.rebuild:
                raise
            if not self.req.roots:
                raise UsageError(f"{exc}; the index is unreadable, so pass its folders: "
                                 "deepvision rebuild DIR") from None
            moved = writer.store.set_aside()
            self.rep.info(f"index state unreadable ({exc}); moved its files to {moved} and "
                          "starting over")
            return None

    def _roots(self, writer: Writer, manifest: Manifest | None) -> list[Path]:
        if self.req.roots:
            return [Path(os.path.abspath(r)) for r in self.req.roots]
        if manifest is not None:  # `rebuild` with no folder: the folders this index was built from
            catalog = writer.store.open_catalog(manifest, readonly=True)
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

    def _manifest(self, existing: Manifest | None, fresh: bool) -> Manifest:
        req = self.req
        if fresh:
            manifest = self._new_manifest(existing if req.rebuild else None)
        else:
            assert existing is not None
            self._check_compatible(existing)
            manifest = existing
        changes: dict[str, object] = {}
        if req.index_type is not None:
            plan_index(req.index_type, 0, manifest.dim)  # an unknown type fails before any work
            changes["index_type"] = req.index_type
        if req.max_memory is not None:
            changes["max_memory"] = req.max_memory
        return replace(manifest, **changes) if changes else manifest  # type: ignore[arg-type]

    def _new_manifest(self, previous: Manifest | None) -> Manifest:
        """A fresh index's manifest. `rebuild` (previous: the index's manifest) keeps the
        index's own model, and its weights file where the model's own lookup finds none, unless
        --model says otherwise: re-picking `auto` would quietly turn a CLIP index (or a ResNet50
        one on a machine without its cached weights) into an EfficientNet-Lite0 one."""
        model, weights_file = self.req.model, self.req.weights
        if previous is not None and model == models.AUTO:
            model = previous.model
            if weights_file is None:
                weights_file = _recorded_weights(previous)
        spec, weights, notice = models.resolve(model, weights_file)
        if notice:
            self.rep.info(notice)
        store = self.req.store
        return Manifest(name=store.name, model=spec.name, weights=weights.identity,
                        weights_origin=weights.origin, weights_path=str(weights.path),
                        dim=spec.dim, catalog=new_catalog_name(),
                        descriptor=self.req.descriptor or models.default_descriptor(spec),
                        text_encoder=spec.has_text)

    def _check_compatible(self, manifest: Manifest) -> None:
        req, name = self.req, self.req.store.name
        hint = f"to switch, run: deepvision rebuild DIR --name {name}"
        if req.model not in (models.AUTO, manifest.model):
            raise IncompatibleIndexError(
                f"index {name!r} was built with model {manifest.model}, not {req.model}; "
                f"{hint} --model {req.model}")
        # Only what decides the stored vectors: the query fields are the index's own (its
        # recorded choice, or search's flags), never a reason to re-embed.
        if req.descriptor is not None and req.descriptor.stored != manifest.descriptor.stored:
            raise IncompatibleIndexError(
                f"index {name!r} was built with descriptor {manifest.descriptor.label}, not "
                f"{req.descriptor.label}; {hint} with the new --pooling/--flip/--scales")
        if req.weights is not None:
            identity = file_identity(req.weights)
            if identity != manifest.weights:
                raise IncompatibleIndexError(
                    f"--weights {req.weights} ({identity}) differ from the weights index "
                    f"{name!r} was built with ({manifest.weights}); {hint} --weights FILE")

    def _check_empty(self, catalog: Catalog, empty: Sequence[Path]) -> None:
        """Folders given to an existing index that hold nothing now. One the index has no
        files from is refused, so it is not recorded among the index's folders. One it has
        files from is what an unmounted disk or a failed network mount looks like: refused
        too, unless told to drop its files."""
        for root in empty:
            known = catalog.count_under(str(root))
            if not known:
                raise NoImagesError(_no_images([root]))
            if not self.req.allow_mass_delete:
                raise MassDeleteError(
                    f"{root} is empty now, but the index holds {known} files from it (an "
                    "unmounted disk or a failed network mount?); nothing was changed. If the "
                    "files are really gone, run again with --allow-mass-delete")

    # ---- the update -----------------------------------------------------------------------

    def _update(self, writer: Writer, catalog: Catalog, roots: Sequence[Path],
                found: Discovery) -> IndexSummary:
        assert writer.manifest is not None and writer.cache is not None
        summary = IndexSummary(index=os.path.abspath(self.req.store.dir),
                               model=writer.manifest.model, device=None, ignored=found.ignored)
        known: dict[str, FileRow] = {}
        for root in roots:
            known.update(catalog.files_under(str(root)))
        plan = self._plan(catalog, known, found, summary)
        _apply_links(plan, known, catalog, writer, summary)
        if plan.embed:
            self._embed_new(writer, catalog, plan, known, summary)
        else:
            self.rep.info(f"model {writer.manifest.model}: no new or changed images, model not "
                          "loaded")
        summary.metadata_read = self._read_metadata(catalog, roots)
        return summary

    def _read_metadata(self, catalog: Catalog, roots: Sequence[Path]) -> int:
        """Metadata for every indexed file under `roots` that lacks it or changed: new and
        changed files, and all files of an index made before metadata (catalog version 4).
        Headers only, on threads (the work waits on the disk), committed page by page."""
        folders = [str(r) for r in roots]
        total = catalog.count_missing_metadata(folders)
        if not total:
            return 0
        done, after = 0, ""
        with self.rep.progress(total, "reading metadata") as advance, ThreadPoolExecutor(
                METADATA_THREADS) as pool:
            while page := catalog.missing_metadata(folders, after, self.req.commit_every):
                metas = list(pool.map(lambda row: read_metadata(*row), page))
                with catalog.write():
                    for (path, _, mtime_ns), meta in zip(page, metas, strict=True):
                        catalog.put_metadata(path, mtime_ns, meta)
                after, done = page[-1][0], done + len(page)
                advance(len(page))
        return done

    def _plan(self, catalog: Catalog, known: dict[str, FileRow], found: Discovery,
              summary: IndexSummary) -> Plan:
        plan = Plan()
        changed: list[FileRecord] = []
        seen = set()
        for rec in found.files:
            seen.add(rec.path)
            row = known.get(rec.path)
            if _unchanged(row, rec, self.req.retry_failed):
                assert row is not None  # _unchanged says so
                summary.unchanged += row.status == Status.OK
                summary.still_failing += row.status == Status.FAILED
            else:
                changed.append(rec)
        for failure, rec in _recordable(found.failures, summary):
            seen.add(rec.path)
            if _unchanged(known.get(rec.path), rec, self.req.retry_failed):
                summary.still_failing += 1
            else:
                plan.failed.append((rec, failure))
        plan.gone = [row for path, row in known.items() if path not in seen]
        hashed = self.hasher(changed)
        by_hash = catalog.contents_for(h.digest for h in hashed if h.digest)
        gone_hashes = {row.hash for row in plan.gone if row.status == Status.OK}
        for h in hashed:
            if h.failure is not None:
                if h.failure.reason == Reason.VANISHED:
                    summary.failures.append(h.failure)
                else:
                    plan.failed.append((h.record, h.failure))
            elif h.digest in by_hash:
                change = _link_kind(known.get(h.record.path), h.digest, gone_hashes)
                plan.links.append(Link(h.record, h.digest, by_hash[h.digest], change))
            else:
                plan.embed.setdefault(h.digest, []).append(h.record)
        return plan

    def _embed_new(self, writer: Writer, catalog: Catalog, plan: Plan,
                   known: dict[str, FileRow], summary: IndexSummary) -> None:
        assert writer.manifest is not None
        opts = replace(self.req.embed, workload=len(plan.embed))
        embedder = self.embedders(writer.manifest, self.req.weights, opts)
        self.rep.info(f"{embedder.describe()}; embedding {len(plan.embed)} new or changed "
                      "files")
        report_notes(embedder, self.rep)
        hashes = list(plan.embed)
        firsts = [plan.embed[h][0].path for h in hashes]
        every = self.req.commit_every
        pending: list[Embedded] = []
        start = time.perf_counter()
        with self.rep.progress(len(hashes), "embedding") as advance:
            for batch in embedder.embed_files(firsts, self.req.video):
                files = batch.files()
                pending.extend(Embedded(hashes[f.pos], f.vectors, f.times, f.failure)
                               for f in files)
                advance(len(files), sum(len(f.times) for f in files if f.times != (None,)))
                while len(pending) >= every:  # exactly every N files, whatever the batch size
                    _commit(pending[:every], plan, known, catalog, writer, summary)
                    pending = pending[every:]
            # Timed as the bar times itself (its start to its last step), so the summary's
            # rate is the one the bar showed last, not one diluted by loading the model.
            summary.embed_seconds = time.perf_counter() - start
            summary.files_per_second = len(hashes) / max(summary.embed_seconds, 1e-9)
            _commit(pending, plan, known, catalog, writer, summary)
        # After the run: on a cluster the actors report what they ran on once they have run.
        summary.device = str(embedder.device)
        summary.decoder = embedder.decoder_name
        summary.backend = embedder.backend.backend


def _recorded_weights(manifest: Manifest) -> Path | None:
    """The weights file `rebuild` keeps: None when the model's own lookup (torch cache,
    package, Hugging Face cache) finds the very weights the index was built with; else the
    recorded file, if it is still there (a --weights file); else None (the lookup decides)."""
    recorded = Path(manifest.weights_path)
    try:
        found = models.get_spec(manifest.model).find_weights(None, models.downloads_allowed())
        if found.identity == manifest.weights:
            return None
    except WeightsUnavailableError:
        pass
    return recorded if recorded.is_file() else None


def run_index(req: IndexRequest, rep: Reporter) -> IndexSummary:
    """`index` (or `rebuild`, per req.rebuild) with the real hasher and model; with req.ray,
    the model runs on that Ray cluster."""
    if req.ray is None:
        return IndexRun(req, rep).run()
    from deepvision.services.distributed.cluster import import_ray
    from deepvision.services.distributed.raydata import RayEmbedders
    from deepvision.services.distributed.shards import ClusterShards

    import_ray()  # a missing extra is a usage error before any work
    embedders = RayEmbedders(req.ray)
    # An on-disk IVF-PQ structure encodes its shards on the same cluster.
    store = IndexStore(req.store.root, req.store.name, shards=ClusterShards(req.ray))
    # A RayEmbedder does all an IndexRun asks of an Embedder (embed_files, its notes).
    summary = IndexRun(replace(req, store=store), rep,
                       embedders=cast(EmbedderFactory, embedders)).run()
    summary.engine = "ray"
    if embedders.cluster is not None and embedders.plan is not None:
        summary.cluster = f"{embedders.cluster.describe()}; {embedders.plan.describe()}"
    return summary


def _empty_roots(roots: Sequence[Path], found: Discovery) -> list[Path]:
    """The roots under which discovery found nothing at all (no file, no failure)."""
    seen = [r.path for r in found.files] + [f.path for f in found.failures]
    empty = []
    for root in roots:
        prefix = str(root).rstrip("/") + "/"
        # The usual case stops at the first file: no catalog query (10 M rows: ~144 s).
        if not any(p.startswith(prefix) or p == str(root) for p in seen):
            empty.append(root)
    return empty


def _no_images(roots: Sequence[Path]) -> str:
    return (f"no image files found in {', '.join(map(str, roots))} (looked for .jpg .png .webp "
            ".heic .avif .tif .bmp .gif and videos); nothing was added to the index")


def _unchanged(row: FileRow | None, rec: FileRecord, retry_failed: bool) -> bool:
    return (row is not None and row.size == rec.size and row.mtime_ns == rec.mtime_ns
            and (row.status == Status.OK or not retry_failed))


def _recordable(failures: list[Failure],
                summary: IndexSummary) -> Iterable[tuple[Failure, FileRecord]]:
    """Discovery failures that belong to a file (a broken link, a RAW photo, a FIFO, a name
    that is not UTF-8) are recorded in the catalog like decode failures."""
    for failure in failures:
        try:
            st = os.lstat(failure.path)
        except OSError:
            st = None
        if st is None or failure.reason not in RECORDED_DISCOVERY:
            summary.failures.append(failure)
            continue
        yield failure, FileRecord(catalog_key(failure.path), st.st_size, st.st_mtime_ns)


def _link_kind(row: FileRow | None, digest: str, gone_hashes: set[str | None]) -> Change:
    if row is not None and row.status == Status.OK:
        return Change.UNCHANGED if row.hash == digest else Change.UPDATED
    # New here (or only ever failed here): a rename if a file with this content just went.
    return Change.RENAMED if digest in gone_hashes else Change.ADDED


def _apply_links(plan: Plan, known: dict[str, FileRow], catalog: Catalog, writer: Writer,
                 summary: IndexSummary) -> None:
    """Everything that needs no model, in one transaction."""
    if not (plan.links or plan.gone or plan.failed):
        return
    assert writer.cache is not None
    writer.cache.load()  # before the transaction: FAISS must not already hold what it commits
    renamed_hashes = {link.digest for link in plan.links if link.change == Change.RENAMED}
    with catalog.write():
        orphans = [row.hash for row in plan.gone]
        for link in plan.links:
            row = known.get(link.record.path)
            if row is not None and row.hash != link.digest:
                orphans.append(row.hash)
            rec = link.record
            catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, link.digest, link.vector_id)
            summary.count(link.change)
        for rec, failure in plan.failed:
            row = known.get(rec.path)
            if row is not None:
                orphans.append(row.hash)
            catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, None, None, Status.FAILED,
                                failure.reason, failure.message)
            summary.failures.append(failure)
        catalog.delete_files(row.path for row in plan.gone)
        summary.removed += sum(1 for row in plan.gone
                               if row.status == Status.FAILED or row.hash not in renamed_hashes)
        dropped = catalog.drop_orphans(orphans)
    writer.cache.remove(dropped)


def _commit(pending: Sequence[Embedded], plan: Plan, known: dict[str, FileRow],
            catalog: Catalog, writer: Writer, summary: IndexSummary) -> None:
    """One chunk of embeddings (and decode failures) in one transaction."""
    if not pending:
        return
    assert writer.cache is not None
    new_ids: list[int] = []
    new_vecs: list[np.ndarray] = []
    orphans: list[str | None] = []
    writer.cache.load()  # before the transaction: FAISS must not already hold what it commits
    with catalog.write():
        for item in pending:
            vid = None
            if item.vectors is not None and len(item.vectors):
                ids = [catalog.add_vector(item.digest, v, frame, t)
                       for frame, (v, t) in enumerate(zip(item.vectors, item.times, strict=True))]
                vid = ids[0] if item.times == (None,) else None  # a video's go by its hash
                new_ids.extend(ids)
                new_vecs.extend(item.vectors)
                summary.embedded += 1
                summary.frames_embedded += len(ids) if vid is None else 0
            for rec in plan.embed[item.digest]:
                _record(catalog, rec, item, vid, known.get(rec.path), orphans, summary)
        dropped = catalog.drop_orphans(orphans)
    writer.cache.remove(dropped)
    if new_vecs:
        writer.cache.add(new_ids, as_stored(np.stack(new_vecs)))


def _record(catalog: Catalog, rec: FileRecord, item: Embedded, vid: int | None,
            row: FileRow | None, orphans: list[str | None], summary: IndexSummary) -> None:
    failure = item.failure
    if failure is not None and failure.reason == Reason.VANISHED:
        summary.failures.append(Failure(rec.path, failure.reason, failure.message))
        return  # nothing to record: the next run sees it gone (or back)
    if row is not None:
        orphans.append(row.hash)
    if failure is not None:
        catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, item.digest, None, Status.FAILED,
                            failure.reason, failure.message)
        summary.failures.append(Failure(rec.path, failure.reason, failure.message))
        return
    catalog.upsert_file(rec.path, rec.size, rec.mtime_ns, item.digest, vid)
    # A file that only ever failed is new to the index.
    summary.count(Change.ADDED if row is None or row.status != Status.OK else Change.UPDATED)


@dataclass
class RestructureSummary:
    index: str
    index_type: str
    index_factory: str
    vectors: int
    seconds: float
    note: str | None = None  # the structure is not quite the one asked for (faiss_index.plan_note)


def restructure(store: IndexStore, index_type: str | None, max_memory: int | None,
                wait: bool = False) -> RestructureSummary:
    """Rebuild only the FAISS structure from the stored vectors: no decoding, no model."""
    start = time.perf_counter()
    with store.open_write(wait) as writer:
        manifest = store.read_manifest()
        changes: dict[str, Any] = {"index_type": index_type, "max_memory": max_memory}
        writer.begin(replace(manifest, **{k: v for k, v in changes.items() if v is not None}),
                     fresh=False)
        plan = writer.finish(replan=True)
        assert writer.catalog is not None
        n = writer.catalog.vector_count()
        note = plan_note(writer.manifest.index_type, plan) if writer.manifest else None
    return RestructureSummary(os.path.abspath(store.dir), plan.kind, plan.factory, n,
                              time.perf_counter() - start, note)
