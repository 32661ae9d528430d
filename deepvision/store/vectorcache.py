"""The FAISS structure of an index as a cache of its catalog: the saved file of the catalog's
generation when its checksum matches, else rebuilt from the stored vectors (without the model);
and VectorCache, the writer's copy, kept in step with the catalog's changes and saved at the end.

The catalog's FAISS record names the file, its generation, its plan and its checksum (for an
on-disk IVF-PQ, the .ivfdata's too), so a reader never trusts a file that is behind, damaged or
missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepvision.store import ondisk
from deepvision.store.catalog import Catalog, FaissRecord
from deepvision.store.faiss_index import (
    FLAT_PLAN,
    TRAIN_POINTS_PER_CENTROID,
    IndexPlan,
    VectorIndex,
    desired_plan,
    plan_index,
)
from deepvision.store.manifest import Manifest
from deepvision.store.ondisk import LocalRunner, ShardRunner, ivfdata_name


def file_checksum(path: Path) -> str:
    """xxh3-128 of a file, streamed (about 10 GB/s: cheap next to loading the index)."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(4 << 20):
            h.update(block)
    return h.hexdigest()


def structure_checksum(folder: Path, file: str, plan: IndexPlan) -> str:
    """The checksum a FAISS record keeps: the index file's, and for an on-disk index its
    .ivfdata's too ('bin+ivfdata'), so damage to either is caught. FileNotFoundError when
    one of them is missing."""
    sums = [file_checksum(folder / file)]
    if plan.on_disk:
        sums.append(file_checksum(folder / ivfdata_name(file)))
    return "+".join(sums)


class Cached(NamedTuple):
    index: VectorIndex  # type: ignore[assignment]  # a field named like tuple.index: reads fine
    problem: str | None  # why the FAISS file was not used; None also when it is merely behind
    verified: bool  # loaded from the current file, its checksum checked


def load_cached(catalog: Catalog, dim: int, folder: Path, mmap: bool = False) -> Cached:
    """The FAISS file when it is the catalog's current generation and its checksum matches;
    else the structure rebuilt from the vectors, and why the file was not used (a file that is
    merely behind, after a killed run, is no problem worth telling)."""
    record = catalog.faiss_record()
    problem = None
    if record is not None and record.generation == catalog.generation:
        path = folder / record.file
        problem = _file_problem(path, record)
        if problem is None:
            try:
                # Verified only with a checksum: an older catalog's file still gets one.
                verified = record.checksum is not None
                return Cached(VectorIndex.load(path, record.plan, mmap), None, verified)
            except RuntimeError as exc:
                problem = f"FAISS file {path} cannot be read ({str(exc).splitlines()[0]})"
    plan = record.plan if record else FLAT_PLAN
    return Cached(build_from_catalog(catalog, dim, plan), problem, False)


def _file_problem(path: Path, record: FaissRecord) -> str | None:
    try:
        if record.checksum is not None and \
                structure_checksum(path.parent, record.file, record.plan) != record.checksum:
            what = f"{path} + {ivfdata_name(path.name)}" if record.plan.on_disk else str(path)
            return f"FAISS file {what} does not match its checksum (damaged)"
    except FileNotFoundError as exc:
        return f"FAISS file {exc.filename or path} is missing"
    return None


def build_from_catalog(catalog: Catalog, dim: int, plan: IndexPlan) -> VectorIndex:
    """Any structure from the stored vectors, without the model (k-means on a sample), in
    memory (an on-disk plan too: a reader cannot write the index folder; the writer builds
    on-disk ones with VectorCache)."""
    sample = None
    if plan.needs_training:
        sample = catalog.sample_vectors(dim, TRAIN_POINTS_PER_CENTROID * plan.nlist)
        if len(sample) < plan.nlist:  # the collection shrank below the plan: exact search
            plan = FLAT_PLAN
    return VectorIndex.from_blocks(dim, catalog.iter_vectors(dim), plan, sample)


class VectorCache:
    """The writer's in-memory FAISS state, loaded only when something actually changes.

    Changes a structure cannot take in place (removal from HNSW) and a structure that no longer
    fits the collection (auto: flat -> IVF; IVF grown 4x since training) are handled at the end
    of the run by rebuilding from the stored vectors, without the model. An on-disk IVF-PQ is
    never loaded for changes: any change merges a new one at the end (ondisk.py)."""

    def __init__(self, catalog: Catalog, manifest: Manifest, folder: Path,
                 shards: ShardRunner | None = None) -> None:
        self.catalog, self.manifest, self.folder = catalog, manifest, folder
        self.shards = shards or LocalRunner()
        self._index: VectorIndex | None = None
        self._verified = False  # the loaded structure is the saved file, checksum and all
        self.dirty = False
        self.rebuild = False
        record = catalog.faiss_record()
        self._on_disk = record is not None and record.plan.on_disk

    def load(self) -> VectorIndex | None:
        """Call before a catalog transaction: FAISS must not already hold what it commits."""
        if self._on_disk and self._index is None:
            return None
        if self._index is None and not self.rebuild:
            with self.catalog.snapshot():
                self._index, problem, self._verified = load_cached(
                    self.catalog, self.manifest.dim, self.folder)
            self.dirty = self.dirty or problem is not None
        return None if self.rebuild else self._index

    def add(self, ids: list[int], vecs: np.ndarray) -> None:
        index = self.load()
        if ids and index is not None:
            index.add(np.asarray(ids, np.int64), vecs)
            self.dirty = True
        elif ids and self._on_disk:
            self.rebuild = True

    def remove(self, ids: list[int]) -> None:
        index = self.load()
        if ids and self._on_disk and index is None:
            self.rebuild = True
        if not ids or index is None:
            return
        if index.plan.removes_in_place:
            index.remove(ids)
            self.dirty = True
        else:
            self.rebuild = True

    def finish(self, replan: bool = False) -> IndexPlan:
        """Save the FAISS file if anything changed or the saved one is stale or damaged,
        restructuring first if the plan says so. Returns the structure now in use."""
        record = self.catalog.faiss_record()
        n = self.catalog.vector_count()
        current = self._index.plan if self._index is not None else (
            record.plan if record else FLAT_PLAN)
        m = self.manifest
        wanted = (plan_index(m.index_type, n, m.dim, m.max_memory or None) if replan
                  else desired_plan(m.index_type, current, n, m.dim, m.max_memory or None))
        if wanted.on_disk:
            return self._finish_on_disk(wanted, current, record, replan)
        if self.rebuild or replan or wanted != current:
            with self.catalog.snapshot():
                self._index = build_from_catalog(self.catalog, m.dim, wanted)
            self.rebuild = False
        elif not self.dirty and (self._verified or self._saved_ok(record)):
            return current
        index = self.load()
        assert index is not None
        self._save(index)
        return index.plan

    def _finish_on_disk(self, wanted: IndexPlan, current: IndexPlan,
                        record: FaissRecord | None, replan: bool) -> IndexPlan:
        """Merge a new on-disk index when vectors changed, the plan changed or the saved pair
        is stale or damaged. The trained quantizer is kept when the plan is the same and the
        saved pair is intact: only the codes are re-encoded (in shards, on `shards`)."""
        intact = record is not None and record.plan == wanted and self._intact(record)
        if intact and not (self.rebuild or self.dirty or replan) \
                and record is not None and record.generation == self.catalog.generation:
            return current
        trained = ondisk.kept_training(self.folder / record.file) if intact and record else None
        name = f"faiss-{self.catalog.generation}.bin"
        dim = self.manifest.dim
        with self.catalog.snapshot():
            if trained is None:
                sample = self.catalog.sample_vectors(dim, ondisk.train_sample_size(wanted))
                trained = ondisk.train(sample, wanted)
            self._index = ondisk.build(trained, self.catalog.iter_vectors(dim), wanted,
                                       self.folder / name, self.shards)
        self._on_disk, self.rebuild, self.dirty = True, False, False
        self._record(FaissRecord(name, self.catalog.generation, wanted,
                                 structure_checksum(self.folder, name, wanted)))
        return wanted

    def _saved_ok(self, record: FaissRecord | None) -> bool:
        if record is None or record.generation != self.catalog.generation:
            return False
        return self._intact(record)

    def _intact(self, record: FaissRecord) -> bool:
        """The recorded file(s) are there and match the record's checksum."""
        path = self.folder / record.file
        if not path.is_file():
            return False
        if record.checksum is None:  # recorded before checksums: trust it, record one now
            self._record(FaissRecord(record.file, record.generation, record.plan,
                                     file_checksum(path)))
            return True
        try:
            return structure_checksum(self.folder, record.file, record.plan) == record.checksum
        except FileNotFoundError:
            return False

    def _save(self, index: VectorIndex) -> None:
        generation = self.catalog.generation
        name = f"faiss-{generation}.bin"
        index.save(self.folder / name)
        self._on_disk = False
        self._record(FaissRecord(name, generation, index.plan,
                                 structure_checksum(self.folder, name, index.plan)))

    def _record(self, record: FaissRecord) -> None:
        with self.catalog.write():
            self.catalog.set_faiss_record(record)
