"""`dupes apply` / `dupes undo` (#27) with real files and real processes: every action, then
undo, gives a byte-identical tree; kill -9 at random points of apply, then undo or a rerun,
loses no file and leaves the catalog consistent; an edited file is skipped; hardlinks do not
cross filesystems. The index is built in-process with the stub model; apply needs no model."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from review_helpers import (
    THRESHOLD,
    catalog_problems,
    deepvision,
    index,
    indexed,
    make_groups,
    process_env,
    spawn,
    tree,
)

from deepvision.errors import ExitCode

ACTIONS = ["trash", "move-to", "hardlink", "symlink", "delete"]


def _action_args(action: str, moved: Path) -> list[object]:
    return ["--action", action, *([moved] if action == "move-to" else [])]


def _apply(env, idx: Path, action: str, moved: Path, *extra: object):
    return deepvision(env, "dupes", "apply", *_action_args(action, moved), "--keep", "largest",
                      "--index-dir", idx, "--threshold", THRESHOLD, *extra)


def _groups(env, idx: Path) -> list[dict]:
    done = deepvision(env, "dupes", "--index-dir", idx, "--format", "json", "--threshold",
                      THRESHOLD)
    assert done.exit_code == 0, done.stderr
    return done.json()["groups"]


@pytest.mark.parametrize("action", ACTIONS)
def test_apply_each_action_then_undo_gives_a_byte_identical_tree(cli, tiny_model, tmp_path,
                                                                  action):
    folder, idx, moved = tmp_path / "photos", tmp_path / "idx", tmp_path / "moved"
    make_groups(folder, 3)
    index(cli, folder, idx)
    env = process_env(tmp_path / "home")
    before = tree(folder)

    dry = _apply(env, idx, action, moved, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert tree(folder) == before and "dry run: 6 file(s) would be changed" in dry.stdout

    done = _apply(env, idx, action, moved, "--json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["done"] == 6 and report["decided"] == 3
    after = tree(folder)
    for k in range(3):  # every keeper is there, untouched
        keeper = str(folder / f"a{k:03d}.png")
        assert after[keeper] == before[keeper]
    removed = {s["path"] for s in report["steps"]}
    if action in ("hardlink", "symlink"):
        assert all(os.path.exists(p) for p in removed)
        assert all(os.path.islink(p) == (action == "symlink") for p in removed)
        assert removed <= indexed(idx)  # a linked file keeps its place (and vector)
    else:
        assert not any(os.path.lexists(p) for p in removed)
        assert not removed & indexed(idx)
    assert catalog_problems(idx) == []
    assert _groups(env, idx) == []  # a second `dupes`: nothing resolved comes back
    again = _apply(env, idx, action, moved, "--json")  # nothing left to do, nothing skipped
    assert again.exit_code == 0 and json.loads(again.stdout)["steps"] == []

    undone = deepvision(env, "dupes", "undo", "--index-dir", idx)
    assert undone.exit_code == 0, undone.stderr + undone.stdout
    assert tree(folder) == before
    assert catalog_problems(idx) == []
    if action == "trash":  # the trash is empty again, info files too
        trash = tmp_path / "home" / ".local" / "share" / "Trash"
        assert not any((trash / "files").iterdir()) and not any((trash / "info").iterdir())


def test_a_file_edited_between_decision_and_apply_is_skipped(cli, tiny_model, tmp_path):
    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 2)
    index(cli, folder, idx)
    env = process_env(tmp_path / "home")
    groups = _groups(env, idx)
    for g in groups:
        decided = cli("dupes", "decide", g["id"], "--keep", g["keeper"], "--index-dir", idx,
                      "--threshold", THRESHOLD)
        assert decided.exit_code == 0, decided.stderr
    edited = folder / "a000_copy.png"
    with open(edited, "ab") as f:
        f.write(b"edited after the review")
    expected = edited.read_bytes()
    done = deepvision(env, "dupes", "apply", "--action", "delete", "--index-dir", idx)
    assert done.exit_code == ExitCode.PARTIAL
    assert f"skipped: {edited}: changed since it was indexed" in done.stdout
    assert edited.read_bytes() == expected
    assert not (folder / "a001_copy.png").exists()  # the other group went ahead


@pytest.mark.slow
def test_kill_9_at_random_points_of_apply_then_undo_or_rerun_loses_nothing(cli, tiny_model,
                                                                          tmp_path):
    rng = random.Random(27)
    folder, idx, moved = tmp_path / "photos", tmp_path / "idx", tmp_path / "moved"
    make_groups(folder, 40, solos=0)
    index(cli, folder, idx)
    env = process_env(tmp_path / "home")
    pristine = tree(folder)
    journals = idx / "default" / "journals"
    interrupted = 0
    for run in range(10):  # every action, each once undone at once and once rerun first
        action = ACTIONS[run // 2]
        old = set(journals.glob("apply-*.jsonl"))
        proc = spawn(env, "dupes", "apply", *_action_args(action, moved), "--keep", "largest",
                     "--index-dir", idx, "--threshold", THRESHOLD)
        killed = _kill_after(proc, journals, old, rng.randint(1, 70))
        interrupted += killed
        if run % 2 == 0:  # undo straight away
            done = deepvision(env, "dupes", "undo", "--index-dir", idx)
            assert done.exit_code == 0, done.stderr + done.stdout
        else:  # a rerun completes it, then undo
            done = _apply(env, idx, action, moved)
            assert done.exit_code == 0, done.stderr + done.stdout
            assert "completed interrupted journal" in done.stdout or not killed
            for _ in journals.glob("apply-*.jsonl"):
                if deepvision(env, "dupes", "undo", "--index-dir", idx).stdout.startswith(
                        "restored 0"):
                    break
        assert tree(folder) == pristine, f"run {run} ({action})"
        assert catalog_problems(idx) == [], f"run {run} ({action})"
        index(cli, folder, idx)  # what undo could not put back in the catalog is embedded again
        _forget_decisions(cli, idx)
    assert interrupted >= 6  # most kills landed in the middle of an apply


def _kill_after(proc, journals: Path, old: set[Path], steps: int) -> bool:
    """SIGKILL once the run's journal has `steps` begun steps; True if it was still running."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        newest = sorted(set(journals.glob("apply-*.jsonl")) - old)[-1:] \
            if journals.is_dir() else []
        if newest and newest[0].read_bytes().count(b'"begun"') >= steps:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.wait()
    return False


def _forget_decisions(cli, idx: Path) -> None:
    while "no decision" not in cli("dupes", "undo", "--decision", "--index-dir", idx).stdout:
        pass


def test_hardlinks_across_filesystems_are_refused(cli, tiny_model, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 1, solos=0)
    far = Path(os.path.realpath(shm)) / f"dv-review-{os.getpid()}"
    far.mkdir()
    try:
        shutil.move(folder / "a000_copy.png", far / "a000_copy.png")
        index(cli, folder, idx)
        assert cli("index", far, "--index-dir", idx, "--workers", "0", "--quiet").exit_code == 0
        before = tree(folder, far)
        env = process_env(tmp_path / "home")
        done = _apply(env, idx, "hardlink", tmp_path)
        assert done.exit_code == ExitCode.USAGE
        assert "different filesystems" in done.stderr and "no file was changed" in done.stderr
        assert tree(folder, far) == before
    finally:
        for p in far.iterdir():
            p.unlink()
        far.rmdir()


def test_a_move_killed_between_copy_and_unlink_is_completed_or_undone(tmp_path):
    """Across filesystems a move is copy, then unlink; a kill between leaves both files."""
    import xxhash

    from deepvision.services import fileops
    from deepvision.services.journal import Journal, Step

    src, dest = tmp_path / "a" / "x.png", tmp_path / "moved" / "a" / "x.png"
    src.parent.mkdir()
    src.write_bytes(b"picture bytes")
    st = src.stat()
    step = Step(0, "g", str(src), xxhash.xxh3_128(src.read_bytes()).hexdigest(), st.st_size,
                st.st_mtime_ns, st.st_mode, str(tmp_path / "keeper.png"), "k", str(dest))
    j = Journal(tmp_path / "apply-x.jsonl", "move-to", str(tmp_path / "moved"), [step], {}, {})
    for finish in (True, False):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)  # where the kill struck
        if finish:  # a rerun completes the move
            assert fileops.do(j, step) == str(dest)
            assert not src.exists() and dest.read_bytes() == b"picture bytes"
            assert fileops.undo(j, step) and src.read_bytes() == b"picture bytes"
        else:  # undo removes the finished copy and keeps the original
            assert fileops.undo(j, step) is False
            assert src.read_bytes() == b"picture bytes" and not dest.exists()


def test_a_journal_torn_by_a_power_cut_still_loads(tmp_path):
    from deepvision.services import journal

    step = journal.Step(0, "g", "/a/x.png", "h", 1, 2, 0o100644, "/a/k.png", "h")
    path = tmp_path / "journals" / "apply-1.jsonl"
    j = journal.create(path, "delete", None, [step])
    j.mark(step, journal.BEGUN)
    with open(path, "ab") as f:
        f.write(b'{"i": 0, "state": "do')  # the last line half written
    again = journal.load(path)
    assert again.state(0) == journal.BEGUN and again.whole is None
    assert [j.name for j in journal.unfinished(tmp_path)] == ["apply-1.jsonl"]


def test_move_to_needs_its_folder_and_only_it(cli, tiny_model, tmp_path):
    folder, idx = tmp_path / "photos", tmp_path / "idx"
    make_groups(folder, 1, solos=0)
    index(cli, folder, idx)
    for args in (["--action", "move-to"], ["--action", "trash", tmp_path], ["--action", "shred"]):
        done = cli("dupes", "apply", *args, "--index-dir", idx)
        assert done.exit_code == ExitCode.USAGE, done.stdout
