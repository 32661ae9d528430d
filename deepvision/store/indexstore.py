"""An index on disk, and its one owner: IndexStore.

indexes/<name>/
  manifest.json            what the index is (manifest.py); names the live catalog
  catalog-<token>.sqlite   files + vectors (catalog.py): the source of truth
  faiss-<generation>.bin   FAISS structure as of a catalog generation: a cache, checksummed
  faiss-<generation>.ivfdata  its inverted lists, for an on-disk IVF-PQ (ondisk.py)
  local-features.sqlite    local-feature evidence by content hash (match/store.py owns it: a
                           cache that outlives catalogs, never deleted by cleanup)
  .lock                    held by a running index/rebuild (flock: released if the process dies)
  broken-<time>/           unreadable state that `rebuild` set aside (never deleted)

Readers get a Snapshot (open_read): one manifest, its catalog in one read transaction and the
FAISS structure of that generation, consistent while a writer commits. The one writer
(open_write, under the lock) gets a Writer. `rebuild` writes a new catalog beside the old one
and switches by replacing manifest.json, so the old index answers searches until the new one
is complete. Only files matching OWN_FILE are ever deleted, and only inside the index folder.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepvision.atomic import atomic_write_text
from deepvision.errors import (
    CorruptIndexError,
    DeepVisionError,
    IndexLockedError,
    IndexNotFoundError,
    StorageError,
    UsageError,
)
from deepvision.models.registry import REGISTRY
from deepvision.store.catalog import Catalog, holds_files, sqlite_damage
from deepvision.store.faiss_index import FLAT_PLAN, IndexPlan, VectorIndex
from deepvision.store.manifest import MANIFEST, Manifest, now_iso, parse_manifest, write_manifest
from deepvision.store.ondisk import SHARDS_DIR, LocalRunner, ShardRunner, ivfdata_name
from deepvision.store.vectorcache import VectorCache, load_cached

DEFAULT_NAME = "default"
LOCK = ".lock"  # held by the one writer
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Everything deepvision writes in an index folder. Cleanup deletes nothing else, so a user's
# file that happens to sit there (catalog-notes.pdf, faiss-x.txt, .s.tmp) is never touched.
OWN_FILE = re.compile(r"catalog-[0-9a-f]{8}\.sqlite(-wal|-shm|-journal)?|faiss-\d+\.(bin|ivfdata)"
                      r"|\.(manifest\.json|faiss-\d+\.(bin|ivfdata)|\.lock\.owner)\.[a-z0-9_]{8}"
                      r"\.tmp")
# The data files a deleted manifest leaves behind: their presence makes a folder a damaged
# index, not a free one (a fresh index would delete them as stale).
DATA_FILE = re.compile(r"catalog-[0-9a-f]{8}\.sqlite|faiss-\d+\.(bin|ivfdata)")
OWN_DIR = re.compile(rf"\.{SHARDS_DIR}-[a-z0-9_]{{8}}")  # an on-disk build's work folder
_FREE = "free some space and run again"
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("the disk is full", _FREE),
    errno.EDQUOT: ("the disk quota is used up", _FREE),
    errno.EROFS: ("the filesystem is read-only", "searching it works; to update it, index into "
                  "a writable --index-dir"),
    errno.EIO: ("an I/O error occurred", "check the disk, then run again"),
    errno.EACCES: ("permission was denied", "run as the index's owner or fix its permissions"),
    errno.EPERM: ("permission was denied", "run as the index's owner or fix its permissions"),
}


def validate_name(name: str) -> str:
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"--name {name!r}: an index name is one plain folder name inside --index-dir: "
            "letters, digits, '.', '_' and '-', starting with a letter or digit (no '/', "
            "no '..', at most 100 characters)")
    return name


def new_catalog_name() -> str:
    import secrets

    return f"catalog-{secrets.token_hex(4)}.sqlite"



class IndexStore:
    """The index `name` inside the folder `root` (--index-dir). `shards` runs the shard tasks
    of an on-disk IVF-PQ build (default: a thread pool here; ondisk.RayRunner: a Ray cluster)."""

    def __init__(self, root: Path, name: str = DEFAULT_NAME,
                 shards: ShardRunner | None = None) -> None:
        self.root = Path(root)
        self.name = validate_name(name)
        self.shards = shards or LocalRunner()

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def advice(self) -> str:
        """The command that starts an index over from its images (and sets broken files aside)."""
        where = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
        if os.path.abspath(self.root) != os.path.abspath("indexes"):
            where += f" --index-dir {self.root}"
        return f"start it over from the images with: deepvision rebuild DIR{where}"

    # ---- reading --------------------------------------------------------------------------

    def orphans(self) -> list[str]:
        """deepvision's data files in a folder that has no manifest (it was deleted or lost).
        A catalog that records no file yet (a first run killed before it wrote its manifest)
        holds nothing to lose and does not count."""
        if self.exists() or not self.dir.is_dir():
            return []
        with storage_errors(self):
            names = sorted(p.name for p in self.dir.iterdir()
                           if DATA_FILE.fullmatch(p.name) and p.is_file())
        return [n for n in names if not n.startswith("catalog-") or holds_files(self.dir / n)]

    def _missing(self) -> DeepVisionError:
        """No manifest: no index at all, or a damaged one when its data files are still there
        (`index` must not start afresh over them: it would delete them as stale)."""
        orphans = self.orphans()
        if orphans:
            return CorruptIndexError(
                f"index {self.dir} has no {MANIFEST} (deleted?) but still holds its data "
                f"({', '.join(orphans)}); {self.advice()}")
        hint = "" if self.name == DEFAULT_NAME else f" --name {self.name}"
        return IndexNotFoundError(f"no index named {self.name!r} in {self.root}; create it "
                                  f"with: deepvision index DIR{hint}")

    def read_manifest(self) -> Manifest:
        """The manifest, migrated to the current schema in memory."""
        if not self.exists():
            raise self._missing()
        with storage_errors(self):
            data = self.manifest_path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptIndexError(f"{self.manifest_path} is not text (damaged?); "
                                    f"{self.advice()}") from None
        return parse_manifest(text, self.manifest_path, self.advice())

    def check(self) -> Manifest:
        """Open and close a snapshot: the cheap checks a service runs before loading a model,
        so a damaged index fails in a blink. Returns the manifest."""
        with self.open_read() as snap:
            return snap.manifest

    @contextmanager
    def open_read(self) -> Iterator[Snapshot]:
        """One consistent generation: manifest, catalog (in a read transaction) and FAISS."""
        with storage_errors(self):
            manifest, catalog = self._open_live()
            try:
                with catalog.snapshot():
                    yield Snapshot(self, manifest, catalog)
            finally:
                catalog.close()

    def _open_live(self) -> tuple[Manifest, Catalog]:
        """The manifest and its catalog. A rebuild may switch catalogs (and delete the old one)
        between reading the manifest and opening the catalog: then read the manifest again."""
        for attempt in range(3):
            manifest = self.read_manifest()
            try:
                return manifest, self.open_catalog(manifest, readonly=True)
            except CorruptIndexError:
                if attempt == 2 or self.read_manifest().catalog == manifest.catalog:
                    raise
        raise AssertionError("unreachable")

    def open_catalog(self, manifest: Manifest, readonly: bool) -> Catalog:
        """The manifest's catalog, checked cheaply (file intact, tables there, vector width
        matching the manifest's dim). CorruptIndexError names what is wrong."""
        path = self.dir / manifest.catalog
        damage = sqlite_damage(path)
        if damage:
            raise CorruptIndexError(f"catalog {path} (named by {MANIFEST}) {damage}; "
                                    f"{self.advice()}")
        catalog = _connect(path, readonly)
        try:
            self._check_catalog(catalog, manifest)
        except BaseException:
            catalog.close()
            raise
        return catalog

    def _check_catalog(self, catalog: Catalog, manifest: Manifest) -> None:
        missing = catalog.missing_tables()
        if missing:
            raise CorruptIndexError(f"catalog {catalog.path} lacks its {', '.join(missing)} "
                                    f"table(s) (damaged or not ours); {self.advice()}")
        spec = REGISTRY.get(manifest.model)
        if spec is not None and spec.dim != manifest.dim:
            raise CorruptIndexError(
                f"{self.manifest_path} says dim {manifest.dim}, but model {manifest.model} "
                f"makes {spec.dim}-d vectors (was the manifest edited?); {self.advice()}")
        width = catalog.vector_width()
        if width is not None and width != 2 * manifest.dim:
            raise CorruptIndexError(
                f"{self.manifest_path} says dim {manifest.dim}, but the stored vectors have "
                f"{width // 2} dimensions (was the manifest edited?); {self.advice()}")

    # ---- writing --------------------------------------------------------------------------

    def _lock(self, wait: bool) -> Any:
        from filelock import FileLock

        return FileLock(str(self.dir / LOCK), timeout=-1 if wait else 0)

    def lock_held(self) -> bool:
        """Whether a writer (another process, or this one) holds the lock now; probed and
        released at once."""
        from filelock import Timeout

        lock = self._lock(wait=False)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        return False

    @contextmanager
    def open_write(self, wait: bool = False) -> Iterator[Writer]:
        """The one writer (flock on .lock: the kernel drops it when a holder dies)."""
        from filelock import Timeout

        with storage_errors(self):
            created = _missing_folders(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = self._lock(wait)
            owner = self.dir / ".lock.owner"
            try:
                lock.acquire()
            except Timeout:
                who = owner.read_text(encoding="utf-8").strip() if owner.exists() else \
                    "another process"
                raise IndexLockedError(f"index {self.dir} is being updated by {who}; try "
                                       "again later or pass --wait") from None
            writer = Writer(self)
            try:
                atomic_write_text(owner, f"pid {os.getpid()} since {now_iso()}\n")
                yield writer
            finally:
                writer.close()
                if created:  # a first run that wrote nothing (no images) leaves no folder
                    _remove_unused(created, owner, self.dir / LOCK)
                lock.release()

    def set_aside(self) -> Path | None:
        """Move this index's own files into broken-<time>/ (for `rebuild` over unreadable
        state): nothing is deleted, and the folder is free for a fresh index."""
        own = [p for p in self.dir.iterdir()
               if p.name == MANIFEST or (OWN_FILE.fullmatch(p.name) and not p.name.startswith("."))]
        if not own:
            return None
        target = self.dir / f"broken-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
        target.mkdir()
        for p in own:
            p.rename(target / p.name)
        return target

    def remove_stale_files(self, manifest: Manifest, catalog: Catalog) -> None:
        """Delete our catalogs, FAISS files and temp files that nothing points at (left by a
        killed run or replaced by this one). Writer only; nothing but OWN_FILE names."""
        record = catalog.faiss_record()
        live = {manifest.catalog, *(manifest.catalog + s for s in ("-wal", "-shm", "-journal"))}
        keep = live | ({record.file} if record else set())
        if record is not None and record.plan.on_disk:
            keep.add(ivfdata_name(record.file))
        for path in self.dir.iterdir():
            if OWN_FILE.fullmatch(path.name) and path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)
            elif OWN_DIR.fullmatch(path.name) and path.is_dir():  # left by a killed build
                shutil.rmtree(path, ignore_errors=True)


def _missing_folders(folder: Path) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_unused(created: list[Path], *lock_files: Path) -> None:
    """Remove the folders open_write created when nothing but its lock files is in them
    (under the lock still: no other writer can be inside)."""
    index = created[0]
    if {p.name for p in index.iterdir()} - {p.name for p in lock_files}:
        return
    for path in lock_files:
        path.unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:  # something else appeared in it meanwhile: keep it
            return


def _connect(path: Path, readonly: bool) -> Catalog:
    """Open a catalog; a reader on a read-only filesystem (a mounted snapshot, a shared
    volume) cannot create the WAL's -shm file, and opens the file as immutable instead."""
    try:
        catalog = Catalog(path, readonly=readonly)
        catalog.missing_tables()  # sqlite opens lazily: make it read now
        return catalog
    except sqlite3.OperationalError:
        if not readonly or os.access(path.parent, os.W_OK):
            raise
    return Catalog(path, immutable=True)


class Snapshot:
    """A reader's view of one committed generation. Valid inside IndexStore.open_read()."""

    def __init__(self, store: IndexStore, manifest: Manifest, catalog: Catalog) -> None:
        self.store = store
        self.manifest = manifest
        self.catalog = catalog
        self.notes: list[str] = []  # things the user should hear about (a repaired cache)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def plan(self) -> IndexPlan:
        record = self.catalog.faiss_record()
        return record.plan if record else FLAT_PLAN

    def vectors(self, mmap: bool = False) -> VectorIndex:
        """The FAISS structure of this generation: its file when current and intact, else
        rebuilt from the stored vectors (a killed run, a damaged file) without the model."""
        index, problem, _ = load_cached(self.catalog, self.dim, self.store.dir, mmap)
        if problem:
            self.notes.append(f"{problem}: searching the stored vectors instead (the next "
                              "`deepvision index` writes a new FAISS file)")
        return index

    def stored(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors for sorted unique ids, in that order (exact re-ranking, expansion)."""
        return self.catalog.vectors_for(ids, self.dim)


class Writer:
    """The writer's side of an index: its manifest, its catalog and the FAISS cache.

    `begin` settles the manifest (a new one, the existing one, or a fresh one for rebuild), the
    run changes the catalog in transactions, `finish` saves the FAISS file, writes the
    manifest (for rebuild: the atomic switch) and removes stale files."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.manifest: Manifest | None = None
        self.catalog: Catalog | None = None
        self.cache: VectorCache | None = None

    def existing(self) -> Manifest | None:
        """The live manifest (migrated), None when there is no index yet. CorruptIndexError
        when the manifest is gone but the index's data is still there."""
        if self.store.exists() or self.store.orphans():
            return self.store.read_manifest()
        return None

    def begin(self, manifest: Manifest, fresh: bool) -> Catalog:
        """Open the catalog `manifest` names (created when fresh). A brand-new index gets its
        manifest at once, so it is searchable from its first commit."""
        self.manifest = manifest
        if fresh:
            self.catalog = Catalog(self.store.dir / manifest.catalog)
            if not self.store.exists():
                write_manifest(self.store.manifest_path, manifest)
        else:
            self.catalog = self.store.open_catalog(manifest, readonly=False)
        self.cache = VectorCache(self.catalog, manifest, self.store.dir, self.store.shards)
        return self.catalog

    def finish(self, replan: bool = False) -> IndexPlan:
        """FAISS file, then manifest, then cleanup: each step leaves a searchable index.
        replan: build the structure the index type calls for now, even if the current one
        still fits (`rebuild --from-vectors`)."""
        assert self.manifest is not None and self.catalog is not None and self.cache is not None
        plan = self.cache.finish(replan)
        self.manifest = self.manifest.touched()
        write_manifest(self.store.manifest_path, self.manifest)
        self.store.remove_stale_files(self.manifest, self.catalog)
        return plan

    def close(self) -> None:
        if self.catalog is not None:
            self.catalog.close()
            self.catalog = None



@contextmanager
def storage_errors(store: IndexStore) -> Iterator[None]:
    """sqlite and filesystem errors while reading or writing an index, as the user's problem
    they are (a full disk, a read-only volume, a damaged file), with its exit code."""
    try:
        yield
    except DeepVisionError:
        raise
    except sqlite3.DatabaseError as exc:
        raise _sqlite_error(store, exc) from exc
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        what, fix = _STORAGE_ERRNOS[exc.errno]
        raise StorageError(f"index {store.dir}: {what} ({exc.filename or exc.strerror}); "
                           f"what was committed before is kept; {fix}") from exc


def _sqlite_error(store: IndexStore, exc: sqlite3.DatabaseError) -> DeepVisionError:
    text = str(exc)
    if "full" in text or "disk I/O" in text:
        return StorageError(f"cannot write index {store.dir}: the disk is full ({text}); what "
                            "was committed before is kept: free some space and run again")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return StorageError(f"cannot write index {store.dir}: {text} (a read-only filesystem "
                            "or no permission?); searching it still works")
    return CorruptIndexError(f"catalog in {store.dir} is damaged ({text}); {store.advice()}")
