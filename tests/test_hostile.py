"""Hostile input: what a hostile or merely unlucky file system throws at deepvision.

Every case must end in a documented exit code with a one-line `error:` on stderr (or a per-file
failure reason), never in a Python traceback, a hang, a memory blow-up or lost data.

Catalogue (item numbers as in the hostile-input brief):
 1. 1x100000 and 100000x1 PNGs (~475 bytes): `too-large`, not a 20 GB resize (subprocess,
    address space capped, --workers 0 and 1); as a query they fail alone.
 2. A FIFO named x.jpg: `special-file`, never opened (subprocess, timeout); no stale lock.
 3. Symlinks to /dev/zero and /dev/urandom: `special-file` too, in bounded time and memory.
 4. --name that leaves --index-dir (.., ../../x, /abs, "", a/b): usage error, nothing written or
    deleted outside; stale-file cleanup inside an index spares files deepvision did not write.
 5. An emptied folder is not "delete everything": MASS_DELETE unless --allow-mass-delete.
 6. A FAISS file overwritten with zeros is detected (search still exact) and rewritten.
 7. A read-only index answers info/search/dupes; `index` against it is a STORAGE error.
 8. A full disk while writing the index: STORAGE error; fine again once there is room.
 9. Damaged manifest or catalog: CORRUPT with a diagnosis naming the file and `deepvision
    rebuild`; rebuild then works and sets the broken files aside instead of deleting them.
10. An HTML report over a query folder holding a non-UTF-8 file name.
11. CSV with \\r, quotes and commas in file names parses back to the exact paths.
12. Terminal escape sequences in file names never reach stderr raw; results on a pipe keep them.
13. Index files and HTML reports are created 0644 under umask 022.
14. A non-UTF-8 file name fails once (`bad-filename`), then counts as still failing.
15. Searching many queries shows a `queries` progress line.
16. Symlinked folders outside the root: followed by default, not with --no-follow-links
    (symlinked files are indexed either way).
(17, --commit-every, is covered elsewhere.) Every run goes through `assert_no_traceback`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_helpers import (
    REAL_MODEL,
    Exit,
    assert_no_traceback,
    control_chars,
    expect_error,
    expect_exit,
    fill_leaving,
    read_only_view,
    run_capped,
    tmpfs,
    tree_snapshot,
)
from imagefactory import make_photo_like, photo_like_image
from PIL import Image

N_PHOTOS = 12  # the `photos` fixture
Cli = Callable[..., object]

# --------------------------------------------------------------------------- helpers


def _checked(run):
    assert_no_traceback(run)
    return run


def _index(cli: Cli, folder: Path, idx: Path, *extra: object):
    return _checked(cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0",
                        "--json", *extra))


def _ok(run) -> dict:
    expect_exit(run, Exit.OK)
    return run.json()


def _partial(run) -> dict:
    expect_exit(run, Exit.PARTIAL)
    return run.json()


def _search(cli: Cli, *queries: object, idx: Path, k: int = 5, name: str = "default"):
    return _checked(cli("search", *queries, "--index-dir", idx, "--name", name, "--workers", "0",
                        "--format", "json", "-k", k))


def _by_query(doc: dict) -> dict[str, dict]:
    return {q["query"]: q for q in doc["queries"]}


def _top_is_itself(cli: Cli, query: Path, idx: Path, name: str = "default") -> None:
    run = _search(cli, query, idx=idx, k=1, name=name)
    expect_exit(run, Exit.OK)
    (result,) = run.json()["queries"]
    top = result["matches"][0]
    assert top["path"] == str(query) and top["score"] == pytest.approx(1.0, abs=1e-3), result


def _info(cli: Cli, idx: Path, name: str = "default") -> dict:
    run = _checked(cli("info", "--index-dir", idx, "--name", name, "--json"))
    expect_exit(run, Exit.OK)
    return run.json()


def _reasons(summary: dict) -> dict[str, str]:
    return {f["path"]: f["reason"] for f in summary["failures"]}


def _jpeg_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    photo_like_image(seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


# --------------------------------------------------------------------------- exit codes


def test_new_exit_codes_have_their_documented_values():
    from deepvision.errors import ExitCode

    have = {code.name: int(code) for code in ExitCode}
    want = {code.name: int(code) for code in Exit}
    assert want.items() <= have.items(), {n: have.get(n) for n in want if have.get(n) != want[n]}


# --------------------------------------------------------------------------- 1. aspect ratio


def _line_png(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 40, 40)).save(path, optimize=True)
    assert path.stat().st_size < 1000  # tiny on disk, and only 0.1 megapixels
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_extreme_aspect_ratio_is_too_large_not_a_memory_blowup(tmp_path, workers):
    folder = tmp_path / "photos"
    make_photo_like(folder / "good.jpg", seed=1)
    thin = _line_png(folder / "thin.png", (1, 100_000))
    wide = _line_png(folder / "wide.png", (100_000, 1))
    run = run_capped("index", folder, "--index-dir", tmp_path / "idx", "--model", REAL_MODEL,
                     "--workers", workers, "--json")
    summary = _partial(run)
    assert _reasons(summary) == {str(thin): "too-large", str(wide): "too-large"}
    assert all("--max-megapixels" in f["message"] for f in summary["failures"])
    assert summary["added"] == 1 and summary["total_files"] == 1


@pytest.mark.slow
def test_extreme_aspect_ratio_query_fails_alone(tmp_path):
    folder = tmp_path / "photos"
    good = make_photo_like(folder / "good.jpg", seed=1)
    idx = tmp_path / "idx"
    _ok(run_capped("index", folder, "--index-dir", idx, "--model", REAL_MODEL, "--workers", 0,
                   "--json"))
    thin = _line_png(tmp_path / "queries" / "thin.png", (1, 100_000))
    run = run_capped("search", thin, good, "--index-dir", idx, "--workers", 0, "--format", "json")
    expect_exit(run, Exit.PARTIAL)
    queries = _by_query(run.json())
    assert queries[str(thin)]["error"].startswith("too-large"), queries[str(thin)]
    assert "--max-megapixels" in queries[str(thin)]["error"]
    assert queries[str(good)]["error"] is None
    assert queries[str(good)]["matches"][0]["path"] == str(good)


# --------------------------------------------------------------------------- 2./3. special files


def _special_files_are_skipped(tmp_path: Path, folder: Path, specials: list[Path]) -> None:
    """Index (twice) and search a folder holding `specials` beside two good images, through
    the real CLI: each special file is `special-file`, the good ones are indexed and found."""
    idx = tmp_path / "idx"
    args = ("index", folder, "--index-dir", idx, "--model", REAL_MODEL, "--workers", 0, "--json")
    summary = _partial(run_capped(*args))
    assert _reasons(summary) == {str(p): "special-file" for p in specials}
    assert summary["added"] == 2 and summary["total_files"] == 2

    again = run_capped(*args)
    assert again.exit_code != Exit.LOCKED, again.stderr  # the first run left no lock behind
    assert again.exit_code in (Exit.OK, Exit.PARTIAL), again.stderr

    good = folder / "good.jpg"
    run = run_capped("search", *specials, good, "--index-dir", idx, "--workers", 0,
                     "--format", "json")
    expect_exit(run, Exit.PARTIAL)
    queries = _by_query(run.json())
    for special in specials:
        assert (queries[str(special)]["error"] or "").startswith("special-file"), queries
    assert queries[str(good)]["matches"][0]["path"] == str(good)


def _two_good_images(folder: Path) -> None:
    make_photo_like(folder / "good.jpg", seed=1)
    make_photo_like(folder / "good2.png", seed=2)


@pytest.mark.slow
def test_fifo_named_like_an_image_is_skipped_not_waited_on(tmp_path):
    folder = tmp_path / "photos"
    _two_good_images(folder)
    fifo = folder / "x.jpg"
    os.mkfifo(fifo)  # nobody ever writes to it: opening it for reading would block forever
    _special_files_are_skipped(tmp_path, folder, [fifo])


@pytest.mark.slow
def test_symlinks_to_endless_devices_are_skipped(tmp_path):
    folder = tmp_path / "photos"
    _two_good_images(folder)
    zero, urandom = folder / "z.jpg", folder / "u.jpg"
    zero.symlink_to("/dev/zero")  # endless: reading it whole exhausts memory
    urandom.symlink_to("/dev/urandom")
    _special_files_are_skipped(tmp_path, folder, [urandom, zero])


# --------------------------------------------------------------------------- 4. --name


FOREIGN = ("catalog-x.pdf", "faiss-notes.txt", ".s.tmp", "notes.txt")


def _plant_foreign_files(folder: Path) -> dict[Path, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    planted = {}
    for name in FOREIGN:
        path = folder / name
        path.write_bytes(f"not deepvision's: {name}\n".encode())
        planted[path] = path.read_bytes()
    return planted


def _assert_intact(planted: dict[Path, bytes]) -> None:
    gone = [str(p) for p, data in planted.items() if not p.is_file() or p.read_bytes() != data]
    assert not gone, f"files deepvision did not write were deleted or changed: {gone}"


def _name_sandbox(tmp_path: Path) -> tuple[Path, Path, dict[Path, bytes]]:
    """tmp/outer/inner/indexes as --index-dir, foreign files in it and in every folder that a
    name could reach (above it, and tmp/abs for an absolute name)."""
    index_dir = tmp_path / "outer" / "inner" / "indexes"
    planted: dict[Path, bytes] = {}
    for folder in (index_dir, index_dir.parent, index_dir.parent.parent, tmp_path / "abs"):
        planted.update(_plant_foreign_files(folder))
    return index_dir, tmp_path / "abs", planted


def _assert_name_refused(run, tmp_path: Path, before: dict[str, str],
                         planted: dict[Path, bytes]) -> None:
    line = expect_error(run, Exit.USAGE)
    assert "--name" in line, line
    assert re.search(r"letter|digit|character|may (only )?contain|allowed", line, re.I), line
    _assert_intact(planted)
    assert tree_snapshot(tmp_path) == before, "a refused --name still wrote files"


@pytest.mark.parametrize("name", ["..", "../../x", "<absolute>", "", "a/b"])
def test_index_name_that_leaves_the_index_dir_is_refused(cli, tiny_model, photos, tmp_path,
                                                         name):
    index_dir, absolute, planted = _name_sandbox(tmp_path)
    name = str(absolute) if name == "<absolute>" else name
    before = tree_snapshot(tmp_path)
    run = _checked(cli("index", photos, "--index-dir", index_dir, "--name", name,
                       "--model", "tiny", "--workers", "0"))
    _assert_name_refused(run, tmp_path, before, planted)


@pytest.mark.parametrize("command", ["rebuild", "search", "info", "dupes"])
def test_every_command_refuses_a_name_that_leaves_the_index_dir(cli, tiny_model, photos,
                                                                tmp_path, command):
    index_dir, _, planted = _name_sandbox(tmp_path)
    before = tree_snapshot(tmp_path)
    extra: tuple[object, ...] = {
        "rebuild": (photos, "--model", "tiny", "--workers", "0"),
        "search": (photos / "img_00.jpg", "--workers", "0"),
    }.get(command, ())
    run = _checked(cli(command, *extra, "--index-dir", index_dir, "--name", ".."))
    _assert_name_refused(run, tmp_path, before, planted)


def test_plain_names_are_accepted(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx, "--name", "photos-2024_v1"))
    assert _info(cli, idx, "photos-2024_v1")["files"] == N_PHOTOS


def test_stale_file_cleanup_spares_files_deepvision_did_not_write(cli, tiny_model, photos,
                                                                  tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    folder = idx / "default"
    planted = _plant_foreign_files(folder)

    _ok(_index(cli, photos, idx))  # nothing changed
    make_photo_like(photos / "new.png", seed=99)
    _ok(_index(cli, photos, idx))  # a new generation: the old FAISS file is stale
    rebuilt = _checked(cli("rebuild", "--index-dir", idx, "--model", "tiny", "--workers", "0"))
    expect_exit(rebuilt, Exit.OK)  # a new catalog: the old one is stale

    _assert_intact(planted)
    _one(folder, "faiss-*.bin")  # deepvision's own stale files did go
    _one(folder, "catalog-*.sqlite")
    _top_is_itself(cli, photos / "new.png", idx)


# --------------------------------------------------------------------------- 5. mass delete


def test_emptied_folder_needs_allow_mass_delete(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    for path in photos.iterdir():  # an unmounted share or a sync gone wrong: the folder stays
        path.unlink()

    run = _index(cli, photos, idx)
    expect_error(run, Exit.MASS_DELETE)
    assert str(photos) in run.stderr and "--allow-mass-delete" in run.stderr
    assert _info(cli, idx)["files"] == N_PHOTOS  # nothing was dropped

    summary = _ok(_index(cli, photos, idx, "--allow-mass-delete"))
    assert summary["removed"] == N_PHOTOS and summary["total_files"] == 0
    assert _info(cli, idx)["files"] == 0


def test_deleting_one_file_of_several_needs_no_flag(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    (photos / "img_00.jpg").unlink()
    summary = _ok(_index(cli, photos, idx))
    assert summary["removed"] == 1 and summary["total_files"] == N_PHOTOS - 1


# --------------------------------------------------------------------------- 6. damaged FAISS


def _zero_out(path: Path) -> bytes:
    """Overwrite 100 kB in the middle of `path` (its middle half if smaller) with zeros, in
    place: same name, same size. Returns the damaged bytes."""
    data = bytearray(path.read_bytes())
    n = len(data)
    start, length = (n // 2 - 50_000, 100_000) if n > 400_000 else (n // 4, n // 2)
    data[start:start + length] = bytes(length)
    path.write_bytes(bytes(data))
    assert path.stat().st_size == n
    return bytes(data)


def _every_photo_finds_itself(cli: Cli, photos: Path, idx: Path) -> None:
    run = _search(cli, photos, idx=idx, k=1)
    expect_exit(run, Exit.OK)
    for query, result in _by_query(run.json()).items():
        top = result["matches"][0]
        assert top["path"] == query and top["score"] == pytest.approx(1.0, abs=1e-3), result


def test_zeroed_faiss_file_is_detected_and_repaired(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    folder = idx / "default"
    damaged = _zero_out(_one(folder, "faiss-*.bin"))

    _every_photo_finds_itself(cli, photos, idx)  # from the stored vectors, not the zeros
    _ok(_index(cli, photos, idx))  # nothing changed on disk, but the cache is rewritten
    assert _one(folder, "faiss-*.bin").read_bytes() != damaged
    _every_photo_finds_itself(cli, photos, idx)


# --------------------------------------------------------------------------- 7. read-only index


def test_read_only_index_answers_and_refuses_writes(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    live = idx / "default"
    copy = tmp_path / "ro-source" / "default"
    copy.mkdir(parents=True)
    for path in [live / "manifest.json", _one(live, "catalog-*.sqlite"),
                 _one(live, "faiss-*.bin")]:
        shutil.copy2(path, copy / path.name)  # no -wal/-shm: what a backup or a CD holds

    with read_only_view(copy.parent, tmp_path / "ro") as ro:
        assert _info(cli, ro)["files"] == N_PHOTOS
        _top_is_itself(cli, photos / "img_05.tiff", ro)
        dupes = _checked(cli("dupes", "--index-dir", ro, "--format", "json"))
        expect_exit(dupes, Exit.OK)

        make_photo_like(photos / "new.jpg", seed=77)  # something to write
        run = _checked(cli("index", photos, "--index-dir", ro, "--model", "tiny",
                           "--workers", "0"))
        line = expect_error(run, Exit.STORAGE)
        assert "read-only" in line.lower(), line


# --------------------------------------------------------------------------- 8. disk full


LEAVE_KB = (256, 128, 64, 32, 16, 8, 4, 0)  # free space left beside a filler, largest first


def test_full_disk_is_a_storage_error_and_recoverable(cli, tiny_model, photos, tmp_path):
    with tmpfs(tmp_path / "small", "1m") as disk:
        idx, filler = disk / "idx", disk / "filler"
        outcomes = []
        for leave in LEAVE_KB:
            shutil.rmtree(idx, ignore_errors=True)
            filler.unlink(missing_ok=True)
            fill_leaving(filler, leave * 1024)
            run = _index(cli, photos, idx)
            outcomes.append((leave, run.exit_code))
            if run.exit_code != Exit.OK:
                break
        assert run.exit_code == Exit.STORAGE, f"(KB left, exit code): {outcomes}\n{run.stderr}"
        line = expect_error(run, Exit.STORAGE)
        assert re.search(r"no space|full", line, re.I), line

        filler.unlink()  # room again: the next run finishes the job
        summary = _ok(_index(cli, photos, idx))
        assert summary["total_files"] == N_PHOTOS
        _every_photo_finds_itself(cli, photos, idx)


def test_a_report_on_a_full_disk_is_a_storage_error(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    with tmpfs(tmp_path / "tiny", "16k") as disk:
        run = cli("search", photos / "img_00.jpg", "--index-dir", idx, "--workers", "0",
                  "--html", disk / "report.html")
        line = expect_error(run, Exit.STORAGE)
        assert "report" in line and re.search(r"no space", line, re.I), line


# --------------------------------------------------------------------------- 9. corrupt state


NAME = "lib"


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def _damage(kind: str, folder: Path) -> tuple[Path | None, tuple[str, ...]]:
    """Break the index in `folder` one way. Returns the broken file (None: it is gone) and the
    names of which the diagnosis must mention one."""
    manifest = folder / "manifest.json"
    catalog = folder / _manifest(folder)["catalog"]
    if kind.startswith("manifest"):
        text = {"manifest-list": b"[]\n", "manifest-null": b"null\n",
                "manifest-random": random.Random(11).randbytes(200)}
        manifest.write_bytes(text[kind])
        return manifest, (manifest.name,)
    if kind == "dim-edited":
        data = _manifest(folder)
        data["dim"] += 16
        manifest.write_text(json.dumps(data, indent=2), encoding="utf-8")
        faiss = _one(folder, "faiss-*.bin")
        return manifest, (manifest.name, catalog.name, faiss.name)
    if kind == "catalog-deleted":
        catalog.unlink()
        return None, (catalog.name,)
    if kind == "catalog-truncated":
        catalog.write_bytes(catalog.read_bytes()[:catalog.stat().st_size // 2])
    elif kind == "catalog-empty":
        catalog.write_bytes(b"")
    return catalog, (catalog.name,)


DAMAGES = ["manifest-list", "manifest-null", "manifest-random", "dim-edited",
           "catalog-deleted", "catalog-truncated", "catalog-empty"]
CASES = [(d, c) for d in DAMAGES for c in ("info", "search", "index")
         if not (d == "dim-edited" and c == "index")]


def _damaged_index(cli: Cli, photos: Path, tmp_path: Path, kind: str):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx, "--name", NAME))
    assert not list((idx / NAME).glob("*-wal")), "the catalog was left with a WAL file"
    broken, names = _damage(kind, idx / NAME)
    return idx, broken, (broken.read_bytes() if broken else None), names


def _kept(folder: Path, original: Path, data: bytes, moved: bool = False) -> bool:
    """Whether `data` (the bytes of `original` when it broke) is still somewhere below
    `folder` (moved: not at its old place any more). An empty file counts only under a name
    that still contains the original's."""
    for path in folder.rglob("*"):
        if moved and path == original:
            continue
        if path.is_file() and path.read_bytes() == data and (
                data or original.name in str(path.relative_to(folder))):
            return True
    return False


@pytest.mark.parametrize(("damage", "command"), CASES)
def test_corrupt_index_is_diagnosed(cli, tiny_model, photos, tmp_path, damage, command):
    idx, broken, data, names = _damaged_index(cli, photos, tmp_path, damage)
    where = ("--index-dir", idx, "--name", NAME)
    run = _checked({
        "info": lambda: cli("info", *where),
        "search": lambda: cli("search", photos / "img_00.jpg", *where, "--workers", "0"),
        "index": lambda: cli("index", photos, *where, "--model", "tiny", "--workers", "0"),
    }[command]())
    line = expect_error(run, Exit.CORRUPT)
    assert any(name in line for name in names), f"diagnosis names none of {names}: {line}"
    assert "deepvision rebuild" in run.stderr, run.stderr
    if broken is not None:
        assert _kept(idx / NAME, broken, data), f"{command} threw away the broken {broken.name}"


@pytest.mark.parametrize("damage", DAMAGES)
def test_rebuild_sets_a_corrupt_index_aside_and_starts_over(cli, tiny_model, photos, tmp_path,
                                                            damage):
    idx, broken, data, _ = _damaged_index(cli, photos, tmp_path, damage)
    run = _checked(cli("rebuild", photos, "--index-dir", idx, "--name", NAME, "--model", "tiny",
                       "--workers", "0", "--json"))
    assert _ok(run)["total_files"] == N_PHOTOS
    _top_is_itself(cli, photos / "img_03.bmp", idx, NAME)
    assert _info(cli, idx, NAME)["files"] == N_PHOTOS
    if broken is not None:
        assert _kept(idx / NAME, broken, data, moved=True), (
            f"rebuild deleted the broken {broken.name} or left it in place")


# --------------------------------------------------------------------------- 10. HTML, bad names


def test_html_report_with_a_non_utf8_query_name(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    queries = tmp_path / "queries"
    make_photo_like(queries / "good.jpg", seed=3)
    with open(os.fsencode(queries) + b"/caf\xe9.jpg", "wb") as f:  # a Latin-1 name
        f.write(_jpeg_bytes(seed=4))
    report = tmp_path / "report.html"

    run = _checked(cli("search", queries, "--index-dir", idx, "--workers", "0",
                       "--html", report))
    assert run.exit_code in (Exit.OK, Exit.PARTIAL), run.stderr
    page = report.read_text(encoding="utf-8")  # valid UTF-8, whatever the names were
    assert "good.jpg" in page and "caf" in page


# --------------------------------------------------------------------------- 11. CSV


def test_csv_round_trips_names_with_cr_quotes_and_commas(cli, tiny_model, tmp_path):
    folder = tmp_path / "lib"
    names = ["carriage\rreturn.jpg", 'say "cheese", please.png', "plain.jpg"]
    paths = [make_photo_like(folder / n, seed=60 + i) for i, n in enumerate(names)]
    idx = tmp_path / "idx"
    _ok(_index(cli, folder, idx))

    for path in paths:
        run = _checked(cli("search", path, "--index-dir", idx, "--workers", "0",
                           "--format", "csv", "-k", 3))
        expect_exit(run, Exit.OK)
        rows = list(csv.DictReader(io.StringIO(run.stdout, newline="")))
        assert len(rows) == len(paths), rows  # one row per match
        assert rows[0]["path"] == str(path) and rows[0]["query"] == str(path), rows[0]
        assert sorted(r["path"] for r in rows) == sorted(map(str, paths))


# --------------------------------------------------------------------------- 12. escapes


EVIL = "evil\x1b[31mred.jpg"
TITLE = "\x1b]0;title\x07.jpg"
BAD = "bad\x1b[2Jempty.jpg"


def _assert_no_raw_controls(text: str, *visible: str) -> None:
    assert not control_chars(text), f"raw control characters: {control_chars(text)}"
    for part in visible:
        assert part in text, f"{part!r} is not shown at all:\n{text}"


def test_escape_sequences_in_names_are_shown_escaped(cli, tiny_model, photos, tmp_path):
    """Messages (stderr) always escape a name; results on a pipe (CliRunner's stdout is one)
    carry it exactly. The terminal side is in test_cli_findings.py (a real pty)."""
    folder = tmp_path / "lib"
    evil = make_photo_like(folder / EVIL, seed=80)
    shutil.copyfile(evil, folder / TITLE)  # byte-identical: one duplicate group
    make_photo_like(folder / "plain.jpg", seed=81)
    (folder / BAD).write_bytes(b"")  # fails: listed on stderr
    idx = tmp_path / "idx"

    indexed = _index(cli, folder, idx)
    assert _partial(indexed)["failed_by_reason"] == {"empty": 1}
    _assert_no_raw_controls(indexed.stderr, "empty.jpg")

    table = _checked(cli("search", evil, "--index-dir", idx, "--workers", "0"))
    expect_exit(table, Exit.OK)
    assert EVIL in table.stdout and TITLE in table.stdout and "plain.jpg" in table.stdout
    _assert_no_raw_controls(table.stderr)

    dupes = _checked(cli("dupes", "--index-dir", idx))
    expect_exit(dupes, Exit.OK)
    assert EVIL in dupes.stdout and TITLE in dupes.stdout

    failed = _checked(cli("search", folder / BAD, "--index-dir", idx, "--workers", "0"))
    expect_exit(failed, Exit.PARTIAL)
    _assert_no_raw_controls(failed.stderr, "empty.jpg")


# --------------------------------------------------------------------------- 13. file modes


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_index_files_and_reports_are_world_readable_under_umask_022(cli, tiny_model, photos,
                                                                    tmp_path):
    old = os.umask(0o022)
    try:
        idx = tmp_path / "idx"
        _ok(_index(cli, photos, idx))
        folder = idx / "default"
        files = [folder / "manifest.json", _one(folder, "faiss-*.bin"),
                 _one(folder, "catalog-*.sqlite")]
        report = tmp_path / "out" / "report.html"
        run = _checked(cli("search", photos / "img_00.jpg", "--index-dir", idx,
                           "--workers", "0", "--html", report))
        expect_exit(run, Exit.OK)
        files += [report, *sorted(report.with_name("report_files").iterdir())]
        modes = {p.name: _mode(p) for p in files}
        assert modes == dict.fromkeys(modes, "0o644")
        assert _mode(folder) == "0o755"
    finally:
        os.umask(old)


# --------------------------------------------------------------------------- 14. bad file names


def test_non_utf8_file_name_fails_once_then_still_fails(cli, tiny_model, photos, tmp_path):
    with open(os.fsencode(photos) + b"/caf\xe9.jpg", "wb") as f:
        f.write(_jpeg_bytes(seed=88))
    idx = tmp_path / "idx"

    first = _partial(_index(cli, photos, idx))
    assert first["failed_by_reason"] == {"bad-filename": 1}
    assert first["added"] == N_PHOTOS

    second = _ok(_index(cli, photos, idx))  # recorded: not reported as new every night
    assert second["failed"] == 0 and second["still_failing"] >= 1
    assert second["unchanged"] == N_PHOTOS


# --------------------------------------------------------------------------- 15. progress


def test_search_over_many_queries_shows_progress(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))

    run = _checked(cli("search", photos, "--index-dir", idx, "--workers", "0"))
    expect_exit(run, Exit.OK)
    progress = [line for line in run.stderr.splitlines() if "queries" in line]
    assert any(f"{N_PHOTOS}/{N_PHOTOS}" in line for line in progress), run.stderr

    quiet = _checked(cli("search", photos, "--index-dir", idx, "--workers", "0", "--quiet"))
    expect_exit(quiet, Exit.OK)
    assert "queries" not in quiet.stderr, quiet.stderr


# --------------------------------------------------------------------------- 16. symlinks


def _linked_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """root/ with a.jpg, linked/ -> ../elsewhere (far.jpg), and file-link.jpg -> a file
    outside. Returns root and the names far.jpg and the file link are indexed under."""
    outside = tmp_path / "elsewhere"
    make_photo_like(outside / "far.jpg", seed=70)
    single = make_photo_like(tmp_path / "single.jpg", seed=72)
    root = tmp_path / "root"
    make_photo_like(root / "a.jpg", seed=71)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "file-link.jpg").symlink_to(single)
    return root, root / "linked" / "far.jpg", root / "file-link.jpg"


def _indexed_paths(cli: Cli, idx: Path, query: Path) -> set[str]:
    run = _search(cli, query, idx=idx, k=10)
    expect_exit(run, Exit.OK)
    (result,) = run.json()["queries"]
    return {m["path"] for m in result["matches"]}


def test_symlinked_folders_outside_the_root_are_followed_by_default(cli, tiny_model, tmp_path):
    root, far, file_link = _linked_tree(tmp_path)
    idx = tmp_path / "idx"
    assert _ok(_index(cli, root, idx))["added"] == 3
    assert _indexed_paths(cli, idx, root / "a.jpg") == {str(root / "a.jpg"), str(far),
                                                       str(file_link)}


def test_no_follow_links_skips_symlinked_folders_keeps_symlinked_files(cli, tiny_model,
                                                                      tmp_path):
    root, _, file_link = _linked_tree(tmp_path)
    idx = tmp_path / "idx"
    summary = _ok(_index(cli, root, idx, "--no-follow-links"))
    assert summary["added"] == 2 and summary["failed"] == 0
    assert _indexed_paths(cli, idx, root / "a.jpg") == {str(root / "a.jpg"), str(file_link)}


def test_the_guard_counts_what_files_under_holds(tmp_path):
    # The mass-delete guard counts in sqlite; it must count exactly files_under's rows: the
    # root itself and below it, not a sibling whose name only starts the same.
    from deepvision.store.catalog import Catalog

    catalog = Catalog(tmp_path / "catalog.sqlite")
    for i, path in enumerate(("/p/a.jpg", "/p/sub/b.jpg", "/p", "/p2/c.jpg", "/p-x/d.jpg",
                              "/q/e.jpg")):
        catalog.upsert_file(path, 1, 1, f"h{i}", None)
    for root in ("/p", "/p/", "/p/sub", "/p2", "/q", "/r"):
        assert catalog.count_under(root) == len(catalog.files_under(root)), root
    assert catalog.count_under("/p") == 3
