"""The CLI findings of the hostile test (#26) and the CLI's help and summaries (#29), each
through the real `python -m deepvision` in a subprocess with the real EfficientNet-Lite0.

 1. A deleted manifest.json beside the index's catalog/FAISS files is a damaged index (exit
    11 naming the folder and `rebuild`), never a new one; `rebuild` sets the orphans aside.
 2. Results carry names exactly on a file or pipe (CSV quoted, ESC kept, undecodable bytes
    as they are), escaped on a terminal (a real pty), in every format.
 4. No raw FAISS k-means warning on stderr for a tiny IVF index.
 5. --ray with a port out of range: exit 2 before any write (test_ray.py has `index`'s).
 6. An empty folder: exit 7, not recorded, no index folder left behind.
 7. A video declaring a huge frame size: `too-large` with the limit and the flag.
 #29: every --help at 80 columns; `info` without None; the bar's rate is the summary's.
(3, a killed `--ray local` driver, is in test_ray.py: it needs a real Ray cluster.)
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import pty
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO
from hostile_helpers import REAL_MODEL, Exit, assert_no_traceback, expect_error, expect_exit
from imagefactory import make_photo_like

TIMEOUT = 300


@dataclass
class Done:
    exit_code: int
    out: bytes  # stdout as written: names may hold bytes that are not UTF-8
    stderr: str

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "surrogateescape")

    def json(self) -> dict:
        return json.loads(self.stdout)


def _argv(args: tuple[object, ...]) -> list[str]:
    return [a if isinstance(a, str) else os.fsdecode(a) if isinstance(a, (bytes, Path))
            else str(a) for a in args]


def dv(*args: object, env: dict[str, str] | None = None) -> Done:
    """The real CLI, stdout a pipe, read as bytes."""
    proc = subprocess.run([sys.executable, "-m", "deepvision", *_argv(args)],
                          capture_output=True, timeout=TIMEOUT, cwd=REPO,
                          env={**os.environ, **(env or {})})
    done = Done(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))
    assert_no_traceback(done)
    return done


def dv_tty(*args: object) -> Done:
    """The real CLI with stdout on a pseudo-terminal (what a user sees)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "deepvision", *_argv(args)],
                            stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=REPO, env={**os.environ, "COLUMNS": "300"})
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    proc.wait(TIMEOUT)
    return Done(proc.returncode, out, stderr)


def index(folder: Path, idx: Path, *extra: object) -> Done:
    return dv("index", folder, "--index-dir", idx, "--model", REAL_MODEL, "--workers", 0,
              *extra)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three photos and their index (named `lib`), built once; tests work on copies."""
    root = tmp_path_factory.mktemp("built")
    photos = root / "photos"
    for i in range(3):
        make_photo_like(photos / f"p{i}.jpg", seed=i)
    idx = root / "idx"
    expect_exit(index(photos, idx, "--name", "lib"), Exit.OK)
    return photos, idx


def _copy(built: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Path]:
    photos, idx = built
    shutil.copytree(idx, tmp_path / "idx")
    return photos, tmp_path / "idx", tmp_path / "idx" / "lib"


# --------------------------------------------------------------------------- 1. manifest


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


ORPHANS = {"both": ("catalog", "faiss"), "catalog-only": ("catalog",),
           "faiss-only": ("faiss",)}


def _orphan(lib: Path, keep: tuple[str, ...]) -> list[str]:
    """Delete the manifest (and the data files not kept); the names of those kept."""
    (lib / "manifest.json").unlink()
    kept = []
    for path in lib.iterdir():
        kind = "catalog" if path.name.startswith("catalog-") else (
            "faiss" if path.name.startswith("faiss-") else None)
        if kind and kind not in keep:
            path.unlink()
        elif kind and not path.name.endswith(("-wal", "-shm")):
            kept.append(path.name)
    return kept


@pytest.mark.parametrize("left", list(ORPHANS))
def test_a_deleted_manifest_is_a_damaged_index_for_every_command(built, tmp_path, left):
    photos, idx, lib = _copy(built, tmp_path)
    kept = _orphan(lib, ORPHANS[left])
    before = _contents(lib)
    where = ("--index-dir", idx, "--name", "lib")
    for args in (("info", *where), ("info", *where, "--json"),
                 ("search", photos / "p0.jpg", *where, "--workers", 0),
                 ("dupes", *where), ("index", photos, *where, "--workers", 0)):
        line = expect_error(dv(*args), Exit.CORRUPT)
        assert str(Path(idx.name) / "lib") in line or str(lib) in line, line
        assert "manifest.json" in line and "deepvision rebuild" in line, line
        assert all(name in line for name in kept), (kept, line)
        now = _contents(lib)
        assert all(now.get(n) == data for n, data in before.items() if "catalog" in n
                   or "faiss" in n), f"{args[0]} changed or deleted the orphaned files"


def test_rebuild_sets_the_orphans_aside_and_starts_over(built, tmp_path):
    photos, idx, lib = _copy(built, tmp_path)
    _orphan(lib, ORPHANS["both"])
    orphans = {n: d for n, d in _contents(lib).items() if n.startswith(("catalog-", "faiss-"))}
    expect_exit(dv("rebuild", "--index-dir", idx, "--name", "lib"), Exit.USAGE)  # which DIR?
    done = dv("rebuild", photos, "--index-dir", idx, "--name", "lib", "--workers", 0, "--json")
    expect_exit(done, Exit.OK)
    assert done.json()["total_files"] == 3
    broken = [p for p in lib.iterdir() if p.name.startswith("broken-")]
    assert len(broken) == 1 and {n: d for n, d in _contents(broken[0]).items()
                                 if n in orphans} == orphans
    info = dv("info", "--index-dir", idx, "--name", "lib", "--json")
    expect_exit(info, Exit.OK)
    assert info.json()["files"] == 3


@pytest.mark.parametrize("stray", ["notes.txt", "catalog-notes.pdf", "faiss-x.txt",
                                   "broken-20260101T000000/catalog-0a1b2c3d.sqlite"])
def test_a_stray_file_in_an_index_folder_is_not_damage(built, tmp_path, stray):
    photos, _ = built
    lib = tmp_path / "idx" / "lib"
    (lib / stray).parent.mkdir(parents=True)
    (lib / stray).write_bytes(b"not ours")
    info = dv("info", "--index-dir", tmp_path / "idx", "--name", "lib")
    expect_error(info, Exit.NO_INDEX)
    expect_exit(index(photos, tmp_path / "idx", "--name", "lib"), Exit.OK)
    assert (lib / stray).read_bytes() == b"not ours"


def test_a_first_run_killed_before_its_manifest_is_no_damage(built, tmp_path):
    """A catalog that records no file yet (a first run killed between creating its catalog
    and writing its manifest) holds nothing to lose: the next run starts the index."""
    from deepvision.store.catalog import Catalog

    photos, _ = built
    lib = tmp_path / "idx" / "lib"
    lib.mkdir(parents=True)
    Catalog(lib / "catalog-0123abcd.sqlite").close()
    expect_error(dv("info", "--index-dir", tmp_path / "idx", "--name", "lib"), Exit.NO_INDEX)
    expect_exit(index(photos, tmp_path / "idx", "--name", "lib"), Exit.OK)


# --------------------------------------------------------------------------- 2. names


EVIL = {"esc": b"e\x1b[31mred.jpg", "newline": b"new\nline.jpg", "comma": b"a,b.jpg",
        "quote": b'say "hi".jpg', "cr": b"car\rret.jpg", "title": b"\x1b]0;t\x07.jpg"}
NOT_UTF8 = b"caf\xe9.jpg"  # a Latin-1 name: `bad-filename` when indexed, still a query


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Images under hostile names (each a copy of another, so dupes has groups) and their
    index; the folder also holds a name that is not UTF-8."""
    root = tmp_path_factory.mktemp("evil")
    folder = root / "lib"
    folder.mkdir()
    for i, name in enumerate(EVIL.values()):
        make_photo_like(Path(os.fsdecode(os.fsencode(folder) + b"/" + name)), seed=i // 2)
    make_photo_like(Path(os.fsdecode(os.fsencode(folder) + b"/" + NOT_UTF8)), seed=9)
    idx = root / "idx"
    expect_exit(index(folder, idx), Exit.PARTIAL)  # the non-UTF-8 name: bad-filename
    return folder, idx


def _names(folder: Path) -> set[str]:
    return {os.fsdecode(os.fsencode(folder) + b"/" + n) for n in [*EVIL.values(), NOT_UTF8]}


def _csv_rows(done: Done) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(done.stdout, newline="")))


def test_csv_on_a_pipe_carries_every_name_exactly(evil):
    folder, idx = evil
    search = dv("search", folder, "--index-dir", idx, "--workers", 0, "-k", 2, "--format", "csv")
    expect_exit(search, Exit.PARTIAL)  # the non-UTF-8 query cannot be read
    rows = _csv_rows(search)
    assert {r["query"] for r in rows} == _names(folder)
    assert all(os.path.lexists(r["path"]) for r in rows if r["path"]), rows
    assert {r["path"] for r in rows if r["path"]} == _names(folder) - {
        os.fsdecode(os.fsencode(folder) + b"/" + NOT_UTF8)}
    assert os.fsencode(folder) + b"/" + NOT_UTF8 in search.out  # its own bytes, not \xe9
    dupes = dv("dupes", "--index-dir", idx, "--format", "csv")
    expect_exit(dupes, Exit.OK)
    assert {r["path"] for r in _csv_rows(dupes)} == _names(folder) - {
        os.fsdecode(os.fsencode(folder) + b"/" + NOT_UTF8)}


@pytest.mark.slow
def test_json_and_table_on_a_pipe_carry_every_name_exactly(evil):
    folder, idx = evil
    query = Path(os.fsdecode(os.fsencode(folder) + b"/" + EVIL["esc"]))
    doc = dv("search", query, "--index-dir", idx, "--workers", 0, "--format", "json").json()
    assert doc["queries"][0]["query"] == str(query)
    assert str(query) in {m["path"] for m in doc["queries"][0]["matches"]}
    table = dv("search", query, "--index-dir", idx, "--workers", 0)
    expect_exit(table, Exit.OK)
    for name in (EVIL["esc"], EVIL["newline"]):  # the query itself, and its copy
        assert name in table.out, table.out
    dupes = dv("dupes", "--index-dir", idx)
    assert all(name in dupes.out for name in EVIL.values()), dupes.out
    info = dv("info", "--index-dir", idx, "--failed")  # as recorded: the catalog is text
    assert os.fsencode(folder) + b"/caf\\xe9.jpg" in info.out and EVIL["esc"] not in info.out


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_terminal_gets_every_name_escaped(evil, fmt):
    folder, idx = evil
    done = dv_tty("search", folder, "--index-dir", idx, "--workers", 0, "-k", 2,
                  "--format", fmt)
    assert done.exit_code == Exit.PARTIAL, done.stderr
    for name in (n for n in EVIL.values() if re.search(rb"[\x00-\x1f]", n)):
        raw = name.replace(b"\n", b"\r\n")  # the terminal's line discipline adds the CR
        assert raw not in done.out, f"raw {name!r} reached the terminal"
    assert b"\x1b]0;" not in done.out and b"\x07" not in done.out
    assert NOT_UTF8 not in done.out
    assert (b"\\u001b" if fmt == "json" else b"\\x1b") in done.out  # shown, escaped


def test_dupes_and_info_on_a_terminal_escape_names(evil):
    _, idx = evil
    for args in (("dupes", "--index-dir", idx), ("dupes", "--index-dir", idx, "--format", "csv"),
                 ("info", "--index-dir", idx, "--failed")):
        done = dv_tty(*args)
        assert done.exit_code == Exit.OK, done.stderr
        assert not any(name in done.out for name in [*EVIL.values(), NOT_UTF8]
                       if re.search(rb"[\x00-\x1f\x80-\xff]", name)), done.out


# --------------------------------------------------------------------------- 4. FAISS


def test_a_tiny_ivf_index_prints_no_faiss_warning(built, tmp_path):
    photos, _ = built
    for extra in ((), ("--json",)):
        idx = tmp_path / f"idx{len(extra)}"
        done = index(photos, idx, "--index-type", "ivf", *extra)
        expect_exit(done, Exit.OK)
        assert "WARNING" not in done.stderr and "clustering" not in done.stderr, done.stderr
        if extra:
            assert done.json()["added"] == 3 and done.stderr == ""
        else:
            assert "too few for more than one list" in done.stderr, done.stderr
    for kind in ("ivf", "ivfpq", "hnsw"):
        again = dv("rebuild", "--from-vectors", "--index-dir", tmp_path / "idx1",
                   "--index-type", kind, "--json")
        expect_exit(again, Exit.OK)
        assert again.stderr == "", again.stderr
        assert (again.json()["note"] is None) == (kind == "hnsw"), again.json()


# --------------------------------------------------------------------------- 5. --ray


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "ray://127.0.0.1:70000", "h:0"])
def test_rebuild_with_a_port_out_of_range_is_a_usage_error(built, tmp_path, address):
    pytest.importorskip("ray")
    photos, _ = built
    done = dv("rebuild", photos, "--index-dir", tmp_path / "idx", "--ray", address)
    assert "out of range" in expect_error(done, Exit.USAGE)
    assert not (tmp_path / "idx").exists()


# --------------------------------------------------------------------------- 6. empty folders


def _data(files: dict[str, bytes]) -> dict[str, bytes]:
    """The index's data files (sqlite's -wal/-shm come and go with any reader)."""
    return {n: d for n, d in files.items()
            if n.startswith(("catalog-", "faiss-", "manifest")) and not n.endswith(("-wal",
                                                                                  "-shm"))}


def test_an_empty_folder_into_an_existing_index_is_refused_and_not_recorded(built, tmp_path):
    photos, idx, lib = _copy(built, tmp_path)
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "README.txt").write_text("no images here")
    before = _contents(lib)
    for folders in ((empty,), (texts,), (empty, photos), (photos, empty)):
        done = dv("index", *folders, "--index-dir", idx, "--name", "lib", "--json")
        line = expect_error(done, Exit.NO_IMAGES)
        assert "no image files" in line and str(folders[0] if folders[0] != photos
                                                else empty) in line, line
        assert done.out == b""
    info = dv("info", "--index-dir", idx, "--name", "lib", "--json").json()
    assert info["folders"] == [str(photos)] and info["files"] == 3
    assert _data(_contents(lib)) == _data(before)


def test_an_empty_folder_leaves_no_new_index_behind(built, tmp_path):
    photos, _ = built
    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "idx", tmp_path / "deep" / "er" / "idx"):
        for folders in ((empty,), (photos, empty)):
            expect_error(dv("index", *folders, "--index-dir", target), Exit.NO_IMAGES)
            assert not target.exists() and not (tmp_path / "deep").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    expect_error(dv("index", empty, "--index-dir", existing), Exit.NO_IMAGES)
    assert existing.is_dir() and not any(existing.iterdir())  # the user's folder stays


def test_rebuild_of_an_empty_folder_keeps_the_index(built, tmp_path):
    _, idx, _ = _copy(built, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(dv("rebuild", empty, "--index-dir", idx, "--name", "lib"), Exit.NO_IMAGES)
    assert dv("info", "--index-dir", idx, "--name", "lib", "--json").json()["files"] == 3


# --------------------------------------------------------------------------- 7. videos


@pytest.mark.parametrize(("size", "limit", "says"), [
    ((65000, 65000), None, "over the 120 MP limit; raise it with --max-megapixels"),
    ((65000, 65000), "100000", "more than FFmpeg decodes"),
    ((30000, 9000), "1000", "more than FFmpeg decodes"),
    ((20000, 12000), None, "240 megapixels, over the 120 MP limit"),
])
def test_a_video_declaring_a_huge_frame_is_too_large(tmp_path, size, limit, says):
    pytest.importorskip("av")
    from videofactory import declared_size_video

    video = declared_size_video(tmp_path / "lib" / "huge.avi", size)
    make_photo_like(tmp_path / "lib" / "photo.jpg", seed=1)
    extra = ("--max-megapixels", limit) if limit else ()
    done = index(tmp_path / "lib", tmp_path / "idx", "--json", *extra)
    expect_exit(done, Exit.PARTIAL)
    failure = done.json()["failures"][0]
    assert (failure["path"], failure["reason"]) == (str(video), "too-large"), failure
    assert f"{size[0]}x{size[1]}" in failure["message"] and says in failure["message"]
    query = dv("search", video, "--index-dir", tmp_path / "idx", "--workers", 0, "--format",
               "json", *extra)
    expect_exit(query, Exit.PARTIAL)
    assert query.json()["queries"][0]["error"].startswith("too-large")


# --------------------------------------------------------------------------- #29


COMMANDS = ["", "index", "rebuild", "search", "dupes", "info", "serve", "eval"]
PLACEHOLDER = re.compile(r"<(bool|str|int|float|path|list|text|integer|choice)[^>]*>", re.I)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_reads_well_in_80_columns(command):
    done = dv(*([command] if command else []), "--help", env={"COLUMNS": "80"})
    expect_exit(done, Exit.OK)
    text = done.stdout
    lines = text.splitlines()
    assert max(map(len, lines)) <= 80, [ln for ln in lines if len(ln) > 80]
    body = text.split("\n", 1)[1]  # the usage line's `{DIR}...`: repeatable arguments
    for repeatable in ("DIR...", "PATH..."):
        body = body.replace(repeatable, "")
    cut = re.search(r"\w\.\.\.$", body, re.M)  # Click shortens a summary as `word...`
    assert "…" not in body and not cut, f"a cut text: {body}"
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    assert not re.search(r"#\d|round\)", text), "an internal reference in the help"
    for above, below in itertools.pairwise(lines):
        # A word cut at a hyphen: `efficientnet-` / `lite0`, `--allow-mass-` / `delete`.
        assert not (re.search(r"\w-$", above) and re.match(r"\s*\w", below)), (above, below)


def test_info_prints_no_none(built):
    _, idx = built
    done = dv("info", "--index-dir", idx, "--name", "lib")
    expect_exit(done, Exit.OK)
    assert "None" not in done.stdout, done.stdout
    colons = {ln.index(":") for ln in done.stdout.splitlines() if re.match(r"\s*\w+: ", ln)}
    assert len(colons) == 1, f"keys not aligned: {done.stdout}"


def test_the_summary_rate_is_the_progress_bar_rate(tmp_path):
    folder = tmp_path / "photos"
    for i in range(6):
        make_photo_like(folder / f"p{i}.jpg", seed=i)
    done = index(folder, tmp_path / "idx")
    expect_exit(done, Exit.OK)
    bar = re.findall(r"embedding \S+ 6/6 ([\d.]+) files/s", done.stderr)  # not a later stage's
    summary = re.search(r"embedded 6 in ([\d.]+) s \(([\d.]+) files/s\); ([\d.]+) s in all",
                        done.stderr)
    assert bar and summary, done.stderr
    assert float(summary[2]) == pytest.approx(float(bar[-1]), rel=0.1, abs=0.15), done.stderr
    assert float(summary[3]) >= float(summary[1])
