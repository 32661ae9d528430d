"""An index on disk: folder layout, versioned manifest, lock, and loading the live FAISS state.

indexes/<name>/
  manifest.json            schema version, model, weights identity, dim; names the live catalog
  catalog-<token>.sqlite   files + vectors (catalog.py)
  faiss-<generation>.bin   FAISS structure as of a catalog generation (a rebuildable cache)
  .lock                    held by a running index/rebuild (flock: released if the process dies)

`rebuild` writes a new catalog beside the old one and switches by replacing manifest.json, so the
old index keeps answering searches until the new one is complete.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deepvision.catalog import Catalog
from deepvision.errors import IncompatibleIndexError, IndexLockedError, IndexNotFoundError
from deepvision.index import (
    FLAT_PLAN,
    TRAIN_POINTS_PER_CENTROID,
    IndexPlan,
    VectorIndex,
    faiss_build,
)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Manifest:
    name: str
    model: str
    weights: str  # identity, e.g. "sha256:0123456789abcdef"
    weights_origin: str
    weights_path: str
    dim: int
    catalog: str
    schema_version: int = SCHEMA_VERSION
    metric: str = "inner_product"
    index_type: str = "auto"  # what the user asked for; `auto` re-plans as the collection grows
    index_plan: dict = field(default_factory=FLAT_PLAN.to_dict)  # the structure in use
    max_memory: int = 0  # bytes for the index; 0: half the machine's RAM
    descriptor: dict = field(default_factory=lambda: {"pooling": "avg", "flip": False,
                                                      "scales": [1.0]})
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)

    @property
    def plan(self) -> IndexPlan:
        return IndexPlan(**self.index_plan)


@dataclass(frozen=True)
class Location:
    root: Path  # --index-dir
    name: str  # --name

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_manifest(loc: Location) -> Manifest:
    if not loc.exists():
        raise IndexNotFoundError(
            f"no index named {loc.name!r} in {loc.root}; create it with: deepvision index DIR"
            + ("" if loc.name == "default" else f" --name {loc.name}")
        )
    try:
        data = json.loads(loc.manifest_path.read_text(encoding="utf-8"))
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise IncompatibleIndexError(
                f"index {loc.dir} has schema version {version}, this deepvision reads "
                f"{SCHEMA_VERSION}; recreate it with: deepvision rebuild DIR --name {loc.name}"
            )
        return Manifest(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise IncompatibleIndexError(
            f"index manifest {loc.manifest_path} is unreadable ({exc}); "
            f"recreate it with: deepvision rebuild DIR --name {loc.name}"
        ) from exc


def write_manifest(loc: Location, manifest: Manifest) -> None:
    manifest.updated = now_iso()
    atomic_write_text(loc.manifest_path, json.dumps(asdict(manifest), indent=2) + "\n")


def new_catalog_name() -> str:
    return f"catalog-{secrets.token_hex(4)}.sqlite"


@contextmanager
def writer_lock(loc: Location, wait: bool) -> Iterator[None]:
    """One writer per index. flock is dropped by the kernel when a holder dies: no stale locks."""
    from filelock import FileLock, Timeout

    loc.dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(loc.dir / ".lock"), timeout=-1 if wait else 0)
    owner = loc.dir / ".lock.owner"
    try:
        lock.acquire()
    except Timeout:
        who = owner.read_text(encoding="utf-8").strip() if owner.exists() else "another process"
        raise IndexLockedError(
            f"index {loc.dir} is being updated by {who}; try again later or pass --wait"
        ) from None
    try:
        atomic_write_text(owner, f"pid {os.getpid()} since {now_iso()}\n")
        yield
    finally:
        lock.release()


def load_vectors(catalog: Catalog, manifest: Manifest, index_dir: Path,
                 mmap: bool = False) -> VectorIndex:
    """The FAISS state for the catalog's current generation: its saved file if that is current,
    otherwise rebuilt from the stored vectors (after a killed run). Call inside a snapshot."""
    name = catalog.get_meta("faiss_file")
    saved_plan = catalog.get_meta("faiss_plan")
    plan = IndexPlan(**json.loads(saved_plan)) if saved_plan else manifest.plan
    if name and catalog.get_meta("faiss_generation") == str(catalog.generation):
        try:
            return VectorIndex.load(index_dir / name, plan, mmap)
        except RuntimeError:
            pass  # missing or damaged: the vectors table is the source of truth
    return build_from_catalog(catalog, manifest.dim, plan)


def build_from_catalog(catalog: Catalog, dim: int, plan: IndexPlan) -> VectorIndex:
    """Any structure from the stored vectors, without the model (k-means on a sample)."""
    sample = None
    if plan.needs_training:
        sample = catalog.sample_vectors(dim, TRAIN_POINTS_PER_CENTROID * plan.nlist)
        if len(sample) < plan.nlist:  # the collection shrank below the plan: exact search
            plan = FLAT_PLAN
    return VectorIndex.from_blocks(dim, catalog.iter_vectors(dim), plan, sample)


def save_vectors(catalog: Catalog, index: VectorIndex, index_dir: Path) -> None:
    """Persist the FAISS file for the current generation, then point the catalog at it."""
    generation = catalog.generation
    name = f"faiss-{generation}.bin"
    index.save(index_dir / name)
    with catalog.write():  # touches no vectors, so the generation stays put
        catalog.set_meta("faiss_file", name)
        catalog.set_meta("faiss_generation", str(generation))
        catalog.set_meta("faiss_plan", json.dumps(index.plan.to_dict()))


def remove_stale_files(loc: Location, manifest: Manifest, catalog: Catalog) -> None:
    """Delete catalogs and FAISS files nothing points at (left by a killed run). Writer only."""
    keep = {MANIFEST, manifest.catalog, catalog.get_meta("faiss_file") or ""}
    for path in loc.dir.iterdir():
        stale_catalog = path.name.startswith("catalog-") and not path.name.startswith(
            manifest.catalog)
        stale_faiss = path.name.startswith("faiss-") and path.name not in keep
        leftover_tmp = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale_catalog or stale_faiss or leftover_tmp:
            path.unlink(missing_ok=True)


def describe(loc: Location, with_failures: bool = False) -> dict[str, object]:
    """What `deepvision info` shows."""
    manifest = read_manifest(loc)
    catalog = Catalog(loc.dir / manifest.catalog, readonly=True)
    try:
        with catalog.snapshot():
            counts = catalog.counts()
            failures = catalog.failed_files() if with_failures else []
            roots = catalog.roots()
    finally:
        catalog.close()
    size = sum(p.stat().st_size for p in loc.dir.iterdir() if p.is_file())
    data: dict[str, object] = {
        "index": os.path.abspath(loc.dir),
        "files": counts["files"],
        "vectors": counts["vectors"],
        "failed": counts["failed"],
        "model": manifest.model,
        "weights": f"{manifest.weights} ({manifest.weights_origin})",
        "dim": manifest.dim,
        "descriptor": manifest.descriptor,
        "index_type": manifest.plan.kind,
        "index_requested": manifest.index_type,
        "index_factory": manifest.plan.factory,
        "index_params": {k: v for k, v in manifest.index_plan.items()
                         if k not in ("kind", "factory") and v},
        "faiss": faiss_build(),
        "metric": manifest.metric,
        "size_bytes": size,
        "folders": roots,
        "created": manifest.created,
        "updated": manifest.updated,
        "schema_version": manifest.schema_version,
    }
    if with_failures:
        data["failures"] = [{"path": f.path, "reason": f.reason, "message": f.message}
                            for f in failures]
    return data
