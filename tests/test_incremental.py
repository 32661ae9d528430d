"""Nightly re-indexing: a rerun does only the work that changes on disk require.

Everything runs in-process with the stub "tiny" backbone (conftest), so each test takes about a
second; the real-process crash and lock behaviour lives in test_crash_and_lock.py.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import no_model
from imagefactory import (
    AVIF_SUPPORTED,
    make_exif_rotated_pair,
    make_good_set,
    make_photo_like,
    non_image_files,
    photo_like_image,
)
from PIL import Image

from deepvision.errors import ExitCode
from deepvision.pipeline.hashing import hash_files

N_PHOTOS = 12  # the `photos` fixture


# --------------------------------------------------------------------------- helpers


def _index(cli, folder: Path, idx: Path, *extra: object):
    return cli("index", folder, "--index-dir", idx, "--model", "tiny", "--workers", "0",
               "--json", *extra)


def _ok(run) -> dict:
    assert run.exit_code == 0, run.stderr
    return run.json()


def _partial(run) -> dict:
    assert run.exit_code == ExitCode.PARTIAL, run.stderr
    return run.json()


def _matches(cli, query: Path, idx: Path, k: int = 5, *flags: str) -> list[dict]:
    run = cli("search", query, "--index-dir", idx, "--workers", "0", "--format", "json",
              "-k", k, *flags)
    assert run.exit_code == 0, run.stderr
    (result,) = run.json()["queries"]
    assert result["error"] is None
    return result["matches"]


def _paths(matches: list[dict]) -> list[str]:
    return [m["path"] for m in matches]


def _info(cli, idx: Path) -> dict:
    run = cli("info", "--index-dir", idx, "--json", "--failed")
    assert run.exit_code == 0, run.stderr
    return run.json()


def _bump_mtime(path: Path, seconds: int = 10) -> None:
    """Move mtime clearly forward: a rewrite within the same clock tick must still count."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def _counts(summary: dict) -> dict[str, int]:
    keys = ("added", "updated", "renamed", "removed", "unchanged", "embedded", "failed",
            "still_failing")
    return {k: summary[k] for k in keys}


def _jpeg_bytes(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    buf = io.BytesIO()
    photo_like_image(seed, size).save(buf, "JPEG", quality=92)
    return buf.getvalue()


ZERO = dict.fromkeys(("added", "updated", "renamed", "removed", "unchanged", "embedded",
                      "failed", "still_failing"), 0)


# --------------------------------------------------------------------------- no changes


def test_rerun_without_changes_does_no_model_work(cli, tiny_model, photos, tmp_path,
                                                  sync):
    idx = tmp_path / "idx"
    first = _ok(_index(cli, photos, idx))
    assert _counts(first) == {**ZERO, "added": N_PHOTOS, "embedded": N_PHOTOS}
    assert first["device"] == "cpu" and first["model"] == "tiny"
    assert first["total_files"] == N_PHOTOS

    second = sync(photos, idx, embedders=no_model)
    assert _counts(second) == {**ZERO, "unchanged": N_PHOTOS}
    assert second["device"] is None  # JSON null: the model was never loaded
    assert second["failures"] == [] and second["failed_by_reason"] == {}
    assert second["total_files"] == N_PHOTOS
    assert second["images_per_second"] == 0


# --------------------------------------------------------------------------- additions


def test_new_files_are_added_and_embedded(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    new = [make_photo_like(photos / "new_a.png", seed=500),
           make_photo_like(photos / "deeper" / "new_b.jpg", seed=501)]

    run = _ok(_index(cli, photos, idx))
    assert _counts(run) == {**ZERO, "added": 2, "embedded": 2, "unchanged": N_PHOTOS}
    assert run["device"] == "cpu" and run["total_files"] == N_PHOTOS + 2
    for path in new:
        top = _matches(cli, path, idx, k=1)[0]
        assert top["path"] == str(path) and top["score"] == pytest.approx(1.0, abs=1e-4)


# --------------------------------------------------------------------------- changes


def test_changed_content_is_reembedded_and_the_old_vector_dropped(cli, tiny_model, photos,
                                                                  tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    target = photos / "img_03.bmp"
    old_copy = shutil.copy(target, tmp_path / "old_content.bmp")
    size_before = target.stat().st_size
    make_photo_like(target, seed=503)  # same size and format: only content and mtime differ
    _bump_mtime(target)
    assert target.stat().st_size == size_before  # so the mtime is what gives the change away
    new_copy = shutil.copy(target, tmp_path / "new_content.bmp")

    run = _ok(_index(cli, photos, idx))
    assert _counts(run) == {**ZERO, "updated": 1, "embedded": 1, "unchanged": N_PHOTOS - 1}
    assert run["total_files"] == N_PHOTOS

    top = _matches(cli, Path(new_copy), idx, k=1)[0]
    assert top["path"] == str(target) and top["score"] == pytest.approx(1.0, abs=1e-4)
    # Nothing holds the old content any more: no perfect match, and not from the changed file.
    old_hits = _matches(cli, Path(old_copy), idx, k=N_PHOTOS)
    assert all(m["score"] < 0.999 for m in old_hits), old_hits
    assert old_hits[0]["path"] != str(target)
    info = _info(cli, idx)
    assert info["files"] == N_PHOTOS and info["vectors"] == N_PHOTOS  # the old vector is gone


def test_touched_but_identical_file_is_not_reembedded(cli, tiny_model, photos, tmp_path,
                                                     sync):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    touched = [photos / "img_00.jpg", photos / "img_07.png", photos / "img_11.tiff"]
    for path in touched:
        _bump_mtime(path)

    run = sync(photos, idx, embedders=no_model)
    assert _counts(run) == {**ZERO, "unchanged": N_PHOTOS}
    assert run["device"] is None and run["total_files"] == N_PHOTOS

    # The catalog took the new mtimes, so the next run does not even hash them again.
    hashed: list[str] = []

    def counting(files):
        hashed.extend(f.path for f in files)
        return hash_files(files)

    again = sync(photos, idx, hasher=counting, embedders=no_model)
    assert _counts(again) == {**ZERO, "unchanged": N_PHOTOS}
    assert hashed == []
    assert _matches(cli, touched[0], idx, k=1)[0]["path"] == str(touched[0])


# --------------------------------------------------------------------------- deletions


def test_deleted_files_are_removed(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    gone = [photos / "img_02.webp", photos / "img_09.bmp"]
    copies = [Path(shutil.copy(p, tmp_path / f"copy_of_{p.name}")) for p in gone]
    for path in gone:
        path.unlink()

    run = _ok(_index(cli, photos, idx))
    assert _counts(run) == {**ZERO, "removed": 2, "unchanged": N_PHOTOS - 2}
    assert run["total_files"] == N_PHOTOS - 2
    for copy, path in zip(copies, gone, strict=True):
        hits = _matches(cli, copy, idx, k=N_PHOTOS)
        assert str(path) not in _paths(hits)
        assert len(hits) == N_PHOTOS - 2
        assert hits[0]["score"] < 0.999
    info = _info(cli, idx)
    assert info["files"] == N_PHOTOS - 2 and info["vectors"] == N_PHOTOS - 2


# --------------------------------------------------------------------------- renames / duplicates


def test_renamed_file_keeps_its_vector_under_the_new_path(cli, tiny_model, photos, tmp_path,
                                                         sync):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    old = photos / "img_05.tiff"
    new = photos / "sub" / "moved here.tiff"
    new.parent.mkdir()
    os.rename(old, new)

    run = sync(photos, idx, embedders=no_model)
    assert _counts(run) == {**ZERO, "renamed": 1, "unchanged": N_PHOTOS - 1}
    assert run["device"] is None and run["total_files"] == N_PHOTOS

    hits = _matches(cli, new, idx, k=N_PHOTOS)
    assert hits[0]["path"] == str(new) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert str(old) not in _paths(hits)
    assert _info(cli, idx)["vectors"] == N_PHOTOS


def test_byte_identical_duplicates_share_one_vector(cli, tiny_model, tmp_path, sync):
    folder = tmp_path / "dups"
    distinct = [make_photo_like(folder / f"p{i}.png", seed=i) for i in range(4)]
    twin = folder / "z_sub" / "twin of p1.png"
    twin.parent.mkdir()
    shutil.copyfile(distinct[1], twin)
    idx = tmp_path / "idx"

    run = _ok(_index(cli, folder, idx))
    assert run["embedded"] == 4  # one per distinct content, not per file
    assert run["added"] == 5 and run["total_files"] == 5
    info = _info(cli, idx)
    assert info["files"] == 5 and info["vectors"] == 4

    hits = _matches(cli, distinct[1], idx, k=3)
    assert [m["rank"] for m in hits] == [1, 2, 3]
    assert sorted(_paths(hits[:2])) == sorted([str(distinct[1]), str(twin)])
    assert hits[0]["score"] == hits[1]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[2]["score"] < hits[1]["score"]

    # A third copy arriving later needs no model work either.
    third = Path(shutil.copy(distinct[1], folder / "third.png"))
    again = sync(folder, idx, embedders=no_model)
    assert _counts(again) == {**ZERO, "added": 1, "unchanged": 5}
    assert again["device"] is None

    # Deleting one copy keeps the shared vector for the others.
    twin.unlink()
    after = sync(folder, idx, embedders=no_model)
    assert _counts(after) == {**ZERO, "removed": 1, "unchanged": 5}
    hits = _matches(cli, distinct[1], idx, k=2)
    assert sorted(_paths(hits)) == sorted([str(distinct[1]), str(third)])
    assert _info(cli, idx)["vectors"] == 4


# --------------------------------------------------------------------------- failures


def test_failing_file_is_recorded_and_not_retried(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    bad = photos / "x.jpg"
    bad.write_text("this is not a JPEG\n", encoding="utf-8")

    first = _partial(_index(cli, photos, idx))
    assert first["failed"] == 1 and first["failed_by_reason"] == {"not-an-image": 1}
    (failure,) = first["failures"]
    assert failure["path"] == str(bad) and failure["reason"] == "not-an-image"
    assert failure["message"]
    assert first["total_files"] == N_PHOTOS and first["added"] == N_PHOTOS

    second = _ok(_index(cli, photos, idx))  # recorded: not reported again, exit 0
    assert _counts(second) == {**ZERO, "unchanged": N_PHOTOS, "still_failing": 1}
    assert second["failures"] == [] and second["device"] is None

    retried = _partial(_index(cli, photos, idx, "--retry-failed"))
    assert retried["failed"] == 1 and retried["still_failing"] == 0
    assert retried["failures"][0]["path"] == str(bad)
    assert _info(cli, idx)["failed"] == 1

    # Fixed: a real image now. It is picked up without --retry-failed, and no longer failing.
    bad.write_bytes(_jpeg_bytes(seed=321))
    _bump_mtime(bad)
    fixed = _ok(_index(cli, photos, idx))
    assert fixed["embedded"] == 1 and fixed["failed"] == 0 and fixed["still_failing"] == 0
    assert fixed["unchanged"] == N_PHOTOS and fixed["removed"] == 0
    assert fixed["total_files"] == N_PHOTOS + 1
    assert _matches(cli, bad, idx, k=1)[0]["path"] == str(bad)
    info = _info(cli, idx)
    assert info["failed"] == 0 and info["failures"] == [] and info["files"] == N_PHOTOS + 1


def _write_half_jpeg(path: Path, data: bytes) -> None:
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["text-file-fixed", "half-written-file-completed",
                                 "replaced-by-a-copy-of-an-indexed-image"])
def test_a_previously_failing_file_counts_as_added_once_it_works(cli, tiny_model, photos,
                                                                 tmp_path, how):
    idx = tmp_path / "idx"
    path = photos / "late.jpg"
    data = _jpeg_bytes(seed=654)
    if how == "half-written-file-completed":
        _write_half_jpeg(path, data)
    else:
        path.write_text("not yet\n", encoding="utf-8")
    assert _partial(_index(cli, photos, idx))["failed"] == 1
    if how == "replaced-by-a-copy-of-an-indexed-image":  # known content: linked, not embedded
        data = (photos / "img_00.jpg").read_bytes()
    path.write_bytes(data)
    _bump_mtime(path)
    run = _ok(_index(cli, photos, idx))
    assert run["total_files"] == N_PHOTOS + 1
    assert run["embedded"] == (0 if how.startswith("replaced") else 1)
    assert (run["added"], run["updated"]) == (1, 0)


def test_file_being_written_while_indexed_is_picked_up_once_complete(cli, tiny_model, photos,
                                                                     tmp_path):
    idx = tmp_path / "idx"
    path = photos / "incoming.jpg"
    data = _jpeg_bytes(seed=777, size=(128, 96))
    _write_half_jpeg(path, data)  # the copy is half done when the nightly run starts

    first = _partial(_index(cli, photos, idx))
    assert first["failed_by_reason"] == {"truncated": 1}
    assert first["failures"][0]["path"] == str(path)
    assert first["total_files"] == N_PHOTOS

    path.write_bytes(data)  # the copy finishes
    _bump_mtime(path)
    second = _ok(_index(cli, photos, idx))
    assert second["embedded"] == 1 and second["failed"] == 0 and second["still_failing"] == 0
    assert second["total_files"] == N_PHOTOS + 1
    full_copy = tmp_path / "incoming copy.jpg"
    full_copy.write_bytes(data)
    top = _matches(cli, full_copy, idx, k=1)[0]
    assert top["path"] == str(path) and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert _info(cli, idx)["failed"] == 0



def test_indexed_file_that_gets_corrupted_leaves_the_index(cli, tiny_model, photos, tmp_path):
    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    target = photos / "img_01.png"
    old_copy = Path(shutil.copy(target, tmp_path / "before corruption.png"))
    _write_half_jpeg(target, target.read_bytes())  # half of the PNG: truncated
    _bump_mtime(target)

    run = _partial(_index(cli, photos, idx))
    assert run["failed_by_reason"] == {"truncated": 1}
    assert run["failures"][0]["path"] == str(target)
    assert run["unchanged"] == N_PHOTOS - 1 and run["total_files"] == N_PHOTOS - 1
    assert str(target) not in _paths(_matches(cli, old_copy, idx, k=N_PHOTOS))
    info = _info(cli, idx)
    assert info["failed"] == 1 and info["vectors"] == N_PHOTOS - 1  # its old vector is dropped

    again = _ok(_index(cli, photos, idx))  # recorded: not reported again
    assert again["still_failing"] == 1 and again["failed"] == 0

@pytest.mark.parametrize("when", ["before-hashing", "before-decoding"])
def test_file_vanishing_mid_run_is_reported_and_the_rest_indexed(cli, sync, photos, tmp_path,
                                                                 when):
    victim = photos / "img_04.gif"

    def vanishing(files):  # discovery saw it; it goes before it is hashed, or after
        if when == "before-hashing":
            victim.unlink(missing_ok=True)
        hashed = hash_files(files)
        victim.unlink(missing_ok=True)
        return hashed

    idx = tmp_path / "idx"
    run = sync(photos, idx, hasher=vanishing)
    assert run["failed"] == 1 and run["failed_by_reason"] == {"vanished": 1}
    assert run["failures"][0]["path"] == str(victim)
    assert run["added"] == N_PHOTOS - 1 and run["embedded"] == N_PHOTOS - 1
    assert run["total_files"] == N_PHOTOS - 1
    for path in sorted(photos.iterdir())[:3]:
        assert _matches(cli, path, idx, k=1)[0]["path"] == str(path)

    again = _ok(_index(cli, photos, idx))  # nothing was recorded for it: nothing to remove
    assert _counts(again) == {**ZERO, "unchanged": N_PHOTOS - 1}
    assert again["total_files"] == N_PHOTOS - 1


# --------------------------------------------------------------------------- filters


def test_include_and_exclude_globs_relative_to_the_folder(cli, tiny_model, tmp_path):
    folder = tmp_path / "lib"
    files = {
        "a.png": make_photo_like(folder / "a.png", seed=1),
        "b.jpg": make_photo_like(folder / "b.jpg", seed=2),
        "sub/c.png": make_photo_like(folder / "sub" / "c.png", seed=3),
        "skip/d.png": make_photo_like(folder / "skip" / "d.png", seed=4),
        "skip/e.jpg": make_photo_like(folder / "skip" / "e.jpg", seed=5),
    }

    one = tmp_path / "idx1"
    run = _ok(_index(cli, folder, one, "--include", "*.png", "--exclude", "skip/*"))
    assert run["added"] == 2 and run["total_files"] == 2
    assert sorted(_paths(_matches(cli, files["a.png"], one, k=10))) == sorted(
        [str(files["a.png"]), str(files["sub/c.png"])])

    two = tmp_path / "idx2"
    run = _ok(_index(cli, folder, two, "--include", "*.png", "--include", "*.jpg",
                     "--exclude", "skip/d.*"))
    assert run["added"] == 4
    assert str(files["skip/d.png"]) not in _paths(_matches(cli, files["a.png"], two, k=10))

    three = tmp_path / "idx3"
    _ok(_index(cli, folder, three, "--exclude", "sub/*", "--exclude", "*.jpg"))
    assert sorted(_paths(_matches(cli, files["a.png"], three, k=10))) == sorted(
        [str(files["a.png"]), str(files["skip/d.png"])])


def test_hidden_files_and_folders_only_with_hidden(cli, tiny_model, tmp_path):
    folder = tmp_path / "lib"
    photo = make_photo_like(folder / "visible.jpg", seed=1)
    _, _, hidden_file, hidden_dir_file = non_image_files(folder)  # + README.txt, data.csv

    plain = tmp_path / "idx1"
    run = _ok(_index(cli, folder, plain))
    assert run["added"] == 1 and run["total_files"] == 1 and run["failed"] == 0
    assert run["ignored"] == 2  # README.txt and data.csv: seen, silently not indexed
    assert _paths(_matches(cli, photo, plain, k=10)) == [str(photo)]

    with_hidden = tmp_path / "idx2"
    run = _ok(_index(cli, folder, with_hidden, "--hidden"))
    assert run["added"] == 3 and run["total_files"] == 3
    assert sorted(_paths(_matches(cli, photo, with_hidden, k=10))) == sorted(
        [str(photo), str(hidden_file), str(hidden_dir_file)])


# --------------------------------------------------------------------------- file names


AWKWARD_NAMES = [
    "café ñ 東京.png",
    "two  spaces and trailing .jpg",
    "new\nline.png",
    "tab\there.webp",
    "quotes \"double\" 'single' $HOME;.bmp",
    "emoji 📷.jpg",
    "-starts-with-dash.png",
]


def test_unicode_spaces_and_newlines_in_names_round_trip(cli, tiny_model, tmp_path):
    folder = tmp_path / "names ü"
    paths = [make_photo_like(folder / name, seed=40 + i) for i, name in enumerate(AWKWARD_NAMES)]
    idx = tmp_path / "idx"
    run = _ok(_index(cli, folder, idx))
    assert run["added"] == len(paths) and run["failed"] == 0

    for path in paths:
        top = _matches(cli, path, idx, k=1)[0]
        assert top["path"] == str(path)  # exact string, newline and all, through JSON
        assert top["score"] == pytest.approx(1.0, abs=1e-4)

    # The whole folder as a query: every name comes back as its own query and its own match.
    doc = cli("search", folder, "--index-dir", idx, "--workers", "0", "--format", "json",
              "-k", 1).json()
    assert sorted(q["query"] for q in doc["queries"]) == sorted(map(str, paths))
    assert all(q["matches"][0]["path"] == q["query"] for q in doc["queries"])

    # A rerun recognises every one of them (path keys survive the catalog round trip).
    again = _ok(_index(cli, folder, idx))
    assert again["unchanged"] == len(paths) and again["embedded"] == 0


# --------------------------------------------------------------------------- decoding


def test_exif_rotated_jpeg_matches_its_upright_copy(cli, tiny_model, photos, tmp_path):
    pair = tmp_path / "pair"
    upright, rotated = make_exif_rotated_pair(pair)
    indexed_upright = Path(shutil.copy(upright, photos / "upright.jpg"))
    # Control: the same stored pixels without the EXIF tag, i.e. what a decoder that ignores
    # EXIF would see. If that also matched, the test would prove nothing.
    with Image.open(rotated) as im:
        stored = np.asarray(im)
    ignored = tmp_path / "control" / "rotated_no_exif.png"
    ignored.parent.mkdir()
    Image.fromarray(stored).save(ignored)
    assert Image.open(ignored).size == (64, 96)  # portrait: really not upright

    idx = tmp_path / "idx"
    _ok(_index(cli, photos, idx))
    top = _matches(cli, rotated, idx, k=1)[0]
    assert top["path"] == str(indexed_upright) and top["score"] > 0.99
    # Without query-time turns: those would find the turned pixels too (a different feature).
    control = {m["path"]: m["score"]
               for m in _matches(cli, ignored, idx, N_PHOTOS + 1, "--no-turns")}
    assert control.get(str(indexed_upright), -1.0) < 0.99

    # Indexed the other way round: the rotated file is found by the upright query.
    idx2 = tmp_path / "idx2"
    _ok(_index(cli, pair, idx2))
    hits = _matches(cli, upright, idx2, k=2)
    assert hits[1]["path"] == str(rotated) and hits[1]["score"] > 0.99


def test_tricky_but_valid_formats_are_all_indexed(cli, tiny_model, tmp_path):
    folder = tmp_path / "good"
    paths = make_good_set(folder, 2)
    names = {p.name for p in paths}
    expected = {"cmyk.JPG", "grey16.png", "animated.gif", "photo.heic"}
    if AVIF_SUPPORTED:
        expected.add("photo.avif")
    assert expected <= names

    idx = tmp_path / "idx"
    run = _ok(_index(cli, folder, idx))
    assert run["failed"] == 0 and run["failures"] == []
    assert run["added"] == len(paths) and run["embedded"] == len(paths)
    assert run["total_files"] == len(paths)

    doc = cli("search", folder, "--index-dir", idx, "--workers", "0", "--format", "json",
              "-k", 1).json()
    by_name = {Path(q["query"]).name: q for q in doc["queries"]}
    assert set(by_name) == names
    for name in expected:
        q = by_name[name]
        assert q["error"] is None and q["matches"][0]["path"] == q["query"], name


# ----------------------------------------------------------------- regressions (once bugs)


def test_a_name_that_is_not_valid_utf8_does_not_abort_the_run(cli, tiny_model, photos,
                                                              tmp_path):
    raw = os.fsencode(photos) + b"/caf\xe9 latin-1.jpg"  # an old archive's Latin-1 name
    with open(raw, "wb") as f:
        f.write(_jpeg_bytes(seed=88))
    name = os.fsdecode(raw)  # what Python sees: a lone surrogate for the \xe9 byte
    idx = tmp_path / "idx"
    run = _index(cli, photos, idx)
    assert run.exit_code == ExitCode.PARTIAL, run.stderr  # done, one file skipped
    summary = run.json()
    assert summary["total_files"] == N_PHOTOS  # the indexed files: the bad name is not one
    assert [(f["path"], f["reason"]) for f in summary["failures"]] == [(name, "bad-filename")]
    assert summary["failed_by_reason"] == {"bad-filename": 1}
    assert _matches(cli, photos / "img_00.jpg", idx, k=1)[0]["path"] == str(photos / "img_00.jpg")


def test_rebuild_finds_a_recorded_folder_with_a_newline_in_its_name(cli, tiny_model, photos,
                                                                     tmp_path):
    folder = tmp_path / "new\nline folder"
    shutil.copytree(photos, folder)
    idx = tmp_path / "idx"
    _ok(_index(cli, folder, idx))
    assert _info(cli, idx)["folders"] == [str(folder)]
    run = cli("rebuild", "--index-dir", idx, "--model", "tiny", "--workers", "0", "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["total_files"] == N_PHOTOS


def test_rebuild_from_a_recorded_folder_that_is_gone_keeps_the_index(cli, tiny_model, photos,
                                                                      tmp_path):
    folder = tmp_path / "archive"
    shutil.copytree(photos, folder)
    idx = tmp_path / "idx"
    _ok(_index(cli, folder, idx))
    folder.rename(tmp_path / "archive-unmounted")
    run = cli("rebuild", "--index-dir", idx, "--model", "tiny", "--workers", "0", "--json")
    assert run.exit_code == ExitCode.USAGE, run.stderr
    assert "Traceback" not in run.stderr and str(folder) in run.stderr
    assert "is missing" in run.stderr and "deepvision rebuild DIR" in run.stderr
    assert _info(cli, idx)["files"] == N_PHOTOS  # the old index still answers


def test_commit_every_is_honoured_whatever_the_batch_size(sync, photos, tmp_path):
    """12 images, batches of 32, --commit-every 5: commits of 5, 5 and 2. Each commit that adds
    vectors moves the catalog generation on, and the FAISS file is named after it."""
    idx = tmp_path / "idx"
    run = sync(photos, idx, commit_every=5, batch_size=32)
    assert run["embedded"] == N_PHOTOS
    assert sorted(p.name for p in (idx / "default").glob("faiss-*.bin")) == ["faiss-3.bin"]
