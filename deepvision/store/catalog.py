"""What is indexed: files (path, size, mtime, content hash, status) and their vectors, in sqlite.

Every change is a transaction, so a run killed at any moment leaves the last committed state.
Vectors are keyed by content hash: byte-identical files (duplicates, renames) share one vector
(an image) or one set of frame vectors (a video: (hash, frame) with the frame's time).
They are stored as float16 (half the space; cosine scores move by ~1e-3): this table is what
any FAISS structure is (re)built from, without the model. The FAISS file is a cache of it,
valid when its generation matches.
"""

# Long module: the catalog is one sqlite file with one schema; every table's SQL (files, vectors,
# filemeta, meta, the decisions' tables), its migrations and the filters' SQL sit together so a
# schema change is made and reviewed in one place.

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from deepvision.errors import UsageError
from deepvision.filters import Filter, distance_km, wall_clock_key
from deepvision.store.faiss_index import FLAT_PLAN, IndexPlan
from deepvision.types import FileMeta

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    frame INTEGER NOT NULL DEFAULT 0,
    time REAL,
    vec BLOB NOT NULL,
    UNIQUE (hash, frame)
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash TEXT,
    vector_id INTEGER REFERENCES vectors(id),
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    reason TEXT,
    message TEXT
);
CREATE INDEX IF NOT EXISTS files_vector ON files(vector_id);
"""
FILES_HASH = "CREATE INDEX IF NOT EXISTS files_hash ON files(hash)"

# Catalog version 3: a vector is (hash, frame, time), so one file can own many (a video's
# frames). Version 2's vectors table (hash UNIQUE) is copied over with frame 0, time NULL:
# ids stay, so the FAISS file and its generation stay valid.
_V3_MIGRATION = """
CREATE TABLE vectors_v3 (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    frame INTEGER NOT NULL DEFAULT 0,
    time REAL,
    vec BLOB NOT NULL,
    UNIQUE (hash, frame)
);
INSERT INTO vectors_v3 (id, hash, frame, time, vec) SELECT id, hash, 0, NULL, vec FROM vectors;
DROP TABLE vectors;
ALTER TABLE vectors_v3 RENAME TO vectors;
"""

# Catalog version 4: what each file's header says (pipeline.metadata), keyed by path, with the
# size and mtime it was read at: a row that no longer matches its file is read again by the
# next `index`, as is a missing one, so an older index gets its metadata without re-embedding.
# taken_key: the capture time's wall clock in seconds (filters.wall_clock_key), for ranges.
_V4_MIGRATION = """
CREATE TABLE filemeta (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    taken TEXT,
    taken_key REAL,
    taken_source TEXT,
    make TEXT,
    model TEXT,
    lens TEXT,
    lat REAL,
    lon REAL,
    width INTEGER,
    height INTEGER,
    duration REAL
);
CREATE INDEX filemeta_taken ON filemeta(taken_key);
"""
META_FIELDS = ("kind", "taken", "taken_source", "make", "model", "lens", "lat", "lon", "width",
               "height", "duration")


@dataclass(frozen=True, slots=True)
class Hit:
    """An indexed file behind a vector: its path, its id, and for a video the frame's time."""

    path: str
    file_id: int
    time: float | None


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    vector_id: int | None
    status: str
    reason: str | None
    message: str | None


# 2: the FAISS file's record (file, generation, plan, checksum) as one key; 3: video frames;
# 4: file metadata (the filemeta table); 5: review decisions (decisions.py).
CATALOG_VERSION = 5
TABLES = ("meta", "vectors", "files")


@dataclass(frozen=True)
class FaissRecord:
    """Which FAISS file caches which catalog generation, its structure and its checksum."""

    file: str
    generation: int
    plan: IndexPlan
    checksum: str | None  # xxh3-128 of the file; None: recorded before checksums (trusted)

    def to_json(self) -> str:
        return json.dumps({"file": self.file, "generation": self.generation,
                           "plan": self.plan.to_dict(), "checksum": self.checksum})


class Catalog:
    def __init__(self, path: Path, readonly: bool = False, immutable: bool = False) -> None:
        """readonly: a reader. immutable: a reader on a read-only filesystem, where sqlite
        cannot create the WAL index (-shm) a WAL database needs even to read; nobody can
        write there, so skipping locks is safe."""
        self.path = path
        mode = "ro" if readonly or immutable else "rwc"
        uri = f"file:{quote(str(path))}?mode={mode}" + ("&immutable=1" if immutable else "")
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly
        # what the code says and nothing is committed implicitly.
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        # The filter's two tests SQL has no words for (filter_sql).
        self._db.create_function("dv_has", 2, _has, deterministic=True)
        self._db.create_function("dv_km", 4, _km, deterministic=True)
        self._vectors_changed = False
        self._files_changed = False
        if not (readonly or immutable):
            self._db.execute("PRAGMA journal_mode=WAL")  # readers see the last commit, never wait
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Upgrade an older catalog in place, step by step, in one transaction (a writer, under
        the lock). Each step checks the tables it adds, not the meta key: a step is skipped
        only where its tables are there."""
        version = self.structure_version()
        if version >= CATALOG_VERSION:
            self._db.execute(FILES_HASH)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version < 3:
                self._script(_V3_MIGRATION)
            if not self.has_metadata():
                self._script(_V4_MIGRATION)
            if "decisions" not in self.table_names():
                self._script(DECISIONS_SCHEMA)
            self._db.execute(FILES_HASH)
            self.set_meta("catalog_version", str(CATALOG_VERSION))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _script(self, script: str) -> None:
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def structure_version(self) -> int:
        """The catalog version its tables show (2 stands for 1 and 2, whose tables are the
        same): what a migration starts from, whatever the meta key says."""
        if self.has_metadata() and "decisions" in self.table_names():
            return 5
        if self.has_metadata():
            return 4
        return 3 if self.has_frames() else 2

    def version(self) -> int:
        return int(self.get_meta("catalog_version", "0") or 0)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the catalog's companion tables (store/decisions.py)."""
        return self._db

    def has_frames(self) -> bool:
        """Whether the vectors table knows frames (version 3). A reader of an older catalog
        that no writer has upgraded yet reads it the old way: images only."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(vectors)")}
        return "frame" in columns

    def table_names(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}

    def has_metadata(self) -> bool:
        """Whether the catalog has the metadata table (version 4)."""
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'filemeta'").fetchone() is not None

    def missing_tables(self) -> list[str]:
        names = self.table_names()
        return [t for t in TABLES if t not in names]

    def close(self) -> None:
        self._db.close()

    # ---- transactions ---------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[None]:
        """One atomic change. If it adds or deletes vectors, the generation moves on, so a FAISS
        file saved for an older generation is known to be stale."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            if self._vectors_changed:
                self._db.execute(
                    "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT(key) "
                    "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
            # Every commit: what a reader caches from files and metadata (a filter's passing
            # ids) is valid while this stays put; the generation moves with vectors only.
            self._db.execute("INSERT INTO meta VALUES ('commits', '1') ON CONFLICT(key) "
                             "DO UPDATE SET value = CAST(value AS INTEGER) + 1")
            if self._files_changed:  # what a reader caches from file rows (duplicate groups)
                self._db.execute("INSERT INTO meta VALUES ('file_revision', '1') ON "
                                 "CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
            self._vectors_changed = self._files_changed = False
            self._db.execute("COMMIT")
        except BaseException:
            self._vectors_changed = self._files_changed = False
            # sqlite has already rolled back after some errors (a full disk): a second ROLLBACK
            # would hide the real error behind "no transaction is active".
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A consistent read of one committed state, even while a writer commits."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    # ---- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0") or 0)

    @property
    def file_revision(self) -> int:
        """Moves on with every commit that adds, changes or removes a file row (not with a
        decision or metadata): a reader's groups of files are valid while it stays put."""
        return int(self.get_meta("file_revision", "0") or 0)

    @property
    def commits(self) -> int:
        """Committed write transactions (catalogs before #28 start counting at their next)."""
        return int(self.get_meta("commits", "0") or 0)

    def faiss_record(self) -> FaissRecord | None:
        value = self.get_meta("faiss")
        if value:
            data = json.loads(value)
            return FaissRecord(data["file"], int(data["generation"]),
                               IndexPlan(**data["plan"]), data.get("checksum"))
        # Catalog version 1: three keys, no checksum.
        name, generation = self.get_meta("faiss_file"), self.get_meta("faiss_generation")
        if not name or generation is None:
            return None
        plan = self.get_meta("faiss_plan")
        return FaissRecord(name, int(generation),
                           IndexPlan(**json.loads(plan)) if plan else FLAT_PLAN, None)

    def set_faiss_record(self, record: FaissRecord) -> None:
        """Inside write(); touches no vectors, so the generation stays put."""
        self.set_meta("faiss", record.to_json())
        self._db.execute("DELETE FROM meta WHERE key IN ('faiss_file', 'faiss_generation', "
                         "'faiss_plan')")
        self.set_meta("catalog_version", str(CATALOG_VERSION))

    # ---- files ----------------------------------------------------------------------------

    def files_under(self, root: str) -> dict[str, FileRow]:
        """Rows for `root` itself and everything below it ('/' < '0' bounds the prefix)."""
        cur = self._db.execute(
            "SELECT * FROM files WHERE path = ? OR (path >= ? AND path < ?)",
            (root, root.rstrip("/") + "/", root.rstrip("/") + "0"),
        )
        return {r[0]: FileRow(*r) for r in cur}

    def picture_rows(self) -> Iterator[FileRow]:
        """Indexed (status ok) still pictures, one row per content hash (a video's rows have
        frame times and are left out): what local-feature evidence is kept for."""
        cur = self._db.execute(
            "SELECT f.* FROM files f JOIN vectors v ON v.hash = f.hash WHERE f.status = 'ok' "
            "AND v.frame = 0 AND v.time IS NULL GROUP BY f.hash" if self.has_frames() else
            "SELECT * FROM files WHERE status = 'ok' AND hash IS NOT NULL GROUP BY hash")
        for r in cur:
            yield FileRow(*r)

    def count_under(self, root: str) -> int:
        """How many rows files_under(root) holds, counted in sqlite (no rows materialised)."""
        return int(self._db.execute(
            "SELECT COUNT(*) FROM files WHERE path = ? OR (path >= ? AND path < ?)",
            (root, root.rstrip("/") + "/", root.rstrip("/") + "0"),
        ).fetchone()[0])

    def upsert_file(self, path: str, size: int, mtime_ns: int, hash_: str | None,
                    vector_id: int | None, status: str = "ok", reason: str | None = None,
                    message: str | None = None) -> None:
        self._files_changed = True
        self._db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
            "size=excluded.size, mtime_ns=excluded.mtime_ns, hash=excluded.hash, "
            "vector_id=excluded.vector_id, status=excluded.status, reason=excluded.reason, "
            "message=excluded.message",
            (path, size, mtime_ns, hash_, vector_id, status, reason, message),
        )

    def delete_files(self, paths: Iterable[str]) -> None:
        gone = list(paths)
        self._files_changed = self._files_changed or bool(gone)
        self._db.executemany("DELETE FROM files WHERE path = ?", ((p,) for p in gone))
        self._db.executemany("DELETE FROM filemeta WHERE path = ?", ((p,) for p in gone))

    def paths_for(self, vector_ids: Iterable[int]) -> dict[int, list[str]]:
        return {vid: [h.path for h in hits] for vid, hits in self.hits_for(vector_ids).items()}

    def hits_for(self, vector_ids: Iterable[int]) -> dict[int, list[Hit]]:
        """The indexed files behind each vector id (paths sorted), with the frame's time."""
        ids = sorted(set(int(i) for i in vector_ids))
        out: dict[int, list[Hit]] = {}
        query = (  # a file owns the vectors of its content hash (a video: several)
            "SELECT v.id, f.path, f.rowid, v.time FROM vectors v JOIN files f ON f.hash = v.hash "
            "WHERE f.status = 'ok' AND v.id IN ({}) ORDER BY f.path, v.id"
            if self.has_frames() else  # version 2: images only, one vector_id per file
            "SELECT vector_id, path, rowid, NULL FROM files WHERE status = 'ok' AND vector_id "
            "IN ({}) ORDER BY path")
        for start in range(0, len(ids), 500):  # stay under sqlite's bound-parameter limit
            part = ids[start:start + 500]
            for vid, path, fid, t in self._db.execute(query.format(",".join("?" * len(part))),
                                                      part):
                out.setdefault(vid, []).append(Hit(path, fid, t))
        return out

    def file_by_id(self, file_id: int) -> FileRow | None:
        """An indexed (status ok) file by its id; None for any other id."""
        row = self._db.execute("SELECT * FROM files WHERE rowid = ? AND status = 'ok'",
                               (int(file_id),)).fetchone()
        return FileRow(*row) if row else None

    def failed_files(self) -> list[FileRow]:
        cur = self._db.execute("SELECT * FROM files WHERE status = 'failed' ORDER BY path")
        return [FileRow(*r) for r in cur]

    # ---- metadata (version 4) --------------------------------------------------------------

    def missing_metadata(self, roots: Sequence[str], after: str = "",
                         limit: int = 1000) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of indexed files under `roots` whose metadata is missing or
        was read from another version of the file: the next `limit` in path order after
        `after` (pages, so a million old files never sit in one list)."""
        where, args = _missing_where(roots)
        return self._db.execute(
            "SELECT f.path, f.size, f.mtime_ns FROM files f LEFT JOIN filemeta m ON m.path = "
            f"f.path WHERE f.path > ? AND {where} ORDER BY f.path LIMIT ?",
            [after, *args, limit]).fetchall()

    def count_missing_metadata(self, roots: Sequence[str]) -> int:
        where, args = _missing_where(roots)
        return int(self._db.execute("SELECT COUNT(*) FROM files f LEFT JOIN filemeta m ON "
                                    f"m.path = f.path WHERE {where}", args).fetchone()[0])

    def put_metadata(self, path: str, mtime_ns: int, meta: FileMeta) -> None:
        """Inside write(); touches no vectors, so the FAISS file stays valid."""
        values = [getattr(meta, name) for name in META_FIELDS]
        self._db.execute(
            f"INSERT OR REPLACE INTO filemeta (path, size, mtime_ns, taken_key, "
            f"{', '.join(META_FIELDS)}) VALUES (?, ?, ?, ?{', ?' * len(META_FIELDS)})",
            [path, meta.file_size, mtime_ns, taken_key(meta.taken), *values])

    def meta_for(self, file_ids: Iterable[int]) -> dict[int, FileMeta]:
        """The metadata of these files (by id) that has been read."""
        ids = sorted(set(int(i) for i in file_ids))
        if not ids or not self.has_metadata():
            return {}
        out: dict[int, FileMeta] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for row in self._db.execute(
                    f"SELECT f.rowid, m.size, {', '.join('m.' + n for n in META_FIELDS)} FROM "
                    "files f JOIN filemeta m ON m.path = f.path WHERE f.rowid IN "
                    f"({','.join('?' * len(part))})", part):
                out[row[0]] = FileMeta(file_size=row[1], **dict(zip(META_FIELDS, row[2:],
                                                                    strict=True)))
        return out

    def passing_vectors(self, flt: Filter) -> np.ndarray:
        """The vector ids (sorted, unique) of the indexed files that pass `flt`: a video's
        frames all; a vector shared by byte-identical files when any of them passes."""
        where, args = self._filter_where(flt)
        join = self._meta_join()
        # An image's row names its vector; only videos go through their hash to their frames
        # (one index lookup less per passing image).
        sql = f"SELECT f.vector_id FROM files f {join} WHERE {where} AND f.vector_id IS NOT NULL"
        if self.has_frames():
            sql += (f" UNION ALL SELECT v.id FROM files f JOIN vectors v ON v.hash = f.hash {join}"
                    f" WHERE {where} AND f.vector_id IS NULL")
            args = args + args
        cur = self._db.execute(sql, args)
        return np.unique(np.fromiter((r[0] for r in cur), np.int64))

    def passing_files(self, file_ids: Iterable[int], flt: Filter) -> set[int]:
        """Which of these file ids pass `flt`."""
        ids = sorted(set(int(i) for i in file_ids))
        where, args = self._filter_where(flt)
        out: set[int] = set()
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            out.update(r[0] for r in self._db.execute(
                f"SELECT f.rowid FROM files f {self._meta_join()} WHERE {where} AND f.rowid IN "
                f"({','.join('?' * len(part))})", [*args, *part]))
        return out

    def _meta_join(self) -> str:
        return "LEFT JOIN filemeta m ON m.path = f.path" if self.has_metadata() else ""

    def _filter_where(self, flt: Filter) -> tuple[str, list[Any]]:
        if flt.needs_metadata and not self.has_metadata():
            raise UsageError("this index has no file metadata yet (it was made before "
                             "deepvision read dates, cameras and places): run `deepvision "
                             "index` on its folders once; that reads the metadata without "
                             "re-embedding anything (--folder works already)")
        return filter_sql(flt)

    def metadata_counts(self) -> dict[str, int]:
        """How many indexed files have each kind of metadata (`info`)."""
        if not self.has_metadata():
            return {"read": 0}
        row = self._db.execute(
            "SELECT COUNT(m.path), SUM(m.taken_source = 'exif'), SUM(m.taken_source = 'video'), "
            "SUM(m.taken_source = 'mtime'), SUM(m.make IS NOT NULL OR m.model IS NOT NULL), "
            "SUM(m.lens IS NOT NULL), SUM(m.lat IS NOT NULL), SUM(m.width IS NOT NULL), "
            "SUM(m.kind = 'video'), SUM(m.duration IS NOT NULL) FROM files f JOIN filemeta m "
            "ON m.path = f.path AND m.size = f.size AND m.mtime_ns = f.mtime_ns "
            "WHERE f.status = 'ok'").fetchone()
        names = ("read", "taken_exif", "taken_video", "taken_mtime", "camera", "lens", "gps",
                 "pixel_size", "videos", "duration")
        return {n: int(v or 0) for n, v in zip(names, row, strict=True)}

    def roots(self) -> list[str]:
        value = self.get_meta("roots")
        if not value:
            return []
        try:
            return json.loads(value)
        except json.JSONDecodeError:  # written by early development builds: one per line
            return value.split("\n")

    def add_root(self, root: str) -> None:
        roots = self.roots()
        if root not in roots:  # JSON: folder names may contain newlines
            self.set_meta("roots", json.dumps([*roots, root]))

    # ---- vectors --------------------------------------------------------------------------

    def contents_for(self, hashes: Iterable[str]) -> dict[str, int | None]:
        """The already indexed contents among `hashes`: an image's vector id, or None for a
        video (its frames are found by hash)."""
        found: dict[str, int | None] = {}
        uniq = list(set(hashes))
        for start in range(0, len(uniq), 500):
            part = uniq[start:start + 500]
            marks = ",".join("?" * len(part))
            for hash_, vid, t in self._db.execute(
                    f"SELECT hash, id, time FROM vectors WHERE hash IN ({marks}) AND frame = 0",
                    part):
                found[hash_] = vid if t is None else None
        return found

    def add_vector(self, hash_: str, vector: np.ndarray, frame: int = 0,
                   time: float | None = None) -> int:
        """One vector of content `hash_`: an image's (frame 0, no time) or a video frame's."""
        cur = self._db.execute("INSERT INTO vectors (hash, frame, time, vec) VALUES (?, ?, ?, ?)",
                               (hash_, frame, time, np.asarray(vector, np.float16).tobytes()))
        self._vectors_changed = True
        return int(cur.lastrowid or 0)

    def drop_orphans(self, hashes: Iterable[str | None]) -> list[int]:
        """Delete the vectors of the candidate contents no indexed file has any more; returns
        the deleted ids (all frames of a video at once)."""
        dropped: list[int] = []
        for hash_ in {h for h in hashes if h is not None}:
            used = self._db.execute("SELECT 1 FROM files WHERE hash = ? AND status = 'ok' "
                                    "LIMIT 1", (hash_,)).fetchone()
            if used:
                continue
            ids = [r[0] for r in self._db.execute("SELECT id FROM vectors WHERE hash = ?",
                                                  (hash_,))]
            if ids:
                self._db.execute("DELETE FROM vectors WHERE hash = ?", (hash_,))
                dropped.extend(ids)
                self._vectors_changed = True
        return dropped

    def iter_vectors(self, dim: int, block: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cur = self._db.execute("SELECT id, vec FROM vectors ORDER BY id")
        while rows := cur.fetchmany(block):
            yield self._decode(rows, dim)

    @staticmethod
    def _decode(rows: list[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float16).reshape(-1, dim)
        return ids, as_stored(vecs)

    def vectors_for(self, ids: np.ndarray, dim: int) -> np.ndarray:
        """Stored vectors for `ids` (sorted, unique), in that order."""
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), 500):
            part = [int(i) for i in ids[start:start + 500]]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT id, vec FROM vectors WHERE id IN ({marks})",
                                    part).fetchall()
            got_ids, vecs = self._decode(rows, dim)
            found.update(zip(got_ids.tolist(), vecs, strict=True))
        return np.stack([found[int(i)] for i in ids])

    def sample_vectors(self, dim: int, n: int, seed: int = 0) -> np.ndarray:
        """A uniform random sample of n stored vectors (all of them if there are fewer)."""
        ids = np.fromiter((r[0] for r in self._db.execute("SELECT id FROM vectors")), np.int64)
        if len(ids) > n:
            ids = np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))
        out = []
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500].tolist()
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT id, vec FROM vectors WHERE id IN ({marks})",
                                    part).fetchall()
            out.append(self._decode(rows, dim)[1])
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def vector_width(self) -> int | None:
        """Bytes of one stored vector (2 x dim for float16), None when there are none."""
        row = self._db.execute("SELECT length(vec) FROM vectors LIMIT 1").fetchone()
        return int(row[0]) if row else None

    def counts(self) -> dict[str, int]:
        files_ok, failed = self._db.execute(
            "SELECT COALESCE(SUM(status = 'ok'), 0), COALESCE(SUM(status = 'failed'), 0) "
            "FROM files").fetchone()
        return {"files": int(files_ok), "failed": int(failed), "vectors": self.vector_count(),
                "frames": self.frame_count()}

    def frame_count(self) -> int:
        """Vectors that are video frames."""
        if not self.has_frames():
            return 0
        (n,) = self._db.execute("SELECT COUNT(*) FROM vectors WHERE time IS NOT NULL").fetchone()
        return int(n)

    def vector_count(self) -> int:
        """Stored vectors: one per image content, one per kept frame of a video content."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()
        return int(n)


def filter_sql(flt: Filter) -> tuple[str, list[Any]]:
    """WHERE terms over `files f LEFT JOIN filemeta m` that keep the files passing `flt`.
    A file whose metadata is unknown fails every test of it (NULL compares false)."""
    terms: list[str] = ["f.status = 'ok'"]
    args: list[Any] = []
    if flt.folders:
        terms.append("(" + " OR ".join("(f.path >= ? AND f.path < ?)" for _ in flt.folders) + ")")
        for folder in flt.folders:  # '/' < '0': the prefix's range, which the key index serves
            args += [folder.rstrip("/") + "/", folder.rstrip("/") + "0"]
    simple: list[tuple[str, Any]] = [
        ("m.kind = ?", flt.kind), ("m.width >= ?", flt.min_width),
        ("m.height >= ?", flt.min_height),
        ("m.taken_key >= ?", wall_clock_key(flt.after) if flt.after else None),
        ("m.taken_key < ?", wall_clock_key(flt.before) if flt.before else None),
        ("dv_has(coalesce(m.make, '') || ' ' || coalesce(m.model, ''), ?)", flt.camera)]
    for term, value in simple:
        if value is not None:
            terms.append(term)
            args.append(value)
    if flt.near is not None:
        lat, lon = flt.near
        band = flt.radius_km / 111.19 + 1e-6  # degrees of latitude: a cheap first cut
        terms.append("m.lat BETWEEN ? AND ? AND dv_km(m.lat, m.lon, ?, ?) <= ?")
        args += [lat - band, lat + band, lat, lon, flt.radius_km]
    return " AND ".join(terms), args


def _missing_where(roots: Sequence[str]) -> tuple[str, list[Any]]:
    inside = " OR ".join("f.path = ? OR (f.path >= ? AND f.path < ?)" for _ in roots) or "0"
    args = [a for r in roots for a in (r, r.rstrip("/") + "/", r.rstrip("/") + "0")]
    return (f"f.status = 'ok' AND (m.path IS NULL OR m.size != f.size OR m.mtime_ns != "
            f"f.mtime_ns) AND ({inside})"), args


def taken_key(taken: str | None) -> float | None:
    """The wall-clock seconds of an ISO 8601 capture time (filters.wall_clock_key)."""
    if not taken:
        return None
    try:
        return wall_clock_key(datetime.fromisoformat(taken))
    except ValueError:
        return None


def _has(text: str | None, needle: str | None) -> bool:
    if not text or not needle:
        return False
    return needle.casefold() in text.casefold()


def _km(lat: float | None, lon: float | None, lat0: float, lon0: float) -> float | None:
    return None if lat is None or lon is None else distance_km(lat, lon, lat0, lon0)


def as_stored(vectors: np.ndarray) -> np.ndarray:
    """Vectors as the catalog keeps them (float16), back in float32 and re-normalised (rounding
    moves the norm by ~1e-4, and scores must stay cosines within [-1, 1]). What goes into FAISS
    during a run is then identical to what a rebuild from the catalog produces."""
    v = np.asarray(vectors, np.float16).astype(np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(norms > 0, norms, 1)


def sqlite_damage(path: Path) -> str | None:
    """What is visibly wrong with a catalog file without reading it all (a cheap check on every
    open), or None: missing, empty, not sqlite, or shorter than its own header says."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "is empty (0 bytes)"
    if not header.startswith(b"SQLite format 3\0") or len(header) < 100:
        return "is not an sqlite database"
    wal = path.with_name(path.name + "-wal")
    if header[24:28] != header[92:96] or (wal.exists() and wal.stat().st_size > 0):
        return None  # the size field is stale (sqlite's rule), or pages still live in the WAL
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if page_size and pages and size < page_size * pages:
        return f"is truncated ({size} of {page_size * pages} bytes)"
    return None


def holds_files(path: Path) -> bool:
    """Whether a catalog file records any file. One that cannot be read counts as holding
    some: what is in it cannot be told, so it must be kept."""
    try:
        db = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            return bool(db.execute("SELECT EXISTS(SELECT 1 FROM files)").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return True


# Version 5's tables: the review's decisions (their rules are in decisions.py, which builds on
# the catalog; the catalog creates its tables, so their text lives here).
DECISIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('keep', 'not-duplicates', 'later')),
    hashes TEXT NOT NULL,
    files TEXT NOT NULL,
    out TEXT NOT NULL DEFAULT '[]',
    decided_at TEXT NOT NULL,
    applied TEXT
);
CREATE INDEX IF NOT EXISTS decisions_group ON decisions(group_id, seq);
CREATE TABLE IF NOT EXISTS decision_hashes (
    hash TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (hash, group_id)
) WITHOUT ROWID
"""
